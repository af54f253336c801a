//! Fan-out micro-benchmark: one publish routed to 10 k sessions through `Broker::route`, the
//! same call a publisher's connection makes: router lookup, one `Delivery` per session, a push
//! into each session's mailbox. No sockets: the sessions are opened on the broker directly and
//! their mailboxes are emptied between timed batches (that emptying is not timed).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use starling::broker::{Broker, SessionSlot};
use starling::codec::{QoS, SubscriptionOptions};
use starling::config::Limits;
use starling::message::{Delivery, Message};
use starling::session::Subscription;
use starling::topic::{TopicFilter, TopicName};

const SESSIONS: usize = 10_000;
/// Routes per timed batch: well under the mailboxes' default limit of 1,000 messages.
const BATCH: u64 = 100;

fn broker_with_sessions(qos: QoS) -> (Broker, Vec<Arc<SessionSlot>>) {
    let (timers, _) = tokio::sync::mpsc::unbounded_channel();
    let broker = Broker::new(Limits::default(), timers, None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let filter = TopicFilter::new("fan/out").expect("valid filter");
    let slots = runtime.block_on(async {
        let mut slots = Vec::with_capacity(SESSIONS);
        for i in 0..SESSIONS {
            let client: Arc<str> = format!("sub-{i}").into();
            let opened = broker.open_session(&client, true).await.expect("opens");
            let subscription = Subscription {
                filter: filter.clone(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
                id: None,
            };
            broker.subscribe(&opened.slot, &subscription, false);
            slots.push(opened.slot);
        }
        slots
    });
    (broker, slots)
}

fn bench_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements(SESSIONS as u64));
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let (broker, slots) = broker_with_sessions(qos);
        let message = Arc::new(Message {
            topic: TopicName::new("fan/out").expect("valid topic"),
            payload: Bytes::from(vec![0u8; 64]),
            qos,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            origin: None,
            published_at: None,
        });
        let mut drained: Vec<Delivery> = Vec::with_capacity(BATCH as usize);
        group.bench_function(format!("route_qos{}", qos.as_u8()), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    let start = Instant::now();
                    for _ in 0..n {
                        black_box(broker.route(message.clone()));
                    }
                    timed += start.elapsed();
                    for slot in &slots {
                        drained.clear();
                        slot.pop_batch(&mut drained, usize::MAX, usize::MAX);
                        debug_assert_eq!(
                            drained.len() as u64,
                            n,
                            "every session got every message"
                        );
                    }
                    left -= n;
                }
                timed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
