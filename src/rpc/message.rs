//! What nodes say to each other over the internal RPC, and its pure codec: one bincode
//! message per length-delimited frame, decoded with an explicit size limit.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::engineio::{EngineQuery, EngineRequest, EngineResponse};
pub use crate::history::Entry as HistoryEntry;

/// Largest frame accepted from a peer; bounds what a peer can make us allocate. Large enough
/// for an Engine.IO payload at the largest `max_payload` a node accepts.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// One RPC frame. Requests and responses are matched by `id`; stream frames by `stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RpcFrame {
    Request {
        id: u64,
        body: Request,
    },
    Response {
        id: u64,
        body: Response,
    },
    /// Opens a stream carrying a client's WebSocket to the session's owner.
    StreamOpen {
        stream: u64,
        open: StreamOpen,
    },
    StreamData {
        stream: u64,
        frame: WsFrame,
    },
    StreamClose {
        stream: u64,
    },
    /// A one-way message: no response, no retry.
    Push(Push),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// A polling request (or polling handshake) for a session this node owns, for the
    /// engine at `path` (e.g. `/socket.io/`).
    Engine { path: String, req: EngineRequest },
    /// `node` now has local members labelled `labels` in a room, as of `version` (see
    /// `cluster::core::Version`); the answer is the receiver's own local members of that
    /// room (`Response::Members`).
    Subscribe { node: String, nsp: String, room: String, labels: Vec<String>, version: (u64, u64) },
    /// The receiver's copy of a room's history (`Response::History`).
    History { nsp: String, room: String },
    /// Copies of rooms' histories for the receiver, a new replica of them, to merge
    /// (`Response::Merged`); see `cluster::history`.
    HistoryMerge { rooms: Vec<(String, String, Vec<HistoryEntry>)> },
    /// Keep (or update) the record of a session the sender holds, with what it was sent
    /// that the receiver may not have logged; answered `Kept` once the receiver is
    /// subscribed to its rooms (see `socketio::recovery`).
    Keep { nsp: String, record: RecordWire, seed: Vec<WirePacket> },
    /// Keep this parked record: the sender, a keeper leaving the cluster, hands it on with
    /// what its rooms logged; answered `Kept`.
    Adopt { nsp: String, record: RecordWire, seed: Vec<WirePacket> },
    /// Push a `Push::Barrier` with this token to me behind every push you queued for me so
    /// far (answered `Kept(true)` once it is queued).
    Barrier { token: u64 },
    /// Do you still hold this session of yours (`Response::Kept`)? Its keeper asks before it
    /// gives a live record to a client that came back elsewhere.
    Holds { nsp: String, pid: String, sid: String },
    /// Do you keep this session, parked (`Response::Found`)?
    FindParked { nsp: String, pid: String },
    /// Give up this parked session: what its client missed above the frontier its offset
    /// names (`Response::Taken`).
    TakeParked { nsp: String, pid: String, offset: String },
    /// For the Admin UI: JSON (see `admin`), as bincode cannot carry `serde_json::Value`.
    Admin(String),
    /// Does your membership know me (the channel's proven node) in this generation
    /// (`Response::Kept`)? A starting node asks every member before it takes clients.
    Knows { generation: u64 },
}

