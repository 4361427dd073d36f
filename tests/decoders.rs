//! Hostile input to the pure decoders: Engine.IO packets and polling payloads (v3 and v4),
//! Socket.IO packets (revisions 4 and 5), RPC frames, Engine.IO query strings and the gossip
//! content check (chitchat messages, which it may rewrite).
//!
//! Two properties per decoder, checked with proptest: arbitrary input never panics (an error
//! is a value), and what the encoder writes decodes back to what was encoded. The seed corpus
//! in `tests/corpus/<decoder>/` (shared with the cargo-fuzz targets in `fuzz/`) runs through
//! every decoder too. Cases per property: proptest's default (256), or `PROPTEST_CASES`.

use std::path::Path;

use bytes::Bytes;
use chitchat::{ChitchatId, Serializable};
use clusterchat::cluster::gossip_wire::{self, Checked};
use clusterchat::engineio::packet::{decode_binary, decode_text, Packet};
use clusterchat::engineio::payload::{self, PayloadFormat};
use clusterchat::engineio::{EngineQuery, EngineRequest, Frame, Method, PacketType, ProtocolVersion, TransportKind};
use clusterchat::rpc::message::{self as rpc, MAX_FRAME};
use clusterchat::rpc::{Push, RecordWire, Request, Response, RoomsWire, RpcFrame, StreamOpen, WirePacket, WsFrame};
use clusterchat::socketio::packet::{self as sio, Revision};
use proptest::prelude::*;
use serde_json::Value;

const PROTOCOLS: [ProtocolVersion; 2] = [ProtocolVersion::V3, ProtocolVersion::V4];
const REVISIONS: [Revision; 2] = [Revision::V4, Revision::V5];
const MAX_ATTACHMENTS: usize = 10;

// ---------------------------------------------------------------------------------------------
// What every input goes through: no panic, whatever the bytes
// ---------------------------------------------------------------------------------------------

/// Feeds `bytes` to every decoder in every mode. Each may refuse; none may panic.
fn decode_everything(bytes: &[u8]) {
    for protocol in PROTOCOLS {
        let _ = decode_binary(Bytes::copy_from_slice(bytes), protocol);
        for binary in [false, true] {
            let _ = payload::decode(bytes, protocol, binary);
        }
    }
    let _ = payload::decode_jsonp(bytes);
    let _ = rpc::decode(bytes);
    let _ = gossip_wire::check_message(bytes, &gossip_me());
    let _ = gossip_wire::echo_lives(bytes, bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        decode_text_everything(text);
    }
}

fn decode_text_everything(text: &str) {
    for protocol in PROTOCOLS {
        let _ = decode_text(text, protocol);
    }
    for revision in REVISIONS {
        for max in [0, MAX_ATTACHMENTS] {
            let _ = sio::decode(text, revision, max);
        }
    }
    let _ = EngineQuery::parse(text);
}

/// Bytes that look like protocol text often enough to reach deep into the parsers.
fn protocol_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9b:\u{1e}/,?&=%\\-\\[\\]{}\"_a-z€😀]{0,48}",
        // Socket.IO-shaped: type, attachments, namespace, ack id, JSON.
        "[0-6]([0-9]{1,3}-)?(/[a-z?=&,]{0,8},)?[0-9]{0,21}(\\[\"[a-z_]{0,6}\"(,\\{\"_placeholder\":true,\"num\":[0-9]{1,3}\\})?\\])?",
        // v3 text payloads: length-prefixed packets.
        "([0-9]{1,3}:[0-6b][a-zA-Z0-9+/=€😀]{0,8}){1,4}",
        // Query strings.
        "(EIO=[0-9]{1,2}&)?(transport=(polling|websocket|x)&)?(sid=[^&]{0,12}&)?(j=[0-9a-z-]{0,12}&)?(b64=[01]?)?",
    ]
}

