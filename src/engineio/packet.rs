//! Engine.IO packets: the pure codec for single packets of both protocol revisions.
//!
//! Incoming packets are decoded into [`Packet`]. Outgoing packets are encoded once into a
//! [`Frame`], the form every transport starts from: a text frame already carries its packet-type
//! digit, so a room broadcast builds one frame and hands clones (reference-counted) to every
//! recipient, whatever its transport or protocol revision.

use bytes::{Bytes, BytesMut};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The Engine.IO protocol revision a session speaks, chosen by the `EIO` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProtocolVersion {
    /// Engine.IO 3 (socket.io-client 1.x/2.x): client pings, length-prefixed payloads.
    V3,
    /// Engine.IO 4 (socket.io-client 3.x/4.x): server pings, `\x1e`-separated payloads.
    V4,
}

impl ProtocolVersion {
    /// Parses the `EIO` query value; only the revisions we implement are accepted.
    pub fn from_query(value: &str) -> Option<Self> {
        match value {
            "3" => Some(Self::V3),
            "4" => Some(Self::V4),
            _ => None,
        }
    }
}

/// The packet types of the Engine.IO protocol, with their wire digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    Open = 0,
    Close = 1,
    Ping = 2,
    Pong = 3,
    Message = 4,
    Upgrade = 5,
    Noop = 6,
}

impl PacketType {
    fn from_digit(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        (b'0' + self as u8) as char
    }
}

/// A decoded incoming packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// The handshake, with its JSON data (`sid`, `upgrades`, `pingInterval`, ...). Only servers
    /// send it; the data is kept so that a client (the load generator) can read its session id.
    Open(String),
    Close,
    /// A ping, with its optional data (`probe` during an upgrade).
    Ping(String),
    Pong(String),
    Message(String),
    Binary(Bytes),
    Upgrade,
    Noop,
}

/// Why a packet could not be decoded. The session is closed on any of these, per spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("invalid base64 in binary packet")]
    Base64,
    #[error("malformed payload: {0}")]
    Payload(&'static str),
}

/// Decodes a text packet (`<type digit><data>`), as carried by a WebSocket text frame or one
/// element of a polling payload. `b<base64>` (v4) and `b4<base64>` (v3) are binary messages.
pub fn decode_text(s: &str, protocol: ProtocolVersion) -> Result<Packet, PacketError> {
    let first = *s.as_bytes().first().ok_or(PacketError::Empty)?;
    if first == b'b' {
        let b64 = match protocol {
            ProtocolVersion::V4 => &s[1..],
            ProtocolVersion::V3 => {
                s[1..].strip_prefix('4').ok_or(PacketError::Payload("b64 packet is not a message"))?
            }
        };
        return decode_base64(b64).map(Packet::Binary);
    }
    let ty = PacketType::from_digit(first).ok_or_else(|| PacketError::UnknownType(s.chars().next().unwrap_or('?')))?;
    let data = &s[1..];
    Ok(match ty {
        PacketType::Open => Packet::Open(data.to_owned()),
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(data.to_owned()),
        PacketType::Pong => Packet::Pong(data.to_owned()),
        PacketType::Message => Packet::Message(data.to_owned()),
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Decodes a binary WebSocket frame. v4 frames are raw message data; v3 frames carry the packet
/// type as their first byte.
pub fn decode_binary(data: Bytes, protocol: ProtocolVersion) -> Result<Packet, PacketError> {
    match protocol {
        ProtocolVersion::V4 => Ok(Packet::Binary(data)),
        ProtocolVersion::V3 => match data.first() {
            Some(4) => Ok(Packet::Binary(data.slice(1..))),
            Some(_) => Err(PacketError::Payload("v3 binary frame is not a message")),
            None => Err(PacketError::Empty),
        },
    }
}

pub(crate) fn decode_base64(s: &str) -> Result<Bytes, PacketError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).map(Bytes::from).map_err(|_| PacketError::Base64)
}

pub(crate) fn encode_base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An encoded outgoing packet: what session queues hold and transports write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `<type digit><data>`: identical on every transport and revision.
    Text(Utf8Bytes),
    /// A binary message; each transport adds its own framing.
    Binary(Bytes),
}

