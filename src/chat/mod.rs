//! The multi-room chat, on namespace `/chat`, compatible with the reference's page.
//!
//! Client → server: `join room {room}`, `leave room {room}`, `chat message {room, message}`,
//! each optionally acked with `{ok: true}` or `{error}`. Server → room members: the same event
//! names with `{user, room[, message]}`, and `room users {room, users[, count]}` (coalesced:
//! [`room_users`]); in a room of more than `presence_limit` members, joins and leaves are not
//! announced one by one, and `room users` names the first users and counts them all. The
//! joiner alone gets
//! `room history {room, messages: [{user, message}]}`, the room's last messages (kept by the
//! history layer, [`crate::history`], reached through the handle the node wires in). The server sets
//! `user` from the connection, so a client cannot speak as someone else. Each client's events
//! are rate limited ([`rate_limit`]): over the limit an event is refused with `rate limited`, and a
//! client that keeps on is disconnected. With connection state recovery on, a recovered client
//! is welcomed with `recovered: true` and its rooms hear it join again. With `[auth] jwt`, the
//! user name is a claim of the token in the CONNECT auth payload ([`crate::auth`]); a client
//! without a good one is refused with CONNECT_ERROR `{message}` saying why.

mod rate_limit;
mod room_users;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::JwtVerifier;
use crate::history::HistoryHandle;
use crate::socketio::{
    AckSender, ConnectRequest, Event, Namespace, NamespaceBuilder, OnSent, PresenceCause, RecoveryConfig, Sent, Socket,
};
use rate_limit::{RateLimiter, Verdict};
use room_users::RoomUsers;

/// The chat's namespace.
pub const NAMESPACE: &str = "/chat";

/// Chat limits, in characters (Unicode scalar values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    pub max_user_len: usize,
    pub max_room_len: usize,
    pub max_message_len: usize,
    /// Most rooms one connection may be in at once.
    pub max_rooms_per_user: usize,
    /// Messages of a room kept (on the room's two replicas, see `cluster::history`) and sent
    /// to whoever joins; 0: none.
    pub history_len: usize,
    /// Rooms whose history one node keeps; past it the least recently active is forgotten.
    pub history_rooms: usize,
    /// Events (join, leave, message) one client may send per second, on average; 0: no limit.
    pub rate_limit_per_sec: u32,
    /// Events one client may send at once, above the average.
    pub rate_limit_burst: u32,
    /// Events refused for the rate after which the client is disconnected, counted until it
    /// keeps to the rate long enough to earn its burst back; 0: never disconnected.
    pub rate_limit_strikes: u32,
    /// Connection state recovery (socket.io 4.6+): a client whose connection drops gets its
    /// rooms and missed messages back if it reconnects within this many seconds, on any
    /// node; 0: off. With it on, room broadcasts carry an offset as their last argument.
    pub recovery_secs: u64,
    /// The largest room whose joins and leaves are announced to it one by one, and the most
    /// names a `room users` list carries (a list cut short also carries `count`, how many
    /// there are). Past it a room is *big*: announced one by one, N members joining would
    /// cost N²/2 deliveries (50 million for 10,000), and a full list N² bytes per round of
    /// updates. 0: no limit.
    pub presence_limit: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_user_len: 32,
            max_room_len: 64,
            max_message_len: 2000,
            max_rooms_per_user: 100,
            history_len: 50,
            history_rooms: 10_000,
            rate_limit_per_sec: 20,
            rate_limit_burst: 50,
            rate_limit_strikes: 100,
            recovery_secs: 120,
            presence_limit: 1000,
        }
    }
}

/// The user behind a socket, fixed at connect, and the rate limit of its events.
#[derive(Debug)]
struct User {
    name: Arc<str>,
    /// The Engine.IO session's, shared by its connections to the namespace: connecting again
    /// does not refill it. A std lock: held for one arithmetic update, never across an await.
    limiter: Arc<Mutex<RateLimiter>>,
}