/// v3 binary payloads: `<kind><digits>0xff<data>` records, well-formed or not.
fn v3_binary_ish() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        prop_oneof![0u8..3, Just(0xff), any::<u8>()],
        prop::collection::vec(0u8..12, 0..12),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(kind, digits, data)| {
            let mut r = vec![kind];
            r.extend(digits);
            r.push(0xff);
            r.extend(data);
            r
        });
    prop::collection::vec(record, 0..4).prop_map(|records| records.concat())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn protocol_shaped_text_never_panics(text in protocol_ish()) {
        decode_everything(text.as_bytes());
    }

    #[test]
    fn v3_binary_shaped_payloads_never_panic(bytes in v3_binary_ish()) {
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_rpc_frames_never_panic(frame in rpc_frame(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = rpc::encode(&frame).unwrap().to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = rpc::decode(&bytes);
        // Decoding is deterministic and refuses trailing bytes: a frame and a strict prefix of
        // it never both decode.
        let cut = bytes.len() / 2;
        prop_assert!(cut == 0 || rpc::decode(&bytes[..cut]).is_err() || rpc::decode(&bytes).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Engine.IO packets and payloads: what is encoded decodes back
// ---------------------------------------------------------------------------------------------

/// A frame the server may send and the packet a peer decodes from it.
fn frame_and_packet(separator_free: bool) -> impl Strategy<Value = (Frame, Packet)> {
    let text = if separator_free { "[^\u{1e}]{0,40}".boxed() } else { any::<String>().boxed() };
    prop_oneof![
        text.clone().prop_map(|t| (Frame::message(&t), Packet::Message(t))),
        text.clone().prop_map(|t| (Frame::text(PacketType::Ping, &t), Packet::Ping(t))),
        text.prop_map(|t| (Frame::text(PacketType::Pong, &t), Packet::Pong(t))),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| (Frame::Binary(Bytes::from(b.clone())), Packet::Binary(Bytes::from(b)))),
        prop::sample::select(vec![
            (PacketType::Open, Packet::Open(String::new())),
            (PacketType::Close, Packet::Close),
            (PacketType::Upgrade, Packet::Upgrade),
            (PacketType::Noop, Packet::Noop),
        ])
        .prop_map(|(ty, p)| (Frame::control(ty), p)),
    ]
}

/// A single text packet as a WebSocket text frame carries it.
fn text_packet(frame: &Frame, protocol: ProtocolVersion) -> String {
    match frame {
        Frame::Text(t) => t.as_str().to_owned(),
        Frame::Binary(b) => {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(b);
            match protocol {
                ProtocolVersion::V4 => format!("b{b64}"),
                ProtocolVersion::V3 => format!("b4{b64}"),
            }
        }
    }
}

proptest! {
    #[test]
    fn engineio_packets_round_trip((frame, packet) in frame_and_packet(false)) {
        for protocol in PROTOCOLS {
            prop_assert_eq!(decode_text(&text_packet(&frame, protocol), protocol), Ok(packet.clone()));
        }
    }

    #[test]
    fn engineio_binary_frames_round_trip(data in prop::collection::vec(any::<u8>(), 0..64)) {
        let data = Bytes::from(data);
        prop_assert_eq!(decode_binary(data.clone(), ProtocolVersion::V4), Ok(Packet::Binary(data.clone())));
        let mut v3 = vec![4u8];
        v3.extend_from_slice(&data);
        prop_assert_eq!(decode_binary(Bytes::from(v3), ProtocolVersion::V3), Ok(Packet::Binary(data)));
    }

    #[test]
    fn v4_payloads_round_trip(pairs in prop::collection::vec(frame_and_packet(true), 1..8)) {
        let (frames, packets): (Vec<Frame>, Vec<Packet>) = pairs.into_iter().unzip();
        let format = PayloadFormat { protocol: ProtocolVersion::V4, supports_binary: false };
        let encoded = payload::encode(&frames, format);
        prop_assert!(!encoded.binary);
        prop_assert_eq!(payload::decode(&encoded.body, ProtocolVersion::V4, false), Ok(packets));
    }

    #[test]
    fn v3_payloads_round_trip(pairs in prop::collection::vec(frame_and_packet(false), 1..8), supports_binary: bool) {
        let (frames, packets): (Vec<Frame>, Vec<Packet>) = pairs.into_iter().unzip();
        let format = PayloadFormat { protocol: ProtocolVersion::V3, supports_binary };
        let encoded = payload::encode(&frames, format);
        prop_assert_eq!(payload::decode(&encoded.body, ProtocolVersion::V3, encoded.binary), Ok(packets));
    }

    #[test]
    fn v3_jsonp_posts_round_trip(messages in prop::collection::vec("[^\\\\\n]{0,24}", 1..5)) {
        // The client form-encodes the v3 text payload as `d=`; without backslashes or newlines
        // its escaping is the identity.
        let frames: Vec<Frame> = messages.iter().map(|m| Frame::message(m)).collect();
        let text = payload::encode_v3_text(&frames);
        let body: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("d", &text).finish();
        let want: Vec<Packet> = messages.into_iter().map(Packet::Message).collect();
        prop_assert_eq!(payload::decode_jsonp(body.as_bytes()), Ok(want));
    }
}

// ---------------------------------------------------------------------------------------------
// Socket.IO packets
// ---------------------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{0,6}|\\PC{0,6}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().filter(|(k, _)| k != "_placeholder").collect())),
        ]
    })
}

