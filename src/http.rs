//! HTTP routing: the one place a hyper request is looked at. Engine.IO paths go to their
//! engine (polling as plain data, WebSockets upgraded here), the rest is the chat page, its
//! static files and the health endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use crate::cluster::membership::Membership;
use crate::cluster::router::Router;
use crate::config::NodeConfig;
use crate::engineio::direct::{Direct, SharedTcp};
use crate::engineio::{EngineError, EngineQuery, EngineRequest, EngineResponse, Method};
use crate::metrics::{Metrics, Refusal, RequestKind};
use tokio_util::either::Either;

pub type HttpResponse = Response<Full<Bytes>>;

/// Everything a request may need, shared by all connections of a node.
pub struct HttpState {
    pub node_id: Arc<str>,
    /// Engine.IO routers by path, e.g. `/socket.io/`.
    pub engines: Vec<(String, Arc<Router>)>,
    /// The node's membership, for `/ready`; `None` (a node on its own) is always ready.
    pub membership: Option<Arc<Membership>>,
    /// The node's metrics, at `/metrics`; `None` serves none (the conformance server).
    pub metrics: Option<Arc<Metrics>>,
    /// The chat page's directory; `None` serves no page (the conformance server).
    pub web_dir: Option<PathBuf>,
    /// The Admin UI's npm install (`[admin] ui_dir`); `None` serves no `/admin/`.
    pub admin_dir: Option<PathBuf>,
    /// What every client request is held to: allowed origins, body deadline.
    pub policy: EdgePolicy,
    /// Set when the node starts leaving: `/ready` fails so balancers stop sending new clients.
    pub draining: std::sync::atomic::AtomicBool,
    /// WebSocket tasks, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

/// What the HTTP layer asks of every client, from the node's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePolicy {
    /// Browser origins allowed to use the engines (polling and WebSocket).
    pub origins: AllowedOrigins,
    /// Time a request body has to arrive in full: a client trickling one byte at a time
    /// would otherwise hold its connection, and a buffer, for as long as it likes.
    pub body_timeout: Duration,
    /// Whether `/metrics` is served here; `false` when it has a listener of its own.
    pub serve_metrics: bool,
}

impl EdgePolicy {
    pub fn from_config(config: &NodeConfig) -> Self {
        Self {
            origins: AllowedOrigins::new(config.allowed_origins.clone()),
            body_timeout: Duration::from_millis(config.body_timeout_ms),
            serve_metrics: config.metrics_listen.is_none(),
        }
    }

    /// Any origin, the default body timeout, metrics served: for test and conformance servers.
    pub fn open() -> Self {
        Self::from_config(&NodeConfig { allowed_origins: vec!["*".into()], ..NodeConfig::default() })
    }
}

/// Which browser origins may use the engines. A request without an `Origin` header (every
/// client that is not a browser) is always allowed; a browser's is allowed when it is the
/// page's own origin (its host and port are the request's `Host`), or listed: `"*"` allows
/// any, `"loopback"` any origin on localhost, 127.0.0.0/8 or `[::1]` (any port), anything
/// else is compared with the whole origin (`https://chat.example.com`). A refused origin gets
/// a 403, so a page elsewhere can neither read from nor write to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    pub fn new(list: Vec<String>) -> Self {
        Self(list)
    }

    pub fn allows(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else { return true };
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
        let same_host =
            host.and_then(|h| h.to_str().ok()).is_some_and(|h| !h.is_empty() && h.eq_ignore_ascii_case(authority));
        same_host
            || self.0.iter().any(|allowed| match allowed.as_str() {
                "*" => true,
                "loopback" => is_loopback_authority(authority),
                exact => exact.eq_ignore_ascii_case(origin),
            })
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(h, _)| h),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Files of the chat page: URL path → (file below the web directory, content type).
const STATIC_FILES: &[(&str, &str, &str)] = &[
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/index.html", "index.html", "text/html; charset=utf-8"),
    ("/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/style.css", "style.css", "text/css; charset=utf-8"),
    (
        "/vendor/socket.io.min.js",
        "node_modules/socket.io-client/dist/socket.io.min.js",
        "text/javascript; charset=utf-8",
    ),
];

