//! What one node tells the Admin UI about itself, and the pure diff that turns two views of
//! the cluster's sockets into the UI's events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::engineio::{Engine, TransportKind};
use crate::socketio::{Socket, SocketIo};

/// One node's answer: its `server_stats` and up to `max_sockets` of its sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    pub node: String,
    pub stats: Value,
    /// Serialized as the UI expects them (`SerializedSocket`), sorted by namespace and id.
    pub sockets: Vec<Value>,
}

/// What a node is, for its stats.
pub struct NodeFacts {
    pub node_id: Arc<str>,
    /// The machine's host name, as the reference reports it.
    pub hostname: String,
    pub started: std::time::Instant,
}

/// Most bytes of serialized sockets in one node's snapshot, so that it fits in one RPC frame
/// (4 MiB) whatever `max_sockets` says; past it the node lists fewer sockets.
pub const MAX_SOCKETS_BYTES: usize = 2 * 1024 * 1024;

/// This node's snapshot, now: its stats, and its sockets, sorted by namespace and id, up to
/// `max_sockets` and [`MAX_SOCKETS_BYTES`].
pub fn local(facts: &NodeFacts, io: &SocketIo, engine: &Engine, max_sockets: usize) -> NodeSnapshot {
    let mut namespaces: Vec<_> = io.namespaces().collect();
    namespaces.sort_by(|a, b| a.name().cmp(b.name()));
    let polling =
        engine.sessions_by_transport().iter().find(|(t, _)| *t == TransportKind::Polling).map_or(0, |(_, n)| *n);
    let stats = json!({
        "serverId": &*facts.node_id,
        "hostname": facts.hostname,
        "pid": std::process::id(),
        "uptime": facts.started.elapsed().as_secs_f64(),
        "clientsCount": engine.session_count(),
        "pollingClientsCount": polling,
        "namespaces": namespaces.iter().map(|ns| json!({ "name": ns.name(), "socketsCount": ns.socket_count() })).collect::<Vec<_>>(),
    });
    let mut sockets = Vec::new();
    let mut bytes = 0;
    'namespaces: for ns in &namespaces {
        let mut list = ns.sockets();
        list.sort_by(|a, b| a.id().cmp(b.id()));
        for socket in list {
            let s = serialize(&facts.node_id, &socket);
            bytes += s.to_string().len();
            if sockets.len() >= max_sockets || bytes > MAX_SOCKETS_BYTES {
                break 'namespaces;
            }
            sockets.push(s);
        }
    }
    NodeSnapshot { node: facts.node_id.to_string(), stats, sockets }
}

/// The sockets a node's stats count, all namespaces together.
pub fn socket_count(stats: &Value) -> u64 {
    let namespaces = stats["namespaces"].as_array().map(Vec::as_slice).unwrap_or_default();
    namespaces.iter().filter_map(|ns| ns["socketsCount"].as_u64()).sum()
}

/// A socket as the UI's `SerializedSocket`. Its rooms include its own id (socket.io's
/// private room); `data` names the node it lives on and, in the chat, its user.
pub fn serialize(node_id: &str, socket: &Socket) -> Value {
    let session = socket.session();
    let query = session.query();
    let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
    rooms.sort();
    rooms.insert(0, socket.id().to_string());
    let mut data = Map::new();
    data.insert("node".into(), node_id.into());
    if let Some(user) = socket.label() {
        data.insert("user".into(), user.into());
    }
    let issued = socket.connected_at().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let params: Map<String, Value> = query.params.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
    json!({
        "id": &**socket.id(),
        "clientId": &**session.sid(),
        "transport": session.transport().name(),
        "nsp": socket.namespace().name(),
        "data": data,
        "handshake": {
            "address": query.client_addr.map(|a| a.to_string()).unwrap_or_default(),
            "headers": {},
            "query": params,
            "issued": issued,
            "secure": false,
            "url": crate::node::ENGINE_PATH,
            "xdomain": false,
        },
        "rooms": rooms,
    })
}

