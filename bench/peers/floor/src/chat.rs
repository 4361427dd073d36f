//! The Engine.IO v4 / Socket.IO v5 packets of chatbench's `/chat` protocol, as pure functions:
//! what a client's text frame means, and the text of every packet the floor sends. Only text
//! packets on `/chat` (no binary attachments, no other namespace).

use serde_json::Value;

pub const NSP: &str = "/chat";

/// One client packet.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// CONNECT to `/chat`; the trimmed user name of its auth, if any.
    Connect {
        user: Option<String>,
    },
    /// CONNECT to another namespace.
    ConnectElsewhere(String),
    Event {
        ack: Option<u64>,
        name: String,
        arg: Value,
    },
    /// Engine.IO close, or Socket.IO DISCONNECT from `/chat`.
    Close,
    /// Pongs and anything the floor does not act on.
    Ignored,
}

pub fn parse(text: &str) -> Inbound {
    let mut chars = text.chars();
    match chars.next() {
        Some('1') => Inbound::Close,
        Some('4') => socketio(chars.as_str()),
        _ => Inbound::Ignored,
    }
}

fn socketio(text: &str) -> Inbound {
    let Some(ty) = text.chars().next() else { return Inbound::Ignored };
    let rest = &text[1..];
    let (nsp, rest) = match rest.strip_prefix('/') {
        Some(_) => rest.split_once(',').unwrap_or((rest, "")),
        None => ("/", rest),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = rest[..digits].parse().ok();
    let data = &rest[digits..];
    match (ty, nsp == NSP) {
        ('0', true) => {
            let auth: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            let user = auth["user"].as_str().map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned);
            Inbound::Connect { user }
        }
        ('0', false) => Inbound::ConnectElsewhere(nsp.to_owned()),
        ('1', true) => Inbound::Close,
        ('2', true) => match serde_json::from_str::<Value>(data) {
            Ok(Value::Array(mut args)) if args.first().is_some_and(Value::is_string) => {
                let arg = if args.len() > 1 { args.swap_remove(1) } else { Value::Null };
                let Value::String(name) = args.swap_remove(0) else { unreachable!("checked above") };
                Inbound::Event { ack, name, arg }
            }
            _ => Inbound::Ignored,
        },
        _ => Inbound::Ignored,
    }
}

/// Appends `value` as a JSON string.
fn string(out: &mut Vec<u8>, value: &str) {
    serde_json::to_writer(&mut *out, value).expect("writing to a Vec");
}

/// Appends a JSON object whose values are all strings.
fn object(out: &mut Vec<u8>, fields: &[(&str, &str)]) {
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, name);
        out.push(b':');
        string(out, value);
    }
    out.push(b'}');
}

/// An EVENT on `/chat`: `[name, {fields}]`, without ack.
fn event(out: &mut Vec<u8>, name: &str, fields: &[(&str, &str)]) {
    out.extend_from_slice(b"42/chat,[");
    string(out, name);
    out.push(b',');
    object(out, fields);
    out.push(b']');
}

/// The Engine.IO OPEN of a session. The floor pings every `ping_ms` and never times anyone out.
pub fn open(out: &mut Vec<u8>, sid: &str, ping_ms: u64) {
    out.extend_from_slice(b"0{\"sid\":");
    string(out, sid);
    out.extend_from_slice(
        format!(",\"upgrades\":[],\"pingInterval\":{ping_ms},\"pingTimeout\":20000,\"maxPayload\":65536}}").as_bytes(),
    );
}

pub fn connected(out: &mut Vec<u8>, sid: &str) {
    out.extend_from_slice(b"40/chat,");
    object(out, &[("sid", sid)]);
}

pub fn connect_error(out: &mut Vec<u8>, nsp: &str, message: &str) {
    out.extend_from_slice(b"44");
    if nsp != "/" {
        out.extend_from_slice(format!("{nsp},").as_bytes());
    }
    object(out, &[("message", message)]);
}

pub fn welcome(out: &mut Vec<u8>, user: &str, node: &str, sid: &str) {
    event(out, "welcome", &[("user", user), ("node", node), ("sid", sid)]);
}

/// The ack `id`: `{ok: true}`, or `{error}`.
pub fn ack(out: &mut Vec<u8>, id: u64, error: Option<&str>) {
    out.extend_from_slice(format!("43/chat,{id}[").as_bytes());
    match error {
        None => out.extend_from_slice(b"{\"ok\":true}"),
        Some(e) => object(out, &[("error", e)]),
    }
    out.push(b']');
}

/// `join room` / `leave room`: `{user, room}`.
pub fn room_event(out: &mut Vec<u8>, name: &str, user: &str, room: &str) {
    event(out, name, &[("user", user), ("room", room)]);
}

pub fn chat_message(out: &mut Vec<u8>, user: &str, room: &str, message: &str) {
    event(out, "chat message", &[("user", user), ("room", room), ("message", message)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_chatbench_sends() {
        assert_eq!(parse(r#"40/chat,{"user":" al "}"#), Inbound::Connect { user: Some("al".into()) });
        assert_eq!(parse(r#"40/chat,{}"#), Inbound::Connect { user: None });
        assert_eq!(parse("40"), Inbound::ConnectElsewhere("/".into()));
        assert_eq!(
            parse(r#"42/chat,17["join room",{"room":"r"}]"#),
            Inbound::Event { ack: Some(17), name: "join room".into(), arg: json!({"room": "r"}) }
        );
        assert_eq!(
            parse(r#"42/chat,["chat message",{"room":"r","message":"5"}]"#),
            Inbound::Event { ack: None, name: "chat message".into(), arg: json!({"room": "r", "message": "5"}) }
        );
        assert_eq!(parse("3"), Inbound::Ignored);
        assert_eq!(parse("1"), Inbound::Close);
        assert_eq!(parse("41/chat,"), Inbound::Close);
        assert_eq!(parse("42/chat,[1]"), Inbound::Ignored);
    }

    #[test]
    fn writes_what_socket_io_clients_read() {
        let text = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            f(&mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(&|o| ack(o, 3, None)), r#"43/chat,3[{"ok":true}]"#);
        assert_eq!(text(&|o| ack(o, 4, Some("no"))), r#"43/chat,4[{"error":"no"}]"#);
        assert_eq!(
            text(&|o| chat_message(o, "a\"", "r", "1")),
            r#"42/chat,["chat message",{"user":"a\"","room":"r","message":"1"}]"#
        );
        let w = text(&|o| welcome(o, "u", "floor", "s1"));
        let v: Value = serde_json::from_str(&w["42/chat,".len()..]).unwrap();
        assert_eq!(v, json!(["welcome", {"user": "u", "node": "floor", "sid": "s1"}]));
        assert_eq!(text(&|o| connected(o, "s1")), r#"40/chat,{"sid":"s1"}"#);
        assert_eq!(text(&|o| connect_error(o, "/", "no")), r#"44{"message":"no"}"#);
        assert_eq!(text(&|o| connect_error(o, "/chat", "no")), r#"44/chat,{"message":"no"}"#);
        assert_eq!(text(&|o| room_event(o, "join room", "u", "r")), r#"42/chat,["join room",{"user":"u","room":"r"}]"#);
        let o = text(&|o| open(o, "s1", 25000));
        assert!(serde_json::from_str::<Value>(&o[1..]).is_ok(), "{o}");
    }
}