/// Builds the `/chat` namespace. `node_id` is reported to clients as the session's owner.
/// With `jwt`, a client's user name is the one its token proves, not the one it gives.
/// Messages are recorded in, and joiners read, `history`.
pub fn namespace(
    node_id: Arc<str>,
    config: ChatConfig,
    jwt: Option<JwtVerifier>,
    history: Arc<HistoryHandle>,
) -> NamespaceBuilder {
    let config = Arc::new(config);
    let c1 = config.clone();
    let c2 = config.clone();
    let c3 = config.clone();
    let c4 = config.clone();
    let (c5, c6, c7) = (config.clone(), config.clone(), config.clone());
    let users = Arc::new(RoomUsers::new(config.presence_limit));
    let (u1, u2, u3, u4, u5) = (users.clone(), users.clone(), users.clone(), users.clone(), users);
    let (h1, h2) = (history.clone(), history);
    let mut builder = NamespaceBuilder::new(NAMESPACE);
    if config.recovery_secs > 0 {
        let max_disconnection = std::time::Duration::from_secs(config.recovery_secs);
        builder = builder.recovery(RecoveryConfig { max_disconnection, ..RecoveryConfig::default() });
    }
    builder
        .on_connect(move |socket, req| {
            let config = &c4;
            let name = connecting_user(req, config, jwt.as_ref())?;
            let now = tokio::time::Instant::now();
            let fresh = || {
                let (per_sec, burst, strikes) =
                    (config.rate_limit_per_sec, config.rate_limit_burst, config.rate_limit_strikes);
                Mutex::new(RateLimiter::new(per_sec, burst, strikes, now))
            };
            let limiter = socket.session().app_state(fresh).unwrap_or_else(|| Arc::new(fresh()));
            // A CONNECT counts as an event: a client cannot refill its limit by connecting again.
            if limiter.lock().unwrap_or_else(|e| e.into_inner()).admit(now) != Verdict::Admit {
                return Err(format!("rate limited: at most {} events a second", config.rate_limit_per_sec));
            }
            socket.set_label(&name);
            socket.set_data(User { name: name.into(), limiter });
            Ok(())
        })
        .on_connected(move |socket| {
            let user = user(socket);
            let recovered = socket.recovered();
            let welcome = json!({
                "user": &*user, "node": &*node_id, "sid": &**socket.session().sid(), "recovered": recovered
            });
            if socket.emit("welcome", vec![welcome]).is_err() {
                tracing::debug!(socket = %socket.id(), "client gone before welcome");
            }
            if recovered {
                // Its rooms are back (and what it missed was replayed): the others saw it
                // leave when its connection dropped, so they see it join again.
                let ns = socket.namespace();
                for room in socket.rooms() {
                    if announced(&c5, ns.room_size(&room)) {
                        ns.emit_to_room(&room, "join room", vec![json!({ "user": &*user, "room": &*room })]);
                    }
                    u1.changed(ns, &room);
                }
            }
        })
        .on(
            "join room",
            rate_limited(&config, move |socket, event, ack| match room_arg(&event, &c1) {
                Ok(room) => join(socket, room, &c1, &u2, &h1, ack),
                Err(error) => respond(socket, ack, Err(error)),
            }),
        )
        .on(
            "leave room",
            rate_limited(&config, move |socket, event, ack| {
                let result = room_arg(&event, &c2).and_then(|room| leave(socket, &room, &c6, &u3));
                respond(socket, ack, result);
            }),
        )
        .on(
            "chat message",
            rate_limited(&config, move |socket, event, ack| match message_args(&event, &c3) {
                Ok((room, message)) => say(socket, &room, &message, &h2, ack),
                Err(error) => respond(socket, ack, Err(error)),
            }),
        )
        .on_disconnect(move |socket, reason| {
            tracing::debug!(socket = %socket.id(), user = %user(socket), reason, "chat user left");
            let user = user(socket);
            for room in socket.rooms() {
                announce_leave(socket.namespace(), &user, &room, &c7, &u4);
            }
        })
        .on_presence(move |ns, room, change| {
            // Users of a lost node leave without a word from it: say it for them, here (one
            // by one if the room was small enough for that before they left).
            if change.cause == PresenceCause::NodeLost && announced(&config, ns.room_size(room) + change.left.len()) {
                for user in &change.left {
                    ns.emit_to_local_room(room, "leave room", vec![json!({ "user": user, "room": room })]);
                }
            }
            u5.changed(ns, room);
        })
}

fn user(socket: &Socket) -> Arc<str> {
    socket.data::<User>().map(|u| u.name.clone()).unwrap_or_else(|| "?".into())
}

