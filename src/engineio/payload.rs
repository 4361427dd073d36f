//! Polling payloads: the pure codec for the bodies of long-polling requests and responses.
//!
//! v4 joins packets with the record separator `\x1e` and base64-encodes binary packets.
//! v3 prefixes each packet with its length: in UTF-16 code units for text payloads (as
//! JavaScript counts), in bytes for binary payloads (sent only to clients that support binary).

use bytes::{BufMut, Bytes, BytesMut};

use super::packet::{
    decode_base64, decode_binary, decode_text, encode_base64, Frame, Packet, PacketError, ProtocolVersion,
};

const SEPARATOR: char = '\x1e';

/// How a polling response body must be written for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadFormat {
    pub protocol: ProtocolVersion,
    /// v3 only: the client accepts `application/octet-stream` payloads (no `b64=1`).
    pub supports_binary: bool,
}

/// An encoded polling response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPayload {
    pub body: Bytes,
    pub binary: bool,
}

impl EncodedPayload {
    pub fn content_type(&self) -> super::request::ContentType {
        if self.binary {
            super::request::ContentType::Binary
        } else {
            super::request::ContentType::Text
        }
    }
}

/// Encodes frames into a polling response body.
pub fn encode(frames: &[Frame], format: PayloadFormat) -> EncodedPayload {
    match format.protocol {
        ProtocolVersion::V4 => EncodedPayload { body: encode_v4(frames).into(), binary: false },
        ProtocolVersion::V3 => {
            let has_binary = frames.iter().any(|f| matches!(f, Frame::Binary(_)));
            if format.supports_binary && has_binary {
                EncodedPayload { body: encode_v3_binary(frames), binary: true }
            } else {
                EncodedPayload { body: encode_v3_text(frames).into(), binary: false }
            }
        }
    }
}

fn encode_v4(frames: &[Frame]) -> String {
    let mut out = String::with_capacity(frames.iter().map(|f| f.len() + 1).sum());
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        match frame {
            Frame::Text(t) => out.push_str(t.as_str()),
            Frame::Binary(b) => {
                out.push('b');
                out.push_str(&encode_base64(b));
            }
        }
    }
    out
}

/// The v3 text payload; also the body of JSONP responses.
pub fn encode_v3_text(frames: &[Frame]) -> String {
    let mut out = String::new();
    for frame in frames {
        let packet = match frame {
            Frame::Text(t) => std::borrow::Cow::Borrowed(t.as_str()),
            Frame::Binary(b) => std::borrow::Cow::Owned(format!("b4{}", encode_base64(b))),
        };
        out.push_str(&utf16_len(&packet).to_string());
        out.push(':');
        out.push_str(&packet);
    }
    out
}