impl Request {
    /// A forwarded long-poll: answered when its session has something to send, up to a ping
    /// interval later. It holds no call slot at either end of a connection (the slots bound
    /// the quick calls: subscribes, keeps, barriers), or a node forwarding more polls than
    /// there are slots would hold up every other call to that owner. Its own bounds are the
    /// sessions': one poll per session at a time (a second closes the session), and one per
    /// open HTTP connection of the forwarding node.
    pub fn waits_on_a_client(&self) -> bool {
        matches!(self, Request::Engine { req, .. } if req.method == crate::engineio::Method::Get && req.query.sid.is_some())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Engine(EngineResponse),
    /// Labels of the answering node's local members of a room, as of `version`.
    Members {
        version: (u64, u64),
        labels: Vec<String>,
    },
    /// A room's history entries, oldest first.
    History(Vec<HistoryEntry>),
    /// How many rooms of a `HistoryMerge` were merged.
    Merged(u32),
    /// Whether the answering node keeps the record.
    Kept(bool),
    /// A parked session's socket id and rooms.
    Found(Option<(String, Vec<String>)>),
    /// A parked session's missed broadcasts (`None`: not taken).
    Taken(Option<Vec<WirePacket>>),
    /// The Admin UI's answer, JSON.
    Admin(String),
    /// The peer could not serve the request; the text says why.
    Failed(String),
}

/// Room traffic between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Push {
    /// A room broadcast, encoded once by the publishing node, for the receiver's members;
    /// `stamp` is its recovery stamp (publisher, counter).
    Publish { nsp: String, room: String, stamp: Option<(u32, u64)>, frames: Vec<WsFrame> },
    /// `node`'s local members of a room are now `labels` (empty: none), as of `version`.
    Presence { node: String, nsp: String, room: String, labels: Vec<String>, version: (u64, u64) },
    /// An entry for the history of a room the receiver is a replica of.
    Record { nsp: String, room: String, entry: HistoryEntry },
    /// The sender let go of a session whose record the receiver keeps, after the record's
    /// `version`: parked for its client (`park`), or dropped.
    Release { nsp: String, pid: String, version: u64, park: bool },
    /// Broadcasts a restored session of the sender's is about to be sent, for its record.
    Seed { nsp: String, pid: String, seed: Vec<WirePacket> },
    /// Every push the sender had queued for the receiver when it was asked (`Request::Barrier`)
    /// has arrived before this one.
    Barrier { token: u64 },
}

/// A room broadcast for a session's record: its stamp and frames.
pub type WirePacket = ((u32, u64), Vec<WsFrame>);

/// A session's record (see `socketio::recovery::KeepRequest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordWire {
    pub pid: String,
    pub sid: String,
    pub rooms: RoomsWire,
    pub version: u64,
}

/// A record's rooms: all of them, or the one joined or left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RoomsWire {
    All(Vec<String>),
    Join(String),
    Leave(String),
}

/// A client's WebSocket, carried to the owner of its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamOpen {
    /// The engine's path, e.g. `/socket.io/`.
    pub path: String,
    pub query: EngineQuery,
    pub new_sid: Option<String>,
}

/// A WebSocket data message. Control frames stay with the node that holds the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WsFrame {
    Text(String),
    Binary(Bytes),
}

impl WsFrame {
    /// The data message of a WebSocket message; `None` for control frames.
    pub fn from_ws(msg: WsMessage) -> Option<Self> {
        match msg {
            WsMessage::Text(t) => Some(Self::Text(t.as_str().to_owned())),
            WsMessage::Binary(b) => Some(Self::Binary(b)),
            _ => None,
        }
    }