/// `handler`, behind the client's rate limit: an event over the limit is answered `rate
/// limited` instead, and a client that keeps on is disconnected.
fn rate_limited(
    config: &ChatConfig,
    handler: impl Fn(&Arc<Socket>, Event, Option<AckSender>) + Send + Sync + 'static,
) -> impl Fn(&Arc<Socket>, Event, Option<AckSender>) + Send + Sync + 'static {
    let limit = config.rate_limit_per_sec;
    move |socket, event, ack| {
        let verdict = match socket.data::<User>() {
            Some(user) => user.limiter.lock().unwrap_or_else(|e| e.into_inner()).admit(tokio::time::Instant::now()),
            None => Verdict::Admit,
        };
        match verdict {
            Verdict::Admit => handler(socket, event, ack),
            Verdict::Refuse => respond(socket, ack, Err(format!("rate limited: at most {limit} events a second"))),
            Verdict::Disconnect => {
                tracing::info!(socket = %socket.id(), user = %user(socket), "persistently over the rate limit, disconnecting");
                respond(socket, ack, Err(format!("rate limited: at most {limit} events a second; disconnected")));
                socket.disconnect();
            }
        }
    }
}

/// The user name: the one the token in CONNECT auth `{token}` proves when the node verifies
/// tokens (what the client says is then ignored), else [`user_name`].
fn connecting_user(req: &ConnectRequest, config: &ChatConfig, jwt: Option<&JwtVerifier>) -> Result<String, String> {
    match jwt {
        Some(jwt) => clean_name(&jwt.user(&req.auth).map_err(|r| r.to_string())?, "user name", config.max_user_len),
        None => user_name(req, config),
    }
}

/// The user name: CONNECT auth `{user}` (v3/v4 clients) or the `user` query parameter (v2).
fn user_name(req: &ConnectRequest, config: &ChatConfig) -> Result<String, String> {
    let name = match req.auth.get("user") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("user must be a string".into()),
        None => req.query_param("user").ok_or("a user name is required: connect with auth {user} or ?user=")?,
    };
    clean_name(name, "user name", config.max_user_len)
}

/// Trims and checks a user or room name: 1..=max characters, none of them a control or an
/// invisible formatting character, so every name shows as what it is: no name that reads as
/// another (a bidi override reversing it, a zero-width space inside it) and none that breaks
/// the lines of a member list.
fn clean_name(raw: &str, what: &str, max: usize) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.chars().count() > max {
        return Err(format!("{what} is longer than {max} characters"));
    }
    if let Some(c) = first_invisible(name) {
        return Err(format!(
            "{what} must not contain control or invisible formatting characters (U+{:04X})",
            u32::from(c)
        ));
    }
    Ok(name.to_owned())
}

/// The first control or invisible formatting character of `name` that does not glue an emoji
/// sequence together.
fn first_invisible(name: &str) -> Option<char> {
    let chars: Vec<char> = name.chars().collect();
    let glue = |i: usize| {
        let before = |n: usize| i.checked_sub(n).map(|j| chars[j]);
        match chars[i] {
            // A zero-width joiner between two emoji (👩‍💻), the first maybe in emoji style (🏳️‍🌈).
            '\u{200D}' => {
                let joined = before(1).is_some_and(is_emoji)
                    || (before(1) == Some('\u{FE0F}') && before(2).is_some_and(is_emoji));
                joined && chars.get(i + 1).copied().is_some_and(is_emoji)
            }
            // The tags of a subdivision flag: 🏴, tag letters, U+E007F.
            '\u{E0020}'..='\u{E007F}' => {
                before(1).is_some_and(|p| p == '\u{1F3F4}' || ('\u{E0020}'..='\u{E007E}').contains(&p))
            }
            _ => false,
        }
    };
    chars.iter().enumerate().find(|&(i, &c)| (c.is_control() || is_format(c)) && !glue(i)).map(|(_, &c)| c)
}

/// Roughly Unicode's Extended_Pictographic: enough to tell an emoji from a letter.
fn is_emoji(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}' | '\u{24C2}' | '\u{3030}'
        | '\u{303D}' | '\u{3297}' | '\u{3299}' | '\u{2194}'..='\u{21AA}' | '\u{231A}'..='\u{23FF}'
        | '\u{25AA}'..='\u{27BF}' | '\u{2934}'..='\u{2935}' | '\u{2B05}'..='\u{2B55}' | '\u{1F000}'..='\u{1FAFF}')
}

/// Unicode's format characters (general category Cf, Unicode 15.1: bidi embeddings, overrides
/// and isolates, zero-width spaces and joiners, the byte order mark, invisible operators, tags)
/// and the line and paragraph separators: a name is a label, not a place for invisible text.
/// The joiners and tags that make one emoji of several are let through ([`first_invisible`]).
const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{2028}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