/// What the UI was told of a socket: enough to see it change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub node: String,
    pub transport: String,
    pub rooms: BTreeSet<String>,
}

/// Sockets by (namespace, id).
pub type SeenSockets = BTreeMap<(String, String), Seen>;

/// Indexes serialized sockets.
pub fn seen(sockets: &[Value]) -> SeenSockets {
    sockets
        .iter()
        .filter_map(|s| {
            let text = |v: &Value| v.as_str().map(str::to_owned);
            let key = (text(&s["nsp"])?, text(&s["id"])?);
            let rooms = s["rooms"].as_array()?.iter().filter_map(text).collect();
            let seen = Seen { node: text(&s["data"]["node"])?, transport: text(&s["transport"])?, rooms };
            Some((key, seen))
        })
        .collect()
}

/// The UI's events that take it from `before` to `now` (`now_sockets` serialized, for the
/// sockets that are new): `socket_connected`, `socket_updated` (transport), `room_joined`,
/// `room_left`, `socket_disconnected`; each as (event name, arguments).
pub fn diff(before: &SeenSockets, now: &SeenSockets, now_sockets: &[Value]) -> Vec<(&'static str, Vec<Value>)> {
    let mut events = Vec::new();
    let serialized = |nsp: &str, id: &str| now_sockets.iter().find(|s| s["nsp"] == nsp && s["id"] == id).cloned();
    for ((nsp, id), seen) in now {
        match before.get(&(nsp.clone(), id.clone())) {
            None => events.extend(serialized(nsp, id).map(|s| ("socket_connected", vec![s]))),
            Some(old) => {
                if old.transport != seen.transport {
                    events.push(("socket_updated", vec![json!({ "id": id, "nsp": nsp, "transport": seen.transport })]));
                }
                for room in seen.rooms.difference(&old.rooms) {
                    events.push(("room_joined", vec![nsp.as_str().into(), room.as_str().into(), id.as_str().into()]));
                }
                for room in old.rooms.difference(&seen.rooms) {
                    events.push(("room_left", vec![nsp.as_str().into(), room.as_str().into(), id.as_str().into()]));
                }
            }
        }
    }
    for (nsp, id) in before.keys().filter(|k| !now.contains_key(*k)) {
        events.push(("socket_disconnected", vec![nsp.as_str().into(), id.as_str().into(), "disconnected".into()]));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(id: &str, transport: &str, rooms: &[&str]) -> Value {
        let mut all = vec![id];
        all.extend(rooms);
        json!({ "id": id, "nsp": "/chat", "transport": transport, "data": { "node": "n1" }, "rooms": all })
    }

    #[test]
    fn diff_names_every_change() {
        let before = vec![socket("a", "polling", &["lobby"]), socket("b", "websocket", &[])];
        let now = vec![socket("a", "websocket", &["kitchen"]), socket("c", "websocket", &[])];
        let events = diff(&seen(&before), &seen(&now), &now);
        let names: Vec<(&str, Vec<Value>)> = events;
        assert_eq!(
            names,
            vec![
                ("socket_updated", vec![json!({ "id": "a", "nsp": "/chat", "transport": "websocket" })]),
                ("room_joined", vec![json!("/chat"), json!("kitchen"), json!("a")]),
                ("room_left", vec![json!("/chat"), json!("lobby"), json!("a")]),
                ("socket_connected", vec![now[1].clone()]),
                ("socket_disconnected", vec![json!("/chat"), json!("b"), json!("disconnected")]),
            ]
        );
        assert!(diff(&seen(&now), &seen(&now), &now).is_empty());
    }

    #[test]
    fn malformed_sockets_are_skipped() {
        let junk = vec![json!(1), json!({ "id": 3 }), json!({ "id": "x", "nsp": "/", "rooms": "no" })];
        assert!(seen(&junk).is_empty());
    }
}