    /// Bytes of data.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn into_ws(self) -> WsMessage {
        match self {
            Self::Text(t) => WsMessage::Text(t.into()),
            Self::Binary(b) => WsMessage::Binary(b),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode RPC frame: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("cannot decode RPC frame: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("RPC frame has {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

pub fn encode(frame: &RpcFrame) -> Result<Bytes, CodecError> {
    Ok(bincode::serde::encode_to_vec(frame, config())?.into())
}

/// Decodes one frame's bytes (the length prefix already removed).
pub fn decode(bytes: &[u8]) -> Result<RpcFrame, CodecError> {
    let (frame, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::{ContentType, Method};

    fn request() -> RpcFrame {
        RpcFrame::Request {
            id: 7,
            body: Request::Engine {
                path: "/socket.io/".into(),
                req: EngineRequest {
                    method: Method::Post,
                    query: EngineQuery::parse("EIO=4&transport=polling&sid=abc.node1&user=%C3%A9").unwrap(),
                    binary_body: false,
                    body: Bytes::from_static("4héllo\x1e4☕".as_bytes()),
                    new_sid: None,
                },
            },
        }
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            request(),
            RpcFrame::Response {
                id: 7,
                body: Response::Engine(EngineResponse {
                    status: 200,
                    content_type: ContentType::Text,
                    body: Bytes::from_static(b"ok"),
                }),
            },
            RpcFrame::Response { id: 8, body: Response::Failed("nope".into()) },
            RpcFrame::Push(Push::Record {
                nsp: "/chat".into(),
                room: "r".into(),
                entry: HistoryEntry { at_ms: 1_764_480_000_000, id: (u64::MAX, 3), body: "{\"user\":\"é\"}".into() },
            }),
            RpcFrame::Request {
                id: 13,
                body: Request::HistoryMerge {
                    rooms: vec![(
                        "/chat".into(),
                        "r".into(),
                        vec![HistoryEntry { at_ms: 1, id: (2, 3), body: "x".into() }],
                    )],
                },
            },
            RpcFrame::Response { id: 13, body: Response::Merged(1) },
            RpcFrame::StreamOpen {
                stream: 1,
                open: StreamOpen {
                    path: "/engine.io/".into(),
                    query: EngineQuery::parse("EIO=3&transport=websocket").unwrap(),
                    new_sid: Some("x.node2".into()),
                },
            },
            RpcFrame::StreamData { stream: 1, frame: WsFrame::Text("42[\"chat message\",\"😀\"]".into()) },
            RpcFrame::StreamData { stream: 1, frame: WsFrame::Binary(Bytes::from_static(&[0, 1, 255])) },
            RpcFrame::StreamClose { stream: 1 },
            RpcFrame::Push(Push::Publish {
                nsp: "/chat".into(),
                room: "café ☕".into(),
                stamp: Some((0xabc, 0x1f)),
                frames: vec![WsFrame::Text("42/chat,[\"x\"]".into())],
            }),
            RpcFrame::Request {
                id: 10,
                body: Request::Keep {
                    nsp: "/chat".into(),
                    record: RecordWire {
                        pid: "p".into(),
                        sid: "s".into(),
                        rooms: RoomsWire::Join("r".into()),
                        version: 3,
                    },
                    seed: vec![((1, 2), vec![WsFrame::Text("42/chat,[\"x\"]".into())])],
                },
            },
            RpcFrame::Response { id: 10, body: Response::Taken(Some(vec![((1, 3), vec![])])) },
            RpcFrame::Response { id: 11, body: Response::Found(Some(("s".into(), vec!["r".into()]))) },
            RpcFrame::Request {
                id: 12,
                body: Request::TakeParked { nsp: "/chat".into(), pid: "p".into(), offset: "1-2.ab-3".into() },
            },
            RpcFrame::Push(Push::Release { nsp: "/chat".into(), pid: "p".into(), version: 4, park: true }),
            RpcFrame::Push(Push::Presence {
                node: "node2".into(),
                nsp: "/chat".into(),
                room: "r".into(),
                labels: vec!["bob".into()],
                version: (1_764_480_000_000, 3),
            }),
            RpcFrame::Request {
                id: 9,
                body: Request::Subscribe {
                    node: "node1".into(),
                    nsp: "/chat".into(),
                    room: "r".into(),
                    labels: vec![],
                    version: (7, 0),
                },
            },
            RpcFrame::Response {
                id: 9,
                body: Response::Members { version: (7, 2), labels: vec!["alice".into(), "日本".into()] },
            },
        ];
        for frame in frames {
            assert_eq!(decode(&encode(&frame).unwrap()).unwrap(), frame);
        }
    }

    /// One sample of every variant on the wire, named. A variant added to any enum of this
    /// module fails to compile the matches below: give it a sample, then bump the version.
    fn samples() -> Vec<(&'static str, RpcFrame)> {
        let entry = || HistoryEntry { at_ms: 5, id: (6, 7), body: "b".into() };
        let record = |rooms| RecordWire { pid: "p".into(), sid: "s".into(), rooms, version: 3 };
        let packet = || ((1, 2), vec![WsFrame::Text("t".into()), WsFrame::Binary(Bytes::from_static(&[9]))]);
        let query = || EngineQuery::parse("EIO=4&transport=polling&sid=s&x=y").unwrap();
        let requests = vec![
            Request::Engine {
                path: "/p".into(),
                req: EngineRequest {
                    method: Method::Post,
                    query: query(),
                    binary_body: true,
                    body: Bytes::from_static(b"4x"),
                    new_sid: Some("n".into()),
                },
            },
            Request::Subscribe {
                node: "n".into(),
                nsp: "/c".into(),
                room: "r".into(),
                labels: vec!["l".into()],
                version: (1, 2),
            },
            Request::History { nsp: "/c".into(), room: "r".into() },
            Request::HistoryMerge { rooms: vec![("/c".into(), "r".into(), vec![entry()])] },
            Request::Keep { nsp: "/c".into(), record: record(RoomsWire::All(vec!["r".into()])), seed: vec![packet()] },
            Request::Adopt { nsp: "/c".into(), record: record(RoomsWire::Join("r".into())), seed: vec![] },
            Request::Barrier { token: 4 },
            Request::Holds { nsp: "/c".into(), pid: "p".into(), sid: "s".into() },
            Request::FindParked { nsp: "/c".into(), pid: "p".into() },
            Request::TakeParked { nsp: "/c".into(), pid: "p".into(), offset: "1-2".into() },
            Request::Admin("{}".into()),
            Request::Knows { generation: 7 },
        ];
        let responses = vec![
            Response::Engine(EngineResponse {
                status: 200,
                content_type: ContentType::Binary,
                body: Bytes::from_static(b"ok"),
            }),
            Response::Members { version: (1, 2), labels: vec!["l".into()] },
            Response::History(vec![entry()]),
            Response::Merged(3),
            Response::Kept(true),
            Response::Found(Some(("s".into(), vec!["r".into()]))),
            Response::Taken(Some(vec![packet()])),
            Response::Admin("{}".into()),
            Response::Failed("f".into()),
        ];
        let pushes = vec![
            Push::Publish {
                nsp: "/c".into(),
                room: "r".into(),
                stamp: Some((1, 2)),
                frames: vec![WsFrame::Text("t".into())],
            },
            Push::Presence { node: "n".into(), nsp: "/c".into(), room: "r".into(), labels: vec![], version: (1, 2) },
            Push::Record { nsp: "/c".into(), room: "r".into(), entry: entry() },
            Push::Release { nsp: "/c".into(), pid: "p".into(), version: 3, park: true },
            Push::Seed { nsp: "/c".into(), pid: "p".into(), seed: vec![packet()] },
            Push::Barrier { token: 4 },
        ];
        let mut frames: Vec<RpcFrame> = requests.into_iter().map(|body| RpcFrame::Request { id: 1, body }).collect();
        frames.extend(responses.into_iter().map(|body| RpcFrame::Response { id: 1, body }));
        frames.push(RpcFrame::StreamOpen {
            stream: 2,
            open: StreamOpen { path: "/p".into(), query: query(), new_sid: None },
        });
        frames.push(RpcFrame::StreamData { stream: 2, frame: WsFrame::Binary(Bytes::from_static(&[0, 255])) });
        frames.push(RpcFrame::StreamClose { stream: 2 });
        frames.extend(pushes.into_iter().map(RpcFrame::Push));
        frames.push(RpcFrame::Request {
            id: 1,
            body: Request::Keep { nsp: "/c".into(), record: record(RoomsWire::Leave("r".into())), seed: vec![] },
        });
        frames.into_iter().map(|f| (variant(&f), f)).collect()
    }

    fn variant(frame: &RpcFrame) -> &'static str {
        match frame {
            RpcFrame::Request { body, .. } => match body {
                Request::Engine { .. } => "Request::Engine",
                Request::Subscribe { .. } => "Request::Subscribe",
                Request::History { .. } => "Request::History",
                Request::HistoryMerge { .. } => "Request::HistoryMerge",
                Request::Keep { record, .. } => match record.rooms {
                    RoomsWire::All(_) => "Request::Keep(RoomsWire::All)",
                    RoomsWire::Join(_) => "Request::Keep(RoomsWire::Join)",
                    RoomsWire::Leave(_) => "Request::Keep(RoomsWire::Leave)",
                },
                Request::Adopt { .. } => "Request::Adopt",
                Request::Barrier { .. } => "Request::Barrier",
                Request::Holds { .. } => "Request::Holds",
                Request::FindParked { .. } => "Request::FindParked",
                Request::TakeParked { .. } => "Request::TakeParked",
                Request::Admin(_) => "Request::Admin",
                Request::Knows { .. } => "Request::Knows",
            },
            RpcFrame::Response { body, .. } => match body {
                Response::Engine(_) => "Response::Engine",
                Response::Members { .. } => "Response::Members",
                Response::History(_) => "Response::History",
                Response::Merged(_) => "Response::Merged",
                Response::Kept(_) => "Response::Kept",
                Response::Found(_) => "Response::Found",
                Response::Taken(_) => "Response::Taken",
                Response::Admin(_) => "Response::Admin",
                Response::Failed(_) => "Response::Failed",
            },
            RpcFrame::StreamOpen { .. } => "RpcFrame::StreamOpen",
            RpcFrame::StreamData { frame, .. } => match frame {
                WsFrame::Text(_) => "RpcFrame::StreamData(WsFrame::Text)",
                WsFrame::Binary(_) => "RpcFrame::StreamData(WsFrame::Binary)",
            },
            RpcFrame::StreamClose { .. } => "RpcFrame::StreamClose",
            RpcFrame::Push(push) => match push {
                Push::Publish { .. } => "Push::Publish",
                Push::Presence { .. } => "Push::Presence",
                Push::Record { .. } => "Push::Record",
                Push::Release { .. } => "Push::Release",
                Push::Seed { .. } => "Push::Seed",
                Push::Barrier { .. } => "Push::Barrier",
            },
        }
    }

    /// The RPC version the pins below were taken under.
    const PINNED_VERSION: &[u8; 8] = b"CCRPC/4\n";

    /// Each sample's bincode bytes, in hex, under [`PINNED_VERSION`].
    const PINNED: &str = "\
Request::Engine 000100022f700101000101730000040345494f0134097472616e73706f727407706f6c6c696e6703736964017301780179000102347801016e
Request::Subscribe 000101016e022f63017201016c0102
Request::History 000102022f630172
Request::HistoryMerge 00010301022f630172010506070162
Request::Keep(RoomsWire::All) 000104022f6301700173000101720301010202000174010109
Request::Adopt 000105022f63017001730101720300
Request::Barrier 00010604
Request::Holds 000107022f6301700173
Request::FindParked 000108022f630170
Request::TakeParked 000109022f63017003312d32
Request::Admin 00010a027b7d
Request::Knows 00010b07
Response::Engine 010100c802026f6b
Response::Members 010101010201016c
Response::History 010102010506070162
Response::Merged 01010303
Response::Kept 01010401
Response::Found 010105010173010172
Response::Taken 0101060101010202000174010109
Response::Admin 010107027b7d
Response::Failed 0101080166
RpcFrame::StreamOpen 0202022f7001000101730000040345494f0134097472616e73706f727407706f6c6c696e67037369640173017801790000
RpcFrame::StreamData(WsFrame::Binary) 0302010200ff
RpcFrame::StreamClose 0402
Push::Publish 0500022f63017201010201000174
Push::Presence 0501016e022f630172000102
Push::Record 0502022f6301720506070162
Push::Release 0503022f6301700301
Push::Seed 0504022f63017001010202000174010109
Push::Barrier 050504
Request::Keep(RoomsWire::Leave) 000104022f63017001730201720300
";

    /// Two nodes of one build speak one wire: a change to the encoding of anything above
    /// (a variant added, removed or moved, a field added or retyped, a serde attribute) must
    /// come with a new `noise::HELLO_MAGIC`, so nodes of the old and the new encoding refuse
    /// each other instead of misreading each other's frames.
    #[test]
    fn the_encoding_is_pinned_to_the_rpc_version() {
        let now: String = samples()
            .iter()
            .map(|(name, frame)| {
                let hex: String = encode(frame).unwrap().iter().map(|b| format!("{b:02x}")).collect();
                format!("{name} {hex}\n")
            })
            .collect();
        assert_eq!(
            crate::rpc::noise::HELLO_MAGIC,
            PINNED_VERSION,
            "HELLO_MAGIC was bumped: take the pins again (the assertion below prints them) and set PINNED_VERSION"
        );
        assert!(
            now == PINNED,
            "the RPC encoding changed: bump HELLO_MAGIC (rpc::noise) and take the pins again. The encoding now:\n{now}"
        );
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let bytes = encode(&request()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(CodecError::Trailing(1))));
        assert!(decode(&[0xff; 64]).is_err());
    }

    #[test]
    fn a_huge_declared_length_is_refused_without_allocating_it() {
        // A Failed response whose string claims u64::MAX bytes.
        let mut bytes = vec![1u8, 8, 1, 0xff];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&bytes).is_err());
    }
}