fn is_format(c: char) -> bool {
    FORMAT_CHARS.iter().any(|&(first, last)| (first..=last).contains(&c))
}

fn object_arg<'a>(event: &'a Event, shape: &str) -> Result<&'a serde_json::Map<String, Value>, String> {
    event.args.first().and_then(Value::as_object).ok_or_else(|| format!("expected {shape}"))
}

fn room_arg(event: &Event, config: &ChatConfig) -> Result<String, String> {
    let obj = object_arg(event, "{room}")?;
    let room = obj.get("room").and_then(Value::as_str).ok_or("expected {room} with a string room")?;
    clean_name(room, "room name", config.max_room_len)
}

fn message_args(event: &Event, config: &ChatConfig) -> Result<(String, String), String> {
    let obj = object_arg(event, "{room, message}")?;
    let room = obj.get("room").and_then(Value::as_str).ok_or("expected {room, message} with a string room")?;
    let message = obj.get("message").and_then(Value::as_str).ok_or("expected {room, message} with a string message")?;
    let room = clean_name(room, "room name", config.max_room_len)?;
    if message.trim().is_empty() {
        return Err("message must not be empty".into());
    }
    if message.chars().count() > config.max_message_len {
        return Err(format!("message is longer than {} characters", config.max_message_len));
    }
    Ok((room, message.to_owned()))
}

/// Joins, then announces the join once every node routes the room's messages here, so
/// the joiner misses nothing sent after its ack.
fn join(
    socket: &Arc<Socket>,
    room: String,
    config: &Arc<ChatConfig>,
    users: &Arc<RoomUsers>,
    history: &Arc<HistoryHandle>,
    ack: Option<AckSender>,
) {
    let ns = socket.namespace().clone();
    if socket.in_room(&room) {
        // Joining twice is harmless: the client just gets the member list again.
        let _ = socket.emit("room users", vec![users.list(&ns, &room)]);
        return respond(socket, ack, Ok(()));
    }
    if socket.rooms().len() >= config.max_rooms_per_user {
        return respond(socket, ack, Err(format!("you are already in {} rooms", config.max_rooms_per_user)));
    }
    let Some(subscribed) = socket.join(&room) else { return respond(socket, ack, Ok(())) };
    let (socket, users, history, config) = (socket.clone(), users.clone(), history.clone(), config.clone());
    // Stopped with the node: by then every session is closed, and a join announced after
    // its user left would be a lie.
    ns.clone().tasks().spawn_until_stopped(async move {
        subscribed.await;
        // What was said before: from the room's replicas, before the joiner's own join line.
        let said = history.history(NAMESPACE, &room).await;
        let messages: Vec<Value> = said.iter().filter_map(|entry| serde_json::from_str(entry).ok()).collect();
        let _ = socket.emit("room history", vec![json!({ "room": &room, "messages": messages })]);
        let user = user(&socket);
        if announced(&config, ns.room_size(&room)) {
            ns.emit_to_room(&room, "join room", vec![json!({ "user": &*user, "room": &room })]);
        }
        users.changed(&ns, &room);
        respond(&socket, ack, Ok(()));
    });
}

fn leave(socket: &Arc<Socket>, room: &str, config: &ChatConfig, users: &Arc<RoomUsers>) -> Result<(), String> {
    if !socket.in_room(room) {
        return Err(format!("you are not in room {room}"));
    }
    let user = user(socket);
    // The leaver hears its own leave, like the joiner hears its join.
    let _ = socket.emit("leave room", vec![json!({ "user": &*user, "room": room })]);
    socket.leave(room);
    announce_leave(socket.namespace(), &user, room, config, users);
    Ok(())
}

/// Tells the room, cluster-wide, that `user` left (unless it is big); each node updates its
/// members' lists. `user` is no longer among the room's members here.
fn announce_leave(ns: &Arc<Namespace>, user: &str, room: &str, config: &ChatConfig, users: &Arc<RoomUsers>) {
    if announced(config, ns.room_size(room) + 1) {
        ns.emit_to_room(room, "leave room", vec![json!({ "user": user, "room": room })]);
    }
    users.changed(ns, room);
}

