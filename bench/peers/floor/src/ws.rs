//! The WebSocket side of the floor: the HTTP upgrade request and RFC 6455 frames, as pure
//! functions over byte buffers ("incomplete" is a value). Server frames go out unmasked and
//! unfragmented; client frames must be masked, at most [`MAX_FRAME`] bytes of payload.

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Largest client frame payload accepted; a bigger one closes the connection (1009).
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest HTTP request head accepted.
pub const MAX_REQUEST: usize = 8 * 1024;

pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// What an HTTP request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Not all of the head yet.
    Incomplete,
    /// An Engine.IO v4 WebSocket upgrade; `consumed` bytes of head.
    Upgrade { key: String, consumed: usize },
    /// Anything else (polling, another path, a malformed or oversized head): answered 400.
    Refused,
}

pub fn parse_request(buf: &[u8]) -> Request {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_REQUEST { Request::Refused } else { Request::Incomplete };
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else { return Request::Refused };
    let mut lines = head.split("\r\n");
    let target = match lines.next().map(|l| l.split(' ').collect::<Vec<_>>()) {
        Some(parts) if parts.len() == 3 && parts[0] == "GET" => parts[1],
        _ => return Request::Refused,
    };
    let Some(query) = target.strip_prefix("/socket.io/?") else { return Request::Refused };
    let params: Vec<&str> = query.split('&').collect();
    if !params.contains(&"EIO=4") || !params.contains(&"transport=websocket") {
        return Request::Refused;
    }
    let (mut key, mut upgrade) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        }
    }
    match key {
        Some(key) if upgrade => Request::Upgrade { key, consumed: end + 4 },
        _ => Request::Refused,
    }
}

/// The 101 answer to an upgrade with `key`.
pub fn accept_response(key: &str, out: &mut Vec<u8>) {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

pub const REFUSED_RESPONSE: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 35\r\nConnection: close\r\n\r\n{\"code\":3,\"message\":\"Bad request\"}\n";

/// One client frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Incomplete,
    /// A frame of `len` bytes in all; its payload, unmasked in place, is `buf[start..len]`.
    Frame {
        fin: bool,
        opcode: u8,
        start: usize,
        len: usize,
    },
    TooBig,
    /// A client frame without a mask (a protocol error).
    Unmasked,
}

/// Decodes the frame at the start of `buf`, unmasking its payload in place.
pub fn decode(buf: &mut [u8]) -> Decoded {
    if buf.len() < 2 {
        return Decoded::Incomplete;
    }
    let (fin, opcode, masked) = (buf[0] & 0x80 != 0, buf[0] & 0x0F, buf[1] & 0x80 != 0);
    if !masked {
        return Decoded::Unmasked;
    }
    let (payload_len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 10),
        126 | 127 => return Decoded::Incomplete,
        n => (u64::from(n), 2),
    };
    if payload_len > MAX_FRAME as u64 {
        return Decoded::TooBig;
    }
    if buf.len() < at + 4 {
        return Decoded::Incomplete;
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let len = at + payload_len as usize;
    if buf.len() < len {
        return Decoded::Incomplete;
    }
    for (i, b) in buf[at..len].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    Decoded::Frame { fin, opcode, start: at, len }
}

/// Appends an unmasked, final server frame.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    #[test]
    fn upgrades_engine_io_websockets_only() {
        let req = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let Request::Upgrade { key, consumed } = parse_request(req) else { panic!() };
        assert_eq!(consumed, req.len());
        let mut out = Vec::new();
        accept_response(&key, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "RFC 6455's example");
        assert_eq!(parse_request(&req[..20]), Request::Incomplete);
        assert_eq!(parse_request(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\r\n"), Request::Refused);
        assert_eq!(parse_request(&[b'a'; MAX_REQUEST + 1]), Request::Refused);
    }

    #[test]
    fn decodes_masked_frames_and_caps_them() {
        let mut f = masked(TEXT, b"40/chat,");
        f.extend_from_slice(&masked(PING, b""));
        let Decoded::Frame { fin, opcode, start, len } = decode(&mut f) else { panic!() };
        assert!(fin && opcode == TEXT);
        assert_eq!(&f[start..len], b"40/chat,");
        assert!(matches!(decode(&mut f[len..]), Decoded::Frame { opcode: PING, .. }));
        let mut big = masked(TEXT, &vec![b'x'; 300]);
        assert!(matches!(decode(&mut big[..100]), Decoded::Incomplete));
        assert!(matches!(decode(&mut big), Decoded::Frame { len: 308, .. }));
        let mut huge = vec![0x81, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(decode(&mut huge), Decoded::TooBig);
        assert_eq!(decode(&mut [0x81, 0x01, b'x']), Decoded::Unmasked);
    }

    #[test]
    fn encodes_all_three_lengths() {
        for n in [0, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            encode(&mut out, TEXT, &vec![b'y'; n]);
            let header = if n < 126 {
                2
            } else if n <= 0xFFFF {
                4
            } else {
                10
            };
            assert_eq!(out.len(), header + n);
            assert_eq!(out[0], 0x81);
        }
    }
}