/// Answers one request from the client at `peer`.
pub async fn handle(
    state: Arc<HttpState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, std::convert::Infallible> {
    let path = req.uri().path();
    if let Some(engine) =
        state.engines.iter().find(|(p, _)| path == p || path == p.trim_end_matches('/')).map(|(_, e)| e.clone())
    {
        return Ok(engine_request(&state, engine, peer, req).await);
    }
    let mut response = match path {
        "/health" => text(StatusCode::OK, "ok\n"),
        "/ready" => match is_ready(&state) {
            true => text(StatusCode::OK, "ready\n"),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        },
        "/whoami" => json(StatusCode::OK, serde_json::json!({ "node": &*state.node_id }).to_string()),
        "/metrics" => match state.metrics.as_ref().filter(|_| state.policy.serve_metrics) {
            Some(metrics) => {
                let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
                r
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
        p if p == crate::admin::ui::PREFIX || p.starts_with("/admin/") => admin_ui(&state, p).await,
        _ => static_file(&state, path).await,
    };
    if let Some(v) = served_by(&state.node_id) {
        response.headers_mut().insert(HeaderName::from_static("server-timing"), v);
    }
    Ok(response)
}

/// `Server-Timing: node;desc="node1"`: the page reads it from its own navigation entry
/// (`performance.getEntriesByType("navigation")`) to show which node served the document,
/// which under round robin is not the node that answers its later requests.
fn served_by(node_id: &str) -> Option<HeaderValue> {
    let escaped = node_id.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_str(&format!("node;desc=\"{escaped}\"")).ok()
}

/// Ready: a member of the ring, advertising itself as taking new sessions.
fn is_ready(state: &HttpState) -> bool {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    match &state.membership {
        None => true,
        Some(m) => !m.has_failed() && m.members().get(&state.node_id).is_some_and(|me| me.ready),
    }
}

async fn engine_request(
    state: &HttpState,
    engine: Arc<Router>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> HttpResponse {
    let origin = req.headers().get(header::ORIGIN).cloned();
    if !state.policy.origins.allows(origin.as_ref(), req.headers().get(header::HOST)) {
        debug!(origin = ?origin, "origin not allowed");
        state.refused(Refusal::Origin);
        // No CORS headers: the page may not even read the refusal.
        return engine_response(None, EngineError::Forbidden.into_response());
    }
    // CORS preflight: answered from headers alone, no session lookup.
    if req.method() == hyper::Method::OPTIONS {
        let mut r = text(StatusCode::NO_CONTENT, "");
        add_cors(origin.as_ref(), &mut r);
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
        return r;
    }
    let mut query = match EngineQuery::parse(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(err) => return engine_response(origin.as_ref(), err.into_response()),
    };
    query.client_addr = Some(peer.ip());
    if is_websocket_upgrade(&req) {
        count(state, RequestKind::Websocket);
        return websocket_upgrade(state, engine, query, &mut req);
    }
    let method = match *req.method() {
        hyper::Method::GET => Method::Get,
        hyper::Method::POST => Method::Post,
        _ => Method::Other,
    };
    let binary_body =
        req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let limit = engine.max_payload();
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return engine_response(origin.as_ref(), engine.reject_oversized(&query));
    }
    let body =
        match tokio::time::timeout(state.policy.body_timeout, Limited::new(req.into_body(), limit).collect()).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(err)) => {
                debug!(error = %err, "request body refused");
                return engine_response(origin.as_ref(), engine.reject_oversized(&query));
            }
            Err(_) => {
                debug!(%peer, timeout = ?state.policy.body_timeout, "request body too slow");
                state.refused(Refusal::BodyTimeout);
                let mut r = engine_response(origin.as_ref(), EngineError::BodyTimeout.into_response());
                // The rest of the body is not read: the connection cannot carry another request.
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
        };
    let request = EngineRequest { method, query, binary_body, body, new_sid: None };
    count(state, RequestKind::of(&request));
    let response = engine.handle_http(request).await;
    engine_response(origin.as_ref(), response)
}

fn count(state: &HttpState, kind: RequestKind) {
    if let Some(metrics) = &state.metrics {
        metrics.received(kind);
    }
}

impl HttpState {
    /// The state of a listener serving `/metrics` (and the health endpoints) alone.
    pub fn metrics_only(&self) -> Self {
        Self {
            node_id: self.node_id.clone(),
            engines: Vec::new(),
            membership: self.membership.clone(),
            metrics: self.metrics.clone(),
            web_dir: None,
            admin_dir: None,
            policy: EdgePolicy { serve_metrics: true, ..self.policy.clone() },
            draining: Default::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// Counts a connection or request turned away (in `/metrics`).
    pub fn refused(&self, reason: Refusal) {
        if let Some(metrics) = &self.metrics {
            metrics.refused(reason);
        }
    }
}

fn is_websocket_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && req.headers().contains_key(header::SEC_WEBSOCKET_KEY)
}

/// Bytes of the WebSocket read buffer, allocated with the connection, and the most read from
/// the socket at once: tungstenite zero-fills up to this much before each read. A client's
/// frames are mostly far smaller (a chat message is about 100 bytes); a larger one grows
/// the buffer to its length and is read in chunks of this size.
const READ_CHUNK: usize = 256;

/// Bytes of WebSocket frames gathered before a write when no flush comes first.
const WRITE_GATHER: usize = 16 * 1024;

/// The WebSocket settings for a chat client: small buffers (an idle client's read buffer is
/// `READ_CHUNK`, its write buffer empty until the first write),
/// messages bounded by the engine's payload limit. Frames fed without a flush are gathered
/// up to `WRITE_GATHER` bytes, so a burst of queued frames goes out in one write (the
/// buffer's capacity grows only as far as a client's bursts need).
pub fn websocket_config(max_payload: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .write_buffer_size(WRITE_GATHER)
        .max_write_buffer_size(max_payload.saturating_mul(2).max(64 * 1024))
        .max_message_size(Some(max_payload))
        .max_frame_size(Some(max_payload))
}

fn websocket_upgrade(
    state: &HttpState,
    engine: Arc<Router>,
    query: EngineQuery,
    req: &mut Request<Incoming>,
) -> HttpResponse {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes())).unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(req);
    let config = websocket_config(engine.max_payload());
    // The upgrade is boxed: it runs once, and inline it (with the query and the settings it
    // takes) would size the task every WebSocket holds for its whole life.
    let upgrade = Box::pin(async move {
        let mut query = query;
        let io = match on_upgrade.await?.downcast::<TokioIo<tokio::net::TcpStream>>() {
            // The plain TCP connection the server accepted: shared with the session's queue,
            // whose pushes may write to it (see `engineio::direct`).
            Ok(parts) => {
                let tcp = Arc::new(parts.io.into_inner());
                query.direct = Some(Direct::tcp(tcp.clone()));
                Either::Left(SharedTcp::new(tcp, parts.read_buf))
            }
            // Any other connection hyper could hand over: as it is.
            Err(upgraded) => Either::Right(TokioIo::new(upgraded)),
        };
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        Ok::<_, hyper::Error>((ws, query))
    });
    state.tasks.spawn(
        async move {
            // Not `match upgrade.await { Ok(..) => .. }`: the matched value would be kept
            // (unused) in this future for the connection's whole life.
            let (ws, query) = match upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    debug!(error = %err, "WebSocket upgrade failed");
                    return;
                }
            };
            let (sink, stream) = futures_util::StreamExt::split(ws);
            engine.handle_websocket(query, sink, stream).await;
        }
        .in_current_span(),
    );
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