/// A namespace as a client names it: `/`, or `/` and a name without `,` (and without `?`,
/// which revision 4 reads as the start of a query).
fn namespace() -> impl Strategy<Value = String> + Clone {
    prop_oneof![Just("/".to_owned()), "/[^,?]{1,16}"]
}

fn event_name() -> impl Strategy<Value = String> + Clone {
    any::<String>().prop_filter("reserved event names are refused", |n| {
        !["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"]
            .contains(&n.as_str())
    })
}

fn placeholder(num: usize) -> Value {
    serde_json::json!({ "_placeholder": true, "num": num })
}

/// A valid packet of `revision`, as a peer would send it.
fn sio_packet(revision: Revision) -> impl Strategy<Value = sio::Packet> {
    use sio::PacketType as T;
    let args = prop::collection::vec(json_value(), 0..4);
    let connect_data = match revision {
        Revision::V5 => prop::option::of(prop::collection::vec(("[a-z]{1,6}", json_value()), 0..4))
            .prop_map(|kv| kv.map(|kv| Value::Object(kv.into_iter().collect())))
            .boxed(),
        Revision::V4 => Just(None).boxed(),
    };
    let error_data = prop_oneof![
        any::<String>().prop_map(Value::String),
        prop::collection::vec(("[a-z]{1,6}", json_value()), 0..3)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
    ];
    let id = prop::option::of(any::<u64>());
    prop_oneof![
        (namespace(), connect_data).prop_map(|(nsp, data)| sio::Packet::new(T::Connect, &nsp, data)),
        namespace().prop_map(|nsp| sio::Packet::new(T::Disconnect, &nsp, None)),
        (namespace(), error_data).prop_map(|(nsp, data)| sio::Packet::new(T::ConnectError, &nsp, Some(data))),
        (namespace(), id.clone(), event_name(), args.clone()).prop_map(|(nsp, id, name, args)| {
            let mut data = vec![Value::String(name)];
            data.extend(args);
            sio::Packet { id, ..sio::Packet::new(T::Event, &nsp, Some(Value::Array(data))) }
        }),
        (namespace(), any::<u64>(), args.clone()).prop_map(|(nsp, id, args)| {
            sio::Packet { id: Some(id), ..sio::Packet::new(T::Ack, &nsp, Some(Value::Array(args))) }
        }),
        (namespace(), id, event_name(), args.clone(), 1..=MAX_ATTACHMENTS).prop_map(|(nsp, id, name, args, n)| {
            let mut data = vec![Value::String(name)];
            data.extend(args);
            data.extend((0..n).map(placeholder));
            sio::Packet { id, attachments: n, ..sio::Packet::new(T::BinaryEvent, &nsp, Some(Value::Array(data))) }
        }),
        (namespace(), any::<u64>(), args, 0..=MAX_ATTACHMENTS).prop_map(|(nsp, id, mut args, n)| {
            args.extend((0..n).map(placeholder));
            sio::Packet {
                id: Some(id),
                attachments: n,
                ..sio::Packet::new(T::BinaryAck, &nsp, Some(Value::Array(args)))
            }
        }),
    ]
}