/// Whether a join or leave is announced to its room one by one: while the room, counting the
/// members who join or leave, has at most `presence_limit` of them. A big room's members see
/// it in the next `room users` (see [`ChatConfig::presence_limit`]). The size is each node's
/// view, as the members' lists are: near the limit, a join made at once on two nodes may be
/// announced on one and not the other.
fn announced(config: &ChatConfig, size: usize) -> bool {
    config.presence_limit == 0 || size <= config.presence_limit
}

/// The sender's answer for a message dropped for a node with members of its room that is too
/// far behind (see [`Sent::Missed`]): some members will not get it, so it is not acked as sent.
const NOT_SENT_EVERYWHERE: &str = "message not delivered to every node (one is overloaded)";

/// Says `message` in `room`. The sender's ack waits until the message has left this node:
/// written to every other node with members of the room (see [`OnSent`]), so once acked, a
/// crash of this process loses it for nobody. If a copy was dropped for an overloaded node, the
/// ack is an error.
fn say(socket: &Arc<Socket>, room: &str, message: &str, history: &HistoryHandle, ack: Option<AckSender>) {
    if !socket.in_room(room) {
        return respond(socket, ack, Err(format!("join room {room} before sending to it")));
    }
    let user = user(socket);
    let ns = socket.namespace();
    let acked = socket.clone();
    // Runs when the broadcast's pushes and the history record's have all left this node.
    let sent = Arc::new(OnSent::new(move |sent| {
        let result = match sent {
            Sent::All => Ok(()),
            Sent::Missed => Err(NOT_SENT_EVERYWHERE.to_owned()),
        };
        respond(&acked, ack, result)
    }));
    ns.emit_to_room_then(
        room,
        "chat message",
        vec![json!({ "user": &*user, "room": room, "message": message })],
        &sent,
    );
    history.record(NAMESPACE, room, said(&user, message), Some(&sent));
}

/// A history entry's text, `{"user":…,"message":…}`: written straight from the strings, not
/// through a JSON value built, printed and dropped for every message.
fn said(user: &str, message: &str) -> String {
    #[derive(Serialize)]
    struct Said<'a> {
        user: &'a str,
        message: &'a str,
    }
    // Cannot fail: two strings.
    serde_json::to_string(&Said { user, message }).unwrap_or_default()
}

