//! Transport-independent Engine.IO requests and responses.
//!
//! The HTTP layer turns a hyper request into an [`EngineRequest`] (plain data, serializable), and
//! the engine answers with an [`EngineResponse`]. Keeping hyper out of the engine is what lets a
//! request received by one node be carried to the session's owner node and answered there.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::EngineError;
use super::packet::ProtocolVersion;

/// The HTTP method of an Engine.IO request, as far as the protocol cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// The transports of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransportKind {
    Polling,
    Websocket,
}

impl TransportKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Polling => "polling",
            Self::Websocket => "websocket",
        }
    }
}

/// Most application parameters a handshake query may carry (a chat client sends one, `user`).
pub const MAX_SESSION_PARAMS: usize = 16;
/// Most bytes of application parameters (names and values, decoded) a handshake may carry.
pub const MAX_SESSION_QUERY_BYTES: usize = 2048;

/// The query parameters of an Engine.IO request, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineQuery {
    pub protocol: ProtocolVersion,
    pub transport: TransportKind,
    pub sid: Option<String>,
    /// v3: `b64=1` asks for base64 instead of binary payloads.
    pub b64: bool,
    /// v3: JSONP callback index (`j=`).
    pub jsonp: Option<u32>,
    /// Every parameter as received, for the application (e.g. the v2 chat's `user`).
    pub params: Vec<(String, String)>,
    /// Not a parameter: the address the request came from, set by the HTTP layer and carried
    /// with the query to the session's owner, which counts sessions per client address.
    pub client_addr: Option<std::net::IpAddr>,
    /// Not a parameter: a local WebSocket's socket, which senders may write to (see
    /// `direct`); set by the HTTP layer, never carried to another node.
    #[serde(skip)]
    pub direct: Option<super::direct::Direct>,
}

impl EngineQuery {
    /// Parses and validates a raw query string, as the reference server checks it.
    pub fn parse(query: &str) -> Result<Self, EngineError> {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let protocol =
            get("EIO").and_then(ProtocolVersion::from_query).ok_or(EngineError::UnsupportedProtocolVersion)?;
        let transport = match get("transport") {
            Some("polling") => TransportKind::Polling,
            Some("websocket") => TransportKind::Websocket,
            _ => return Err(EngineError::UnknownTransport),
        };
        let sid = get("sid").map(str::to_owned);
        let b64 = get("b64").is_some_and(|v| !v.is_empty() && v != "0");
        let jsonp = match get("j") {
            Some(j) if protocol == ProtocolVersion::V3 => {
                Some(j.parse().map_err(|_| EngineError::BadRequest("bad j"))?)
            }
            _ => None,
        };
        Ok(Self { protocol, transport, sid, b64, jsonp, params, client_addr: None, direct: None })
    }

    /// The query a session keeps for its lifetime: the parsed fields and the application's
    /// parameters only (the protocol's own, `EIO`, `transport`, `sid`, `b64`, `j` and the
    /// cache-buster `t`, are dropped), refused past [`MAX_SESSION_PARAMS`] parameters or
    /// [`MAX_SESSION_QUERY_BYTES`]: a session lives long, and a URL may hold 64 KiB.
    pub fn for_session(mut self) -> Result<Self, EngineError> {
        self.direct = None;
        const PROTOCOL_PARAMS: [&str; 6] = ["EIO", "transport", "sid", "b64", "j", "t"];
        self.params.retain(|(k, _)| !PROTOCOL_PARAMS.contains(&k.as_str()));
        // The session keeps the query for its whole life: without the protocol's parameters
        // the list is usually empty, and then holds no allocation.
        self.params.shrink_to_fit();
        let bytes: usize = self.params.iter().map(|(k, v)| k.len() + v.len()).sum();
        if self.params.len() > MAX_SESSION_PARAMS || bytes > MAX_SESSION_QUERY_BYTES {
            return Err(EngineError::BadRequest("handshake query too long"));
        }
        Ok(self)
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// An Engine.IO HTTP (polling) request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineRequest {
    pub method: Method,
    pub query: EngineQuery,
    /// The body of a POST is `application/octet-stream` (a v3 binary payload).
    pub binary_body: bool,
    pub body: Bytes,
    /// For a handshake: the session id to create, chosen by the node that placed the session.
    /// `None` makes the engine pick one.
    pub new_sid: Option<String>,
}

/// The content types of Engine.IO responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentType {
    Text,
    Html,
    Binary,
    Json,
    Javascript,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text/plain; charset=UTF-8",
            Self::Html => "text/html",
            Self::Binary => "application/octet-stream",
            Self::Json => "application/json",
            Self::Javascript => "text/javascript; charset=UTF-8",
        }
    }
}