proptest! {
    #[test]
    fn socketio_v5_packets_round_trip(packet in sio_packet(Revision::V5)) {
        let text = sio::encode(&packet);
        prop_assert_eq!(sio::decode(&text, Revision::V5, MAX_ATTACHMENTS), Ok(packet), "{}", text);
    }

    #[test]
    fn socketio_v4_packets_round_trip(packet in sio_packet(Revision::V4)) {
        let text = sio::encode(&packet);
        prop_assert_eq!(sio::decode(&text, Revision::V4, MAX_ATTACHMENTS), Ok(packet), "{}", text);
    }

    #[test]
    fn socketio_attachment_counts_are_bounded(n in 0usize..1000, max in 0usize..20) {
        let text = format!("5{n}-[\"e\"]");
        let decoded = sio::decode(&text, Revision::V5, max);
        prop_assert_eq!(decoded.is_ok(), n <= max, "{}", text);
    }
}

// ---------------------------------------------------------------------------------------------
// RPC frames and Engine.IO queries
// ---------------------------------------------------------------------------------------------

/// A valid query string of an Engine.IO request and what it must parse to.
fn engine_query() -> impl Strategy<Value = (String, EngineQuery)> + Clone {
    (
        prop::sample::select(vec![ProtocolVersion::V3, ProtocolVersion::V4]),
        prop::sample::select(vec![TransportKind::Polling, TransportKind::Websocket]),
        prop::option::of(any::<String>()),
        any::<bool>(),
        prop::option::of(any::<u32>()),
        prop::collection::vec(("[a-z]{1,8}", any::<String>()), 0..4),
    )
        .prop_map(|(protocol, transport, sid, b64, j, extra)| {
            let mut params = vec![
                ("EIO".to_owned(), if protocol == ProtocolVersion::V3 { "3" } else { "4" }.to_owned()),
                ("transport".to_owned(), transport.name().to_owned()),
            ];
            params.extend(sid.iter().map(|s| ("sid".to_owned(), s.clone())));
            if b64 {
                params.push(("b64".into(), "1".into()));
            }
            params.extend(j.map(|j| ("j".to_owned(), j.to_string())));
            // Extra parameters may not shadow the ones above (the first occurrence counts).
            params.extend(extra.into_iter().filter(|(k, _)| !["sid", "b64", "j"].contains(&k.as_str())));
            let text = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
            let jsonp = j.filter(|_| protocol == ProtocolVersion::V3);
            (text, EngineQuery { protocol, transport, sid, b64, jsonp, params, client_addr: None, direct: None })
        })
}

fn text() -> impl Strategy<Value = String> + Clone {
    any::<String>()
}

