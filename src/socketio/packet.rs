//! Socket.IO packets: the pure codec for protocol revisions 4 (Engine.IO 3 clients) and 5.
//!
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]`. Binary attachments travel as
//! separate Engine.IO messages after the packet; placeholders stay in the JSON, validated to
//! point at an attachment that exists.

use serde_json::Value;

/// The Socket.IO protocol revision, fixed by the Engine.IO revision of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// Protocol 4 (socket.io 2.x): namespaces may carry a `?query`, errors are bare strings.
    V4,
    /// Protocol 5 (socket.io 3.x/4.x): CONNECT carries an auth object.
    V5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    /// `ERROR` in revision 4.
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketType {
    fn from_digit(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub ty: PacketType,
    pub nsp: String,
    pub id: Option<u64>,
    pub data: Option<Value>,
    /// Number of binary attachments that follow (binary types only).
    pub attachments: usize,
    /// Revision 4: the query string a CONNECT carried after the namespace.
    pub query: Option<String>,
}

impl Packet {
    pub fn new(ty: PacketType, nsp: &str, data: Option<Value>) -> Self {
        Self { ty, nsp: nsp.to_owned(), id: None, data, attachments: 0, query: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("invalid attachment count")]
    Attachments,
    #[error("too many attachments ({0})")]
    TooManyAttachments(usize),
    #[error("invalid ack id")]
    AckId,
    #[error("invalid JSON payload")]
    Json,
    #[error("invalid payload for this packet type")]
    InvalidPayload,
    #[error("placeholder refers to a missing attachment")]
    Placeholder,
}

/// Event names a client may not emit: the library uses them itself.
const RESERVED_EVENTS: &[&str] =
    &["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];

/// Decodes a text packet. `max_attachments` bounds what a client may make the server buffer.
pub fn decode(s: &str, revision: Revision, max_attachments: usize) -> Result<Packet, DecodeError> {
    let bytes = s.as_bytes();
    let ty = PacketType::from_digit(*bytes.first().ok_or(DecodeError::Empty)?).ok_or(DecodeError::UnknownType)?;
    let mut i = 1;
    let mut attachments = 0;
    if ty.is_binary() {
        let dash = s[i..].find('-').ok_or(DecodeError::Attachments)? + i;
        attachments = s[i..dash].parse().map_err(|_| DecodeError::Attachments)?;
        if attachments > max_attachments {
            return Err(DecodeError::TooManyAttachments(attachments));
        }
        i = dash + 1;
    }
    let mut nsp = "/".to_owned();
    let mut query = None;
    if bytes.get(i) == Some(&b'/') {
        let end = s[i..].find(',').map_or(s.len(), |c| c + i);
        let full = &s[i..end];
        match (revision, full.split_once('?')) {
            (Revision::V4, Some((name, q))) => {
                nsp = name.to_owned();
                query = Some(q.to_owned());
            }
            _ => nsp = full.to_owned(),
        }
        i = (end + 1).min(s.len());
    }
    let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let id = if digits > 0 {
        let id = s[i..i + digits].parse().map_err(|_| DecodeError::AckId)?;
        i += digits;
        Some(id)
    } else {
        None
    };
    let data =
        if i < s.len() { Some(serde_json::from_str::<Value>(&s[i..]).map_err(|_| DecodeError::Json)?) } else { None };
    let packet = Packet { ty, nsp, id, data, attachments, query };
    validate(&packet, revision)?;
    Ok(packet)
}

fn validate(p: &Packet, revision: Revision) -> Result<(), DecodeError> {
    let ok = match (p.ty, &p.data) {
        (PacketType::Connect, None) => true,
        (PacketType::Connect, Some(Value::Object(_))) => revision == Revision::V5,
        (PacketType::Connect, Some(_)) => false,
        (PacketType::Disconnect, data) => data.is_none(),
        (PacketType::ConnectError, data) => {
            revision == Revision::V4 || matches!(data, Some(Value::String(_) | Value::Object(_)))
        }
        (PacketType::Event | PacketType::BinaryEvent, Some(Value::Array(items))) => match items.first() {
            Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
            _ => false,
        },
        (PacketType::Ack | PacketType::BinaryAck, Some(Value::Array(_))) => p.id.is_some(),
        _ => false,
    };
    if !ok {
        return Err(DecodeError::InvalidPayload);
    }
    if p.ty.is_binary() {
        if let Some(data) = &p.data {
            check_placeholders(data, p.attachments)?;
        }
    }
    Ok(())
}

/// Every placeholder, at any depth, must name an attachment that the packet announced.
fn check_placeholders(value: &Value, attachments: usize) -> Result<(), DecodeError> {
    match value {
        Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
            match map.get("num").and_then(Value::as_u64) {
                Some(n) if (n as usize) < attachments => Ok(()),
                _ => Err(DecodeError::Placeholder),
            }
        }
        Value::Object(map) => map.values().try_for_each(|v| check_placeholders(v, attachments)),
        Value::Array(items) => items.iter().try_for_each(|v| check_placeholders(v, attachments)),
        _ => Ok(()),
    }
}

/// Encodes a packet as text. Attachments, if any, are sent separately after it.
pub fn encode(p: &Packet) -> String {
    let mut out = String::with_capacity(16);
    out.push((b'0' + p.ty as u8) as char);
    if p.ty.is_binary() {
        out.push_str(&p.attachments.to_string());
        out.push('-');
    }
    if p.nsp != "/" {
        out.push_str(&p.nsp);
        out.push(',');
    }
    if let Some(id) = p.id {
        out.push_str(&id.to_string());
    }
    if let Some(data) = &p.data {
        // Serializing a Value cannot fail: its map keys are strings.
        out.push_str(&serde_json::to_string(data).expect("a JSON value serializes"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use Revision::*;

    fn round_trip(s: &str, rev: Revision) -> Packet {
        let p = decode(s, rev, 10).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(encode(&p), s, "re-encoding {s}");
        p
    }

    #[test]
    fn decodes_the_spec_examples() {
        let p = round_trip("0", V5);
        assert_eq!((p.ty, p.nsp.as_str(), p.data), (PacketType::Connect, "/", None));
        let p = round_trip(r#"0/admin,{"token":"123"}"#, V5);
        assert_eq!(p.data, Some(json!({"token": "123"})));
        let p = round_trip(r#"2["hello",1]"#, V5);
        assert_eq!(p.data, Some(json!(["hello", 1])));
        let p = round_trip(r#"2/admin,456["project:delete",123]"#, V5);
        assert_eq!((p.nsp.as_str(), p.id), ("/admin", Some(456)));
        let p = round_trip(r#"3/admin,456[]"#, V5);
        assert_eq!(p.ty, PacketType::Ack);
        let p = round_trip(r#"51-["hello",{"_placeholder":true,"num":0}]"#, V5);
        assert_eq!(p.attachments, 1);
        let p = round_trip(r#"61-/admin,456[{"_placeholder":true,"num":0}]"#, V5);
        assert_eq!((p.ty, p.id), (PacketType::BinaryAck, Some(456)));
        round_trip(r#"4/admin,{"message":"Not authorized"}"#, V5);
        round_trip("1/admin,", V5);
    }

    #[test]
    fn revision_4_namespace_queries_and_string_errors() {
        let p = decode("0/chat?user=al%C3%AFce&x=1,", V4, 10).unwrap();
        assert_eq!(p.nsp, "/chat");
        assert_eq!(p.query.as_deref(), Some("user=al%C3%AFce&x=1"));
        assert_eq!(encode(&Packet::new(PacketType::ConnectError, "/chat", Some(json!("nope")))), r#"4/chat,"nope""#);
        assert!(decode(r#"0{"token":1}"#, V4, 10).is_err());
    }

    #[test]
    fn nested_placeholders_are_checked() {
        assert!(decode(r#"52-["e",{"a":[{"_placeholder":true,"num":1}]}]"#, V5, 10).is_ok());
        assert_eq!(decode(r#"51-["e",{"a":[{"_placeholder":true,"num":1}]}]"#, V5, 10), Err(DecodeError::Placeholder));
        assert_eq!(decode(r#"51-["e",{"_placeholder":true}]"#, V5, 10), Err(DecodeError::Placeholder));
    }

    #[test]
    fn rejects_what_the_suite_rejects() {
        assert_eq!(decode("abc", V5, 10), Err(DecodeError::UnknownType));
        assert_eq!(decode("", V5, 10), Err(DecodeError::Empty));
        assert_eq!(decode("2{}", V5, 10), Err(DecodeError::InvalidPayload));
        assert_eq!(decode(r#"2abc["message-with-ack",1]"#, V5, 10), Err(DecodeError::Json));
        assert_eq!(decode("2[]", V5, 10), Err(DecodeError::InvalidPayload));
        assert_eq!(decode("2[1]", V5, 10), Err(DecodeError::InvalidPayload));
        assert_eq!(decode(r#"2["disconnect"]"#, V5, 10), Err(DecodeError::InvalidPayload));
        assert_eq!(decode("1/a,{}", V5, 10), Err(DecodeError::InvalidPayload));
        assert_eq!(decode("3[]", V5, 10), Err(DecodeError::InvalidPayload));
        assert_eq!(decode(r#"0"x""#, V5, 10), Err(DecodeError::InvalidPayload));
        assert_eq!(decode(r#"5["e"]"#, V5, 10), Err(DecodeError::Attachments));
        assert_eq!(decode(r#"5x-["e"]"#, V5, 10), Err(DecodeError::Attachments));
        assert_eq!(decode(r#"511-["e"]"#, V5, 10), Err(DecodeError::TooManyAttachments(11)));
        assert_eq!(decode(r#"299999999999999999999["e"]"#, V5, 10), Err(DecodeError::AckId));
        assert_eq!(decode(r#"2["e""#, V5, 10), Err(DecodeError::Json));
    }

    #[test]
    fn unicode_namespaces_and_data_survive() {
        let p = round_trip(r#"2/chat,["chat message",{"room":"café ☕ 日本","message":"😀"}]"#, V5);
        assert_eq!(p.data.unwrap()[1]["room"], "café ☕ 日本");
    }
}
