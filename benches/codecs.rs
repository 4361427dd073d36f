//! Micro-benchmarks of the pure codecs and functions on the hot paths: Engine.IO packets and
//! polling payloads, Socket.IO packets, rendezvous placement among 3 and 30 nodes, and RPC
//! frames (a room broadcast pushed to a peer). `cargo bench --bench codecs`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use clusterchat::cluster::placement::Placement;
use clusterchat::engineio::packet::decode_text;
use clusterchat::engineio::payload::{self, PayloadFormat};
use clusterchat::engineio::{Frame, ProtocolVersion};
use clusterchat::rpc::message::{decode, encode};
use clusterchat::rpc::{Push, RpcFrame, WsFrame};
use clusterchat::socketio::packet::{self as sio, Revision};

const CHAT: &str =
    r#"42/chat,["chat message",{"user":"alice","room":"lobby","message":"hello there, how is everyone today?"}]"#;

fn engineio(c: &mut Criterion) {
    let mut g = c.benchmark_group("engineio");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_text message", |b| b.iter(|| decode_text(black_box(CHAT), ProtocolVersion::V4)));
    let frames: Vec<Frame> = (0..10).map(|_| Frame::message(&CHAT[1..])).collect();
    let v4 = PayloadFormat { protocol: ProtocolVersion::V4, supports_binary: false };
    g.bench_function("encode v4 payload of 10", |b| b.iter(|| payload::encode(black_box(&frames), v4)));
    let body = payload::encode(&frames, v4);
    let bytes = body.body.clone();
    g.bench_function("decode v4 payload of 10", |b| {
        b.iter(|| payload::decode(black_box(&bytes), ProtocolVersion::V4, false))
    });
    g.finish();
}

fn socketio(c: &mut Criterion) {
    let mut g = c.benchmark_group("socketio");
    g.throughput(Throughput::Elements(1));
    let text = &CHAT[1..];
    g.bench_function("decode event", |b| b.iter(|| sio::decode(black_box(text), Revision::V5, 10)));
    let packet = sio::decode(text, Revision::V5, 10).expect("a valid packet");
    g.bench_function("encode event", |b| b.iter(|| sio::encode(black_box(&packet))));
    g.finish();
}

fn placement(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement");
    g.throughput(Throughput::Elements(1));
    for n in [3, 30] {
        let ids: Vec<String> = (1..=n).map(|i| format!("node{i}")).collect();
        let p = Placement::new(ids.iter().map(String::as_str));
        g.bench_function(format!("owner among {n}"), |b| b.iter(|| p.owner(black_box("Zx3k9PqLm2VbT8sQ"))));
        g.bench_function(format!("new + owner among {n}"), |b| {
            b.iter(|| Placement::new(ids.iter().map(String::as_str)).owner(black_box("Zx3k9PqLm2VbT8sQ")).map(str::len))
        });
    }
    g.finish();
}

fn rpc(c: &mut Criterion) {
    let mut g = c.benchmark_group("rpc");
    g.throughput(Throughput::Elements(1));
    let frame = RpcFrame::Push(Push::Publish {
        nsp: "/chat".into(),
        room: "lobby".into(),
        stamp: Some((0x5a3c_9e01, 0x1f2e)),
        frames: vec![WsFrame::Text(CHAT.into())],
    });
    g.bench_function("encode publish", |b| b.iter(|| encode(black_box(&frame))));
    let bytes = encode(&frame).expect("encodes");
    g.bench_function("decode publish", |b| b.iter(|| decode(black_box(&bytes))));
    g.finish();
}

criterion_group!(benches, engineio, socketio, placement, rpc);
criterion_main!(benches);