/// The engine's answer to an [`EngineRequest`]; plain data, so another node can send it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineResponse {
    pub status: u16,
    pub content_type: ContentType,
    pub body: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_queries() {
        let q = EngineQuery::parse("EIO=4&transport=polling&t=x&sid=abc").unwrap();
        assert_eq!(q.protocol, ProtocolVersion::V4);
        assert_eq!(q.transport, TransportKind::Polling);
        assert_eq!(q.sid.as_deref(), Some("abc"));
        let q = EngineQuery::parse("EIO=3&transport=polling&b64=1&j=2&user=al%C3%AFce").unwrap();
        assert!(q.b64);
        assert_eq!(q.jsonp, Some(2));
        assert_eq!(q.param("user"), Some("alïce"));
    }

    #[test]
    fn sessions_keep_the_application_parameters_within_bounds() {
        let q = EngineQuery::parse("EIO=3&transport=polling&t=N1x&b64=1&user=al%C3%AFce&room=a").unwrap();
        let kept = q.clone().for_session().unwrap();
        assert_eq!(kept.params, [("user".to_owned(), "alïce".to_owned()), ("room".to_owned(), "a".to_owned())]);
        assert_eq!((kept.protocol, kept.b64, kept.jsonp), (q.protocol, q.b64, q.jsonp));
        assert_eq!(kept.params.capacity(), 2, "the protocol's parameters leave no room behind");
        let bare = EngineQuery::parse("EIO=4&transport=websocket").unwrap().for_session().unwrap();
        assert_eq!(bare.params.capacity(), 0, "a query of protocol parameters only keeps no allocation");
        let many: String = (0..=MAX_SESSION_PARAMS).map(|i| format!("&p{i}=v")).collect();
        let q = EngineQuery::parse(&format!("EIO=4&transport=polling{many}")).unwrap();
        assert_eq!(q.for_session(), Err(EngineError::BadRequest("handshake query too long")));
        let long = "x".repeat(MAX_SESSION_QUERY_BYTES);
        let q = EngineQuery::parse(&format!("EIO=4&transport=polling&user={long}")).unwrap();
        assert_eq!(q.for_session(), Err(EngineError::BadRequest("handshake query too long")));
        let fits = "x".repeat(MAX_SESSION_QUERY_BYTES - 4);
        assert!(EngineQuery::parse(&format!("EIO=4&transport=polling&t=1&user={fits}")).unwrap().for_session().is_ok());
    }

    #[test]
    fn rejects_invalid_queries_with_spec_errors() {
        assert_eq!(EngineQuery::parse("transport=polling"), Err(EngineError::UnsupportedProtocolVersion));
        assert_eq!(EngineQuery::parse("EIO=abc&transport=polling"), Err(EngineError::UnsupportedProtocolVersion));
        assert_eq!(EngineQuery::parse("EIO=5&transport=polling"), Err(EngineError::UnsupportedProtocolVersion));
        assert_eq!(EngineQuery::parse("EIO=4"), Err(EngineError::UnknownTransport));
        assert_eq!(EngineQuery::parse("EIO=4&transport=abc"), Err(EngineError::UnknownTransport));
        assert!(EngineQuery::parse("EIO=3&transport=polling&j=x").is_err());
    }
}
