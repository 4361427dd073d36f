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
    /// Keep this session, dropped by its client, for recovery; answered `Parked` once the
    /// receiver is subscribed to its rooms.
    Park { nsp: String, state: ParkedWire },
    /// Is this session parked with you (and is `offset` among its broadcasts)?
    FindParked { nsp: String, pid: String, offset: Option<String> },
    /// Give up this parked session: its broadcasts after `offset`.
    TakeParked { nsp: String, pid: String, offset: Option<String> },
    /// The rest of a hand-over: broadcasts the sender buffered for the session after the
    /// state it sent (they follow `after`, the last broadcast of that state). Always sent, even empty:
    /// the session is complete with it. `taken`: a client took the session from the sender
    /// meanwhile, so the receiver's copy is stale and dropped.
    ParkTail { nsp: String, pid: String, after: Option<String>, packets: Vec<WirePacket>, taken: bool },
    /// For the Admin UI: JSON (see `admin`), as bincode cannot carry `serde_json::Value`.
    Admin(String),
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
    /// Whether the session is parked with the answering node.
    Parked(bool),
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
    /// `offset` is its recovery offset.
    Publish { nsp: String, room: String, offset: Option<String>, frames: Vec<WsFrame> },
    /// `node`'s local members of a room are now `labels` (empty: none), as of `version`.
    Presence { node: String, nsp: String, room: String, labels: Vec<String>, version: (u64, u64) },
    /// An entry for the history of a room the receiver is a replica of.
    Record { nsp: String, room: String, entry: HistoryEntry },
}

/// A room broadcast for a parked session: its offset and frames.
pub type WirePacket = (String, Vec<WsFrame>);

/// A parked session (see `socketio::recovery`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedWire {
    pub pid: String,
    pub sid: String,
    pub rooms: Vec<String>,
    pub packets: Vec<WirePacket>,
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
                offset: Some("abc-1f".into()),
                frames: vec![WsFrame::Text("42/chat,[\"x\"]".into())],
            }),
            RpcFrame::Request {
                id: 10,
                body: Request::Park {
                    nsp: "/chat".into(),
                    state: ParkedWire {
                        pid: "p".into(),
                        sid: "s".into(),
                        rooms: vec!["r".into()],
                        packets: vec![("o1".into(), vec![WsFrame::Text("42/chat,[\"x\",\"o1\"]".into())])],
                    },
                },
            },
            RpcFrame::Response { id: 10, body: Response::Taken(Some(vec![("o2".into(), vec![])])) },
            RpcFrame::Response { id: 11, body: Response::Found(Some(("s".into(), vec!["r".into()]))) },
            RpcFrame::Request {
                id: 12,
                body: Request::ParkTail {
                    nsp: "/chat".into(),
                    pid: "p".into(),
                    after: Some("o1".into()),
                    packets: vec![],
                    taken: false,
                },
            },
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