fn encode_v3_binary(frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::new();
    for frame in frames {
        let (kind, len) = match frame {
            Frame::Text(t) => (0u8, t.len()),
            Frame::Binary(b) => (1u8, b.len() + 1),
        };
        out.put_u8(kind);
        out.extend(len.to_string().bytes().map(|d| d - b'0'));
        out.put_u8(0xff);
        match frame {
            Frame::Text(t) => out.extend_from_slice(t.as_bytes()),
            Frame::Binary(b) => {
                out.put_u8(4);
                out.extend_from_slice(b);
            }
        }
    }
    out.freeze()
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Decodes a polling request body. `binary` is true for `application/octet-stream` bodies.
pub fn decode(body: &[u8], protocol: ProtocolVersion, binary: bool) -> Result<Vec<Packet>, PacketError> {
    match (protocol, binary) {
        (ProtocolVersion::V3, true) => decode_v3_binary(body),
        _ => {
            let text = std::str::from_utf8(body).map_err(|_| PacketError::Payload("payload is not UTF-8"))?;
            match protocol {
                ProtocolVersion::V4 => text.split(SEPARATOR).map(|p| decode_text(p, protocol)).collect(),
                ProtocolVersion::V3 => decode_v3_text(text),
            }
        }
    }
}

fn decode_v3_text(mut text: &str) -> Result<Vec<Packet>, PacketError> {
    let mut packets = Vec::new();
    if text.is_empty() {
        return Err(PacketError::Empty);
    }
    while !text.is_empty() {
        let colon = text.find(':').ok_or(PacketError::Payload("missing length prefix"))?;
        let units: usize = text[..colon].parse().map_err(|_| PacketError::Payload("bad length prefix"))?;
        let rest = &text[colon + 1..];
        let mut taken = 0;
        let mut end = 0;
        for c in rest.chars() {
            if taken >= units {
                break;
            }
            taken += c.len_utf16();
            end += c.len_utf8();
        }
        if taken != units {
            return Err(PacketError::Payload("length prefix exceeds payload"));
        }
        packets.push(decode_text(&rest[..end], ProtocolVersion::V3)?);
        text = &rest[end..];
    }
    Ok(packets)
}

fn decode_v3_binary(mut body: &[u8]) -> Result<Vec<Packet>, PacketError> {
    let mut packets = Vec::new();
    if body.is_empty() {
        return Err(PacketError::Empty);
    }
    while !body.is_empty() {
        let kind = body[0];
        // The terminator follows the kind byte; a kind byte of 0xff is not a terminator.
        let end = body[1..]
            .iter()
            .position(|&b| b == 0xff)
            .map(|i| i + 1)
            .ok_or(PacketError::Payload("missing length terminator"))?;
        let digits = &body[1..end];
        if digits.is_empty() || digits.len() > 10 || digits.iter().any(|&d| d > 9) {
            return Err(PacketError::Payload("bad binary length"));
        }
        let len = digits.iter().fold(0usize, |n, &d| n * 10 + d as usize);
        let data = body.get(end + 1..end + 1 + len).ok_or(PacketError::Payload("length exceeds payload"))?;
        packets.push(match kind {
            0 => decode_text(
                std::str::from_utf8(data).map_err(|_| PacketError::Payload("packet is not UTF-8"))?,
                ProtocolVersion::V3,
            )?,
            1 => decode_binary(Bytes::copy_from_slice(data), ProtocolVersion::V3)?,
            _ => return Err(PacketError::Payload("bad binary packet kind")),
        });
        body = &body[end + 1 + len..];
    }
    Ok(packets)
}

/// Decodes the body of a v3 JSONP POST (`d=<escaped payload>`, form-encoded).
pub fn decode_jsonp(body: &[u8]) -> Result<Vec<Packet>, PacketError> {
    let data = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "d")
        .map(|(_, v)| v.into_owned())
        .ok_or(PacketError::Payload("JSONP body has no d field"))?;
    // The client escapes newlines as `\n` and literal `\n` as `\\n`.
    let mut unescaped = String::with_capacity(data.len());
    let mut chars = data.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some('\\')) => {
                chars.next();
                if chars.peek() == Some(&'n') {
                    chars.next();
                    unescaped.push_str("\\n");
                } else {
                    unescaped.push_str("\\\\");
                }
            }
            ('\\', Some('n')) => {
                chars.next();
                unescaped.push('\n');
            }
            _ => unescaped.push(c),
        }
    }
    decode_v3_text(&unescaped)
}

/// Wraps a v3 text payload into a JSONP response script for callback index `j`.
pub fn encode_jsonp(frames: &[Frame], j: u32) -> Bytes {
    let json = serde_json::to_string(&encode_v3_text(frames)).expect("strings serialize");
    let json = json.replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029");
    format!("___eio[{j}]({json});").into()
}