fn engine_response(origin: Option<&HeaderValue>, response: EngineResponse) -> HttpResponse {
    let mut r = Response::new(Full::new(response.body));
    *r.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(response.content_type.as_str()));
    add_cors(origin, &mut r);
    r
}

/// CORS headers for an origin the policy allowed (requests from others are refused first).
fn add_cors(origin: Option<&HeaderValue>, r: &mut HttpResponse) {
    let Some(origin) = origin else { return };
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    r.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
}

async fn static_file(state: &HttpState, path: &str) -> HttpResponse {
    let (Some(dir), Some((_, file, content_type))) = (&state.web_dir, STATIC_FILES.iter().find(|(p, _, _)| *p == path))
    else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    match tokio::fs::read(dir.join(file)).await {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(err) => {
            tracing::warn!(file = %dir.join(file).display(), error = %err, "cannot read page file (run `npm ci` in web/?)");
            text(StatusCode::NOT_FOUND, "not found\n")
        }
    }
}

async fn admin_ui(state: &HttpState, path: &str) -> HttpResponse {
    use crate::admin::ui::{serve, UiResponse};
    let Some(dir) = &state.admin_dir else { return text(StatusCode::NOT_FOUND, "not found\n") };
    match serve(dir, path).await {
        UiResponse::Redirect(location) => {
            let mut r = text(StatusCode::MOVED_PERMANENTLY, "");
            r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(location));
            r
        }
        UiResponse::File { body, content_type } => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        UiResponse::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json(status: StatusCode, body: String) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_same_host_loopback_and_listed() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        let default = AllowedOrigins::new(vec!["loopback".into()]);
        let host = v("chat.example.com:9000");
        // No Origin: not a browser.
        assert!(default.allows(None, Some(&host)));
        // The page's own origin.
        assert!(default.allows(Some(&v("http://chat.example.com:9000")), Some(&host)));
        assert!(default.allows(Some(&v("https://CHAT.example.com:9000")), Some(&host)));
        // Loopback pages, any port.
        for o in ["http://localhost:3000", "http://127.0.0.1:9000", "http://127.8.0.1", "http://[::1]:8080"] {
            assert!(default.allows(Some(&v(o)), Some(&host)), "{o}");
        }
        // Elsewhere.
        for o in ["https://evil.example", "http://chat.example.com:9001", "null", "http://localhost.evil.example", ""] {
            assert!(!default.allows(Some(&v(o)), Some(&host)), "{o}");
            assert!(!default.allows(Some(&v(o)), None), "{o}");
        }
        let listed = AllowedOrigins::new(vec!["https://chat.example.com".into()]);
        assert!(listed.allows(Some(&v("https://chat.example.com")), None));
        assert!(!listed.allows(Some(&v("http://localhost:3000")), None));
        assert!(AllowedOrigins::new(vec!["*".into()]).allows(Some(&v("null")), None));
    }

    #[test]
    fn served_by_quotes_the_node_id() {
        assert_eq!(served_by("node1").unwrap(), "node;desc=\"node1\"");
        assert_eq!(served_by(r#"a"b\c"#).unwrap(), r#"node;desc="a\"b\\c""#);
        assert!(served_by("bad\nid").is_none());
    }
}
