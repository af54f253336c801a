//! Topic matching micro-benchmarks through the router's public API: one lookup among 1 k and
//! 100 k subscriptions, exact filters (`dev/{i}/cmd`) and wildcard filters (`dev/{i}/+`, all
//! under one first level, the router's least favourable case). Each lookup matches exactly one
//! filter; successive lookups cycle through 1,024 different topics.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use starling::router::{SubscriberId, SubscriptionIndex};
use starling::topic::{TopicFilter, TopicName};

fn index(n: usize, filter: impl Fn(usize) -> String) -> SubscriptionIndex<u32> {
    let index = SubscriptionIndex::new();
    for i in 0..n {
        let f = TopicFilter::new(&filter(i)).expect("valid filter");
        index.subscribe(&f, SubscriberId(i as u64), i as u32);
    }
    index
}

fn topics(n: usize, topic: impl Fn(usize) -> String) -> Vec<TopicName> {
    // Spread over the whole index, not one corner of it.
    (0..1024)
        .map(|k| TopicName::new(&topic(k * 7919 % n)).expect("valid topic"))
        .collect()
}

fn bench_router(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    for n in [1_000, 100_000] {
        let label = if n >= 1000 {
            format!("{}k", n / 1000)
        } else {
            n.to_string()
        };
        for (kind, filter, topic) in [
            (
                "exact",
                (|i| format!("dev/{i}/cmd")) as fn(usize) -> String,
                (|i| format!("dev/{i}/cmd")) as fn(usize) -> String,
            ),
            (
                "wildcard",
                |i| format!("dev/{i}/+"),
                |i| format!("dev/{i}/telemetry"),
            ),
        ] {
            let index = index(n, filter);
            let topics = topics(n, topic);
            let mut k = 0usize;
            group.bench_function(format!("{kind}/{label}"), |b| {
                b.iter(|| {
                    k = (k + 1) % topics.len();
                    let mut matched = 0u32;
                    index.for_each_match(&topics[k], |_| matched += 1);
                    assert_eq!(matched, 1, "one filter matches each topic");
                    black_box(matched)
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_router);
criterion_main!(benches);