/// Answers through the ack when the client asked for one; otherwise errors become `chat error`.
fn respond(socket: &Socket, ack: Option<AckSender>, result: Result<(), String>) {
    let reply = match &result {
        Ok(()) => json!({ "ok": true }),
        Err(error) => json!({ "error": error }),
    };
    let sent = match (ack, result) {
        (Some(ack), _) => ack.send(vec![reply]),
        (None, Err(_)) => socket.emit("chat error", vec![reply]),
        (None, Ok(())) => Ok(()),
    };
    if sent.is_err() {
        tracing::debug!(socket = %socket.id(), "client gone before the reply");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(args: Value) -> Event {
        Event { name: "x".into(), args: vec![args], binary: vec![] }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        let c = ChatConfig::default();
        assert_eq!(clean_name("  café ☕ 日本 ", "room name", c.max_room_len), Ok("café ☕ 日本".into()));
        assert!(clean_name("   ", "room name", 64).unwrap_err().contains("empty"));
        assert!(clean_name(&"é".repeat(65), "room name", 64).unwrap_err().contains("longer"));
        assert!(clean_name(&"é".repeat(64), "room name", 64).is_ok());
        assert!(clean_name("a\u{7}b", "room name", 64).unwrap_err().contains("control"));
    }

    #[test]
    fn names_with_invisible_or_control_characters_are_refused() {
        let refused = [
            "a\u{202E}b", // right-to-left override
            "\u{202A}a",  // left-to-right embedding
            "a\u{2066}b", // left-to-right isolate
            "a\u{2069}b", // pop directional isolate
            "a\u{200B}b", // zero-width space
            "a\u{200D}b", // zero-width joiner, not between emoji
            "a\u{200F}b", // right-to-left mark
            "a\u{2060}b", // word joiner
            "a\u{2064}b", // invisible plus
            "\u{FEFF}ab", // byte order mark
            "a\u{00AD}b", // soft hyphen
            "a\u{2028}b", // line separator
            "a\u{E0041}", // tag latin capital A
            "a\u{1D173}", // musical symbol begin beam
            "a\u{0}b",
            "a\nb",
            "a\u{7F}b",
            "a\u{85}b", // next line (C1)
        ];
        for name in refused {
            let err = clean_name(name, "user name", 32).unwrap_err();
            assert!(err.starts_with("user name must not contain control or invisible"), "{name:?}: {err}");
            assert!(err.contains("(U+"), "{err}");
        }
        assert_eq!(
            clean_name("x\u{202E}y", "room name", 64).unwrap_err(),
            "room name must not contain control or invisible formatting characters (U+202E)"
        );
        // Invisible glue outside an emoji sequence.
        for name in ["😀\u{200D}", "a\u{200D}😀", "😀\u{200D}a", "a\u{FE0F}\u{200D}😀", "\u{E0067}\u{E007F}x"] {
            assert!(clean_name(name, "user name", 32).is_err(), "{name:?}");
        }
        // Right-to-left scripts, combining marks, variation selectors and emoji sequences
        // (joined: families, professions, the rainbow flag; tagged: Scotland's flag) are
        // visible text.
        let flags = ["🏳️‍🌈 pride", "👩‍💻 devs", "👨‍👩‍👧", "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}"];
        for name in ["שלום", "مرحبا", "e\u{301}", "☕\u{FE0F}", "日本 😀", "Zoë-ß_1"].into_iter().chain(flags)
        {
            assert_eq!(clean_name(name, "user name", 32), Ok(name.to_owned()));
        }
    }

    #[test]
    fn user_comes_from_auth_or_query() {
        let c = ChatConfig::default();
        let req = ConnectRequest { auth: json!({"user": "alice"}), query: vec![("user".into(), "mallory".into())] };
        assert_eq!(user_name(&req, &c), Ok("alice".into()));
        let req = ConnectRequest { auth: json!({}), query: vec![("user".into(), "bob".into())] };
        assert_eq!(user_name(&req, &c), Ok("bob".into()));
        let req = ConnectRequest { auth: json!({}), query: vec![] };
        assert!(user_name(&req, &c).unwrap_err().contains("required"));
        let req = ConnectRequest { auth: json!({"user": 5}), query: vec![] };
        assert!(user_name(&req, &c).is_err());
    }

    #[test]
    fn with_jwt_the_user_is_the_tokens_not_the_clients() {
        let c = ChatConfig::default();
        let jwt =
            crate::auth::JwtSettings { secret: Some("a-test-secret-of-32-bytes-length".into()), ..Default::default() };
        let verifier = jwt.verifier().unwrap();
        let token = jwt.mint("alice", 60).unwrap();
        let req = ConnectRequest { auth: json!({"user": "mallory", "token": token}), query: vec![] };
        assert_eq!(connecting_user(&req, &c, Some(&verifier)), Ok("alice".into()));
        let req = ConnectRequest { auth: json!({"user": "mallory"}), query: vec![("user".into(), "m".into())] };
        assert_eq!(
            connecting_user(&req, &c, Some(&verifier)),
            Err("a token is required: connect with auth {token}".into())
        );
        assert_eq!(connecting_user(&req, &c, None), Ok("mallory".into()));
        // The claim is held to the same rules as a name a client gives.
        let long = ConnectRequest { auth: json!({"token": jwt.mint(&"x".repeat(33), 60).unwrap()}), query: vec![] };
        assert!(connecting_user(&long, &c, Some(&verifier)).unwrap_err().contains("longer"));
    }

    #[test]
    fn a_history_entry_is_the_json_object_of_its_user_and_message() {
        for (user, message) in [("alice", "hi"), ("b\"o\\b", "line\nbreak \u{1}"), ("zoë", "⚡ 日本")] {
            let entry = said(user, message);
            assert_eq!(entry, json!({ "user": user, "message": message }).to_string());
            let back: Value = serde_json::from_str(&entry).unwrap();
            assert_eq!((back["user"].as_str(), back["message"].as_str()), (Some(user), Some(message)));
        }
    }

    #[test]
    fn message_arguments_are_validated() {
        let c = ChatConfig { max_message_len: 5, ..ChatConfig::default() };
        assert_eq!(message_args(&event(json!({"room": "r", "message": "hé"})), &c), Ok(("r".into(), "hé".into())));
        assert!(message_args(&event(json!({"room": "r", "message": "123456"})), &c).is_err());
        assert!(message_args(&event(json!({"room": "r", "message": "  "})), &c).is_err());
        assert!(message_args(&event(json!({"room": "r"})), &c).is_err());
        assert!(message_args(&event(json!("r")), &c).is_err());
        assert!(room_arg(&event(json!({"room": 3})), &c).is_err());
    }
}