impl Frame {
    /// A text frame of packet type `ty` carrying `data`.
    pub fn text(ty: PacketType, data: &str) -> Self {
        let mut s = String::with_capacity(1 + data.len());
        s.push(ty.digit());
        s.push_str(data);
        Frame::Text(s.into())
    }

    /// A MESSAGE packet with text data.
    pub fn message(data: &str) -> Self {
        Self::text(PacketType::Message, data)
    }

    /// A packet with no data.
    pub fn control(ty: PacketType) -> Self {
        Frame::Text(Utf8Bytes::from_static(match ty {
            PacketType::Open => "0",
            PacketType::Close => "1",
            PacketType::Ping => "2",
            PacketType::Pong => "3",
            PacketType::Message => "4",
            PacketType::Upgrade => "5",
            PacketType::Noop => "6",
        }))
    }

    /// Bytes this frame adds to a payload, used to bound batches.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The WebSocket message that carries this frame, for servers and clients alike: a text
    /// frame as it is; a binary frame raw in v4, after its packet type byte in v3.
    pub fn into_websocket(self, protocol: ProtocolVersion) -> Message {
        match (self, protocol) {
            (Frame::Text(t), _) => Message::Text(t),
            (Frame::Binary(b), ProtocolVersion::V4) => Message::Binary(b),
            (Frame::Binary(b), ProtocolVersion::V3) => {
                let mut out = BytesMut::with_capacity(b.len() + 1);
                out.extend_from_slice(&[PacketType::Message as u8]);
                out.extend_from_slice(&b);
                Message::Binary(out.freeze())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtocolVersion::*;

    #[test]
    fn decodes_every_text_type() {
        assert_eq!(decode_text(r#"0{"sid":"a"}"#, V4), Ok(Packet::Open(r#"{"sid":"a"}"#.into())));
        assert_eq!(decode_text("1", V4), Ok(Packet::Close));
        assert_eq!(decode_text("2probe", V4), Ok(Packet::Ping("probe".into())));
        assert_eq!(decode_text("3", V4), Ok(Packet::Pong(String::new())));
        assert_eq!(decode_text("4héllo ☕", V4), Ok(Packet::Message("héllo ☕".into())));
        assert_eq!(decode_text("5", V3), Ok(Packet::Upgrade));
        assert_eq!(decode_text("6", V3), Ok(Packet::Noop));
    }

    #[test]
    fn decodes_base64_binary_per_revision() {
        let want = Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]));
        assert_eq!(decode_text("bAQIDBA==", V4), Ok(want.clone()));
        assert_eq!(decode_text("b4AQIDBA==", V3), Ok(want));
        assert_eq!(decode_text("b!!", V4), Err(PacketError::Base64));
    }

    #[test]
    fn rejects_malformed_packets() {
        assert_eq!(decode_text("", V4), Err(PacketError::Empty));
        assert_eq!(decode_text("abc", V4), Err(PacketError::UnknownType('a')));
        assert_eq!(decode_text("9", V4), Err(PacketError::UnknownType('9')));
        assert_eq!(decode_text("é", V4), Err(PacketError::UnknownType('é')));
        assert!(decode_binary(Bytes::from_static(&[2, 1]), V3).is_err());
        assert!(decode_binary(Bytes::new(), V3).is_err());
    }

    #[test]
    fn binary_frames_per_revision() {
        let data = Bytes::from_static(&[4, 9, 8]);
        assert_eq!(decode_binary(data.clone(), V4), Ok(Packet::Binary(data)));
        assert_eq!(decode_binary(Bytes::from_static(&[4, 9, 8]), V3), Ok(Packet::Binary(Bytes::from_static(&[9, 8]))));
        for protocol in [V3, V4] {
            let Message::Binary(framed) = Frame::Binary(Bytes::from_static(&[9, 8])).into_websocket(protocol) else {
                panic!("a binary frame travels as a binary message")
            };
            assert_eq!(decode_binary(framed, protocol), Ok(Packet::Binary(Bytes::from_static(&[9, 8]))));
        }
        assert_eq!(Frame::message("hi").into_websocket(V3), Message::text("4hi"));
    }

    #[test]
    fn frames_carry_their_type_digit() {
        assert_eq!(Frame::message("hi"), Frame::Text("4hi".into()));
        assert_eq!(Frame::control(PacketType::Noop), Frame::Text("6".into()));
        assert_eq!(Frame::text(PacketType::Pong, "probe"), Frame::Text("3probe".into()));
    }
}