fn bytes() -> impl Strategy<Value = Bytes> + Clone {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn ws_frame() -> impl Strategy<Value = WsFrame> + Clone {
    prop_oneof![text().prop_map(WsFrame::Text), bytes().prop_map(WsFrame::Binary)]
}

fn wire_packet() -> impl Strategy<Value = WirePacket> {
    (any::<(u32, u64)>(), prop::collection::vec(ws_frame(), 0..3))
}

fn record() -> impl Strategy<Value = RecordWire> {
    let rooms = prop_oneof![
        prop::collection::vec(text(), 0..3).prop_map(RoomsWire::All),
        text().prop_map(RoomsWire::Join),
        text().prop_map(RoomsWire::Leave),
    ];
    (text(), text(), rooms, any::<u64>()).prop_map(|(pid, sid, rooms, version)| RecordWire { pid, sid, rooms, version })
}

fn rpc_frame() -> impl Strategy<Value = RpcFrame> {
    let labels = prop::collection::vec(text(), 0..4);
    let engine_request = (engine_query(), any::<bool>(), any::<bool>(), bytes(), prop::option::of(text())).prop_map(
        |((_, query), post, binary_body, body, new_sid)| EngineRequest {
            method: if post { Method::Post } else { Method::Get },
            query,
            binary_body,
            body,
            new_sid,
        },
    );
    let entry = (any::<u64>(), any::<(u64, u64)>(), text())
        .prop_map(|(at_ms, id, body)| clusterchat::rpc::HistoryEntry { at_ms, id, body });
    let entries = prop::collection::vec(entry.clone(), 0..3);
    let request =
        prop_oneof![
            (text(), engine_request).prop_map(|(path, req)| Request::Engine { path, req }),
            (text(), text(), text(), labels.clone(), any::<(u64, u64)>())
                .prop_map(|(node, nsp, room, labels, version)| Request::Subscribe { node, nsp, room, labels, version }),
            (text(), text()).prop_map(|(nsp, room)| Request::History { nsp, room }),
            (text(), record(), prop::collection::vec(wire_packet(), 0..3))
                .prop_map(|(nsp, record, seed)| Request::Keep { nsp, record, seed }),
            (text(), record(), prop::collection::vec(wire_packet(), 0..3))
                .prop_map(|(nsp, record, seed)| Request::Adopt { nsp, record, seed }),
            (text(), text()).prop_map(|(nsp, pid)| Request::FindParked { nsp, pid }),
            (text(), text(), text()).prop_map(|(nsp, pid, sid)| Request::Holds { nsp, pid, sid }),
            any::<u64>().prop_map(|token| Request::Barrier { token }),
            (text(), text(), text()).prop_map(|(nsp, pid, offset)| Request::TakeParked { nsp, pid, offset }),
            prop::collection::vec((text(), text(), entries.clone()), 0..3)
                .prop_map(|rooms| Request::HistoryMerge { rooms }),
        ];
    let response = prop_oneof![
        (any::<(u64, u64)>(), labels.clone()).prop_map(|(version, labels)| Response::Members { version, labels }),
        entries.prop_map(Response::History),
        any::<u32>().prop_map(Response::Merged),
        text().prop_map(Response::Failed),
        any::<bool>().prop_map(Response::Kept),
        prop::option::of((text(), labels.clone())).prop_map(Response::Found),
        prop::option::of(prop::collection::vec(wire_packet(), 0..3)).prop_map(Response::Taken),
        (any::<u16>(), bytes()).prop_map(|(status, body)| Response::Engine(clusterchat::engineio::EngineResponse {
            status,
            content_type: clusterchat::engineio::ContentType::Json,
            body,
        })),
    ];
    let push = prop_oneof![
        (text(), text(), prop::option::of(any::<(u32, u64)>()), prop::collection::vec(ws_frame(), 0..4))
            .prop_map(|(nsp, room, stamp, frames)| Push::Publish { nsp, room, stamp, frames }),
        (text(), text(), any::<u64>(), any::<bool>()).prop_map(|(nsp, pid, version, park)| Push::Release {
            nsp,
            pid,
            version,
            park
        }),
        (text(), text(), prop::collection::vec(wire_packet(), 0..3)).prop_map(|(nsp, pid, seed)| Push::Seed {
            nsp,
            pid,
            seed
        }),
        (text(), text(), text(), labels, any::<(u64, u64)>())
            .prop_map(|(node, nsp, room, labels, version)| { Push::Presence { node, nsp, room, labels, version } }),
        (text(), text(), entry).prop_map(|(nsp, room, entry)| Push::Record { nsp, room, entry }),
    ];
    prop_oneof![
        (any::<u64>(), request).prop_map(|(id, body)| RpcFrame::Request { id, body }),
        (any::<u64>(), response).prop_map(|(id, body)| RpcFrame::Response { id, body }),
        (any::<u64>(), text(), engine_query(), prop::option::of(text())).prop_map(
            |(stream, path, (_, query), new_sid)| {
                RpcFrame::StreamOpen { stream, open: StreamOpen { path, query, new_sid } }
            }
        ),
        (any::<u64>(), ws_frame()).prop_map(|(stream, frame)| RpcFrame::StreamData { stream, frame }),
        any::<u64>().prop_map(|stream| RpcFrame::StreamClose { stream }),
        push.prop_map(RpcFrame::Push),
    ]
}

proptest! {
    #[test]
    fn rpc_frames_round_trip(frame in rpc_frame()) {
        let bytes = rpc::encode(&frame).unwrap();
        prop_assert_eq!(rpc::decode(&bytes).unwrap(), frame);
    }

    #[test]
    fn rpc_lengths_over_the_frame_limit_are_refused(len in (MAX_FRAME as u64)..u64::MAX) {
        // A Failed response whose string claims `len` bytes: refused before allocating them.
        let mut bytes = vec![1u8, 1, 3, 253];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.resize(bytes.len() + 64, b'x');
        prop_assert!(rpc::decode(&bytes).is_err());
    }

    #[test]
    fn engine_queries_parse_to_what_was_sent((text, query) in engine_query()) {
        prop_assert_eq!(EngineQuery::parse(&text), Ok(query));
    }
}

// ---------------------------------------------------------------------------------------------
// The gossip content check: what it strips, and the echo of what it stripped
// ---------------------------------------------------------------------------------------------

/// The node the gossip properties check messages for: `node1`, generation 100.
fn gossip_me() -> ChitchatId {
    ChitchatId::new("node1".to_owned(), 100, "10.0.0.1:7000".parse().unwrap())
}

/// A chitchat message as the generator made it, with what the check must make of it.
#[derive(Debug, Clone)]
struct GossipCase {
    bytes: Vec<u8>,
    /// Whether a digest or delta entry names `node1` at a newer generation than 100.
    names_newer: bool,
    /// The digest's entries that do, in order (`None`: an Ack, no digest).
    newer_lives: Option<Vec<u8>>,
    /// Protocol 0 (a counted digest) or 1 (a block stream).
    v1: bool,
}

/// Node ids: `node1` to `node3`, generations 99 to 102 (`node1` at 100 is the receiver).
fn gossip_id() -> impl Strategy<Value = ChitchatId> {
    (1u8..=3, 99u64..=102).prop_map(|(n, g)| ChitchatId::new(format!("node{n}"), g, "10.0.0.1:7000".parse().unwrap()))
}

fn gossip_stream(items: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in items.chunks(u16::MAX as usize) {
        out.push(2);
        out.extend((block.len() as u16).to_le_bytes());
        out.extend(block);
    }
    out.push(0);
    out
}

/// Well-formed Syn, SynAck and Ack messages: digests of distinct ids, deltas of distinct node
/// states other than the receiver's own (each with rising key versions and, sometimes, a max
/// version at least theirs), in either protocol.
fn gossip_case() -> impl Strategy<Value = GossipCase> {
    let digest = prop::collection::btree_map(gossip_id(), (any::<u64>(), any::<u64>(), any::<u64>()), 0..6);
    let section = (prop::collection::vec(("[a-z:]{1,8}", "[a-z0-9]{0,12}"), 0..4), any::<bool>());
    let delta = prop::collection::btree_map(gossip_id(), section, 0..4);
    (0u8..3, any::<bool>(), digest, delta).prop_map(|(kind, v1, digest, delta)| {
        let me = gossip_me();
        let newer = |id: &ChitchatId| id.node_id == me.node_id && id.generation_id > me.generation_id;
        let mut bytes = 45_139u16.to_le_bytes().to_vec();
        bytes.extend([u8::from(v1), kind]);
        let mut names_newer = false;
        let mut newer_lives = None;
        if kind < 2 {
            let mut entries = Vec::new();
            let mut lives = Vec::new();
            for (id, (heartbeat, gc, max)) in &digest {
                let mut entry = Vec::new();
                id.serialize(&mut entry);
                for n in [heartbeat, gc, max] {
                    entry.extend(n.to_le_bytes());
                }
                if newer(id) {
                    lives.extend(&entry);
                }
                entries.extend(entry);
            }
            names_newer |= !lives.is_empty();
            newer_lives = Some(lives);
            if v1 {
                bytes.extend(gossip_stream(&entries));
            } else {
                bytes.extend((digest.len() as u16).to_le_bytes());
                bytes.extend(entries);
            }
        }
        if kind == 0 {
            "cluster".to_owned().serialize(&mut bytes);
        } else {
            let mut ops = Vec::new();
            for (id, (keys, set_max)) in delta.iter().filter(|(id, _)| **id != me) {
                names_newer |= newer(id);
                ops.push(0);
                id.serialize(&mut ops);
                ops.extend([0u8; 16]);
                for (version, (key, value)) in (1u64..).zip(keys) {
                    ops.push(1);
                    key.clone().serialize(&mut ops);
                    value.clone().serialize(&mut ops);
                    ops.extend(version.to_le_bytes());
                    ops.push(0);
                }
                if *set_max {
                    ops.push(2);
                    ops.extend((keys.len() as u64 + 1).to_le_bytes());
                }
            }
            bytes.extend(gossip_stream(&ops));
        }
        GossipCase { bytes, names_newer, newer_lives, v1 }
    })
}

proptest! {
    /// The check takes every well-formed message; it strips exactly when an entry names the
    /// receiver at a newer generation, reports the digest's such entries, and what it passes on
    /// has none left. Echoed back (as the receiver does to the peer that named them), they are
    /// found again, and stripping the echo gives what was passed on (protocol 0 byte for byte;
    /// a block stream is folded anew).
    #[test]
    fn gossip_strips_newer_lives_and_echoes_them(case in gossip_case()) {
        let me = gossip_me();
        let checked = gossip_wire::check_message(&case.bytes, &me).unwrap();
        prop_assert_eq!(checked.stripped.is_some(), case.names_newer);
        prop_assert_eq!(&checked.newer_lives, &case.newer_lives);
        let passed = checked.stripped.clone().unwrap_or(case.bytes.clone());
        prop_assert_eq!(gossip_wire::check_message(&passed, &me), Ok(Checked::whole(case.newer_lives.is_some())));
        match case.newer_lives.filter(|lives| !lives.is_empty()) {
            Some(lives) => {
                let echoed = gossip_wire::echo_lives(&passed, &lives).unwrap();
                let again = gossip_wire::check_message(&echoed, &me).unwrap();
                prop_assert_eq!(again.newer_lives.as_ref(), Some(&lives));
                let stripped = again.stripped.unwrap();
                if !case.v1 {
                    prop_assert_eq!(&stripped, &passed);
                }
                prop_assert_eq!(gossip_wire::check_message(&stripped, &me), Ok(Checked::whole(true)));
            }
            None if case.bytes[3] == 2 => prop_assert_eq!(gossip_wire::echo_lives(&passed, b""), None),
            None => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The seed corpus
// ---------------------------------------------------------------------------------------------

/// Every file of `tests/corpus/*/` goes through every decoder. Returns how many ran.
#[test]
fn the_seed_corpus_never_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut count = 0;
    for dir in std::fs::read_dir(&root).expect("tests/corpus exists") {
        let dir = dir.expect("corpus directory entry").path();
        for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = file.expect("corpus file entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            decode_everything(&bytes);
            count += 1;
        }
    }
    assert!(count >= 40, "the seed corpus holds {count} inputs");
}
