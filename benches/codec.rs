//! Codec micro-benchmarks: decoding and encoding a PUBLISH at 16 B, 1 KiB and 64 KiB payloads.
//!
//! `decode` parses a whole frame from a read buffer (topic validated, payload sliced, not
//! copied); `encode` writes a whole frame (payload copied); `encode_header` is what fan-out does
//! per subscriber: the header alone, the payload going out as its own slice.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use starling::codec::{
    self, DecodeContext, Packet, PacketId, ProtocolVersion, Publish, PublishProperties,
    PublishView, QoS,
};
use starling::topic::TopicName;

const SIZES: [(&str, usize); 3] = [("16B", 16), ("1KiB", 1024), ("64KiB", 64 * 1024)];

fn publish(payload_len: usize) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicName::new("site/7/dev/1234/telemetry").expect("valid topic"),
        packet_id: PacketId::new(42),
        properties: PublishProperties::default(),
        payload: Bytes::from(vec![0xA5; payload_len]),
    }
}

fn bench_codec(c: &mut Criterion) {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let v = if version.is_v5() { "v5" } else { "v311" };
        let mut group = c.benchmark_group(format!("publish_{v}"));
        for (name, size) in SIZES {
            let packet = Packet::Publish(publish(size));
            let frame = codec::encode_to_bytes(&packet, version).expect("encodable");
            group.throughput(Throughput::Bytes(frame.len() as u64));
            let ctx = DecodeContext {
                version,
                ..DecodeContext::default()
            };
            group.bench_function(format!("decode/{name}"), |b| {
                b.iter_batched_ref(
                    || BytesMut::from(&frame[..]),
                    |buf| black_box(codec::decode(buf, &ctx).expect("decodes")),
                    BatchSize::SmallInput,
                );
            });
            let mut out = BytesMut::with_capacity(frame.len());
            group.bench_function(format!("encode/{name}"), |b| {
                b.iter(|| {
                    out.clear();
                    codec::encode(black_box(&packet), version, &mut out).expect("encodes");
                    black_box(out.len())
                });
            });
            let Packet::Publish(p) = &packet else {
                unreachable!("built as a PUBLISH")
            };
            let view = PublishView {
                dup: false,
                qos: p.qos,
                retain: false,
                topic: p.topic.as_str(),
                packet_id: p.packet_id,
                properties: &p.properties,
                topic_alias: None,
                subscription_identifiers: &[],
                message_expiry_interval: None,
                payload_len: p.payload.len(),
            };
            group.bench_function(format!("encode_header/{name}"), |b| {
                b.iter(|| {
                    out.clear();
                    codec::encode_publish_header(black_box(&view), version, &mut out)
                        .expect("encodes");
                    black_box(out.len())
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