/// Decodes a base64 string; re-exported for transports that carry base64 outside payloads.
pub fn base64_decode(s: &str) -> Result<Bytes, PacketError> {
    decode_base64(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::packet::PacketType;
    use ProtocolVersion::*;

    const F4: PayloadFormat = PayloadFormat { protocol: ProtocolVersion::V4, supports_binary: false };
    const F3_B64: PayloadFormat = PayloadFormat { protocol: ProtocolVersion::V3, supports_binary: false };
    const F3_BIN: PayloadFormat = PayloadFormat { protocol: ProtocolVersion::V3, supports_binary: true };

    fn frames() -> Vec<Frame> {
        vec![
            Frame::message("hello €"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Frame::control(PacketType::Ping),
        ]
    }

    #[test]
    fn v4_round_trip() {
        let encoded = encode(&frames(), F4);
        assert_eq!(&encoded.body[..], "4hello €\x1ebAQIDBA==\x1e2".as_bytes());
        assert!(!encoded.binary);
        let decoded = decode(&encoded.body, V4, false).unwrap();
        assert_eq!(
            decoded,
            vec![
                Packet::Message("hello €".into()),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
                Packet::Ping(String::new())
            ]
        );
    }

    #[test]
    fn v3_text_counts_utf16_units() {
        // The spec's own example: `€` is one UTF-16 unit, three UTF-8 bytes.
        assert_eq!(encode_v3_text(&[Frame::message("€")]), "2:4€");
        // An emoji is two UTF-16 units.
        assert_eq!(encode_v3_text(&[Frame::message("☕😀")]), "4:4☕😀");
        let decoded = decode("4:4☕😀2:4€1:2".as_bytes(), V3, false).unwrap();
        assert_eq!(
            decoded,
            vec![Packet::Message("☕😀".into()), Packet::Message("€".into()), Packet::Ping(String::new())]
        );
    }

    #[test]
    fn v3_text_payload_base64_encodes_binary() {
        let encoded = encode(&frames(), F3_B64);
        assert!(!encoded.binary);
        assert_eq!(&encoded.body[..], "8:4hello €10:b4AQIDBA==1:2".as_bytes());
        assert_eq!(decode(&encoded.body, V3, false).unwrap().len(), 3);
    }

    #[test]
    fn v3_binary_round_trip() {
        let encoded = encode(&frames(), F3_BIN);
        assert!(encoded.binary);
        // "4hello €" is 10 UTF-8 bytes; the binary packet is 4 data bytes plus its type byte.
        assert_eq!(&encoded.body[..3], &[0, 1, 0]);
        assert_eq!(encoded.body[3], 0xff);
        let decoded = decode(&encoded.body, V3, true).unwrap();
        assert_eq!(decoded[1], Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])));
        assert_eq!(decoded.len(), 3);
    }

    #[test]
    fn v3_without_binary_stays_text_even_when_supported() {
        let encoded = encode(&[Frame::message("x")], F3_BIN);
        assert!(!encoded.binary);
        assert_eq!(&encoded.body[..], b"2:4x");
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(decode(b"abc", V4, false).is_err());
        assert!(decode(b"4a\x1e", V4, false).is_err());
        assert!(decode(&[0xff, 0xfe], V4, false).is_err());
        assert!(decode(b"5:4ab", V3, false).is_err());
        assert!(decode(b"x:4ab", V3, false).is_err());
        assert!(decode(b"", V3, false).is_err());
        assert!(decode(&[0, 9, 9, 9, 0xff, b'4'], V3, true).is_err());
        assert!(decode(&[0, 1, 2], V3, true).is_err());
        assert!(decode(&[7, 1, 0xff, b'4'], V3, true).is_err());
        assert!(decode(&[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0xff], V3, true).is_err());
        // A body that starts with the terminator byte once made the decoder slice [1..0].
        assert!(decode(&[0xff], V3, true).is_err());
        assert!(decode(&[0xff, 0xff, b'4'], V3, true).is_err());
    }

    #[test]
    fn jsonp_round_trip() {
        let script = encode_jsonp(&[Frame::message("a\"b\nc")], 3);
        assert_eq!(&script[..], br#"___eio[3]("6:4a\"b\nc");"#);
        let body = b"d=7%3A4a%5Cnb%5C%5Cnc";
        assert_eq!(decode_jsonp(body).unwrap(), vec![Packet::Message("a\nb\\nc".into())]);
        assert!(decode_jsonp(b"x=1").is_err());
    }
}
