//! HTTP routing: the one place a hyper request is looked at. Engine.IO paths go to their
//! engine (polling as plain data, WebSockets upgraded here), the rest is the chat page, its
//! static files and the health endpoints.

use std::path::PathBuf;
use std::sync::Arc;

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
use crate::engineio::{EngineQuery, EngineRequest, EngineResponse, Method};
use crate::metrics::{Metrics, RequestKind};

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
    /// Origins allowed cross-origin access to the engines; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Set when the node starts leaving: `/ready` fails so balancers stop sending new clients.
    pub draining: std::sync::atomic::AtomicBool,
    /// WebSocket tasks, so shutdown can wait for them.
    pub tasks: TaskTracker,
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

pub async fn handle(state: Arc<HttpState>, req: Request<Incoming>) -> Result<HttpResponse, std::convert::Infallible> {
    let path = req.uri().path();
    if let Some(engine) =
        state.engines.iter().find(|(p, _)| path == p || path == p.trim_end_matches('/')).map(|(_, e)| e.clone())
    {
        return Ok(engine_request(&state, engine, req).await);
    }
    let mut response = match path {
        "/health" => text(StatusCode::OK, "ok\n"),
        "/ready" => match is_ready(&state) {
            true => text(StatusCode::OK, "ready\n"),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        },
        "/whoami" => json(StatusCode::OK, serde_json::json!({ "node": &*state.node_id }).to_string()),
        "/metrics" => match &state.metrics {
            Some(metrics) => {
                let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
                r
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
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

async fn engine_request(state: &HttpState, engine: Arc<Router>, mut req: Request<Incoming>) -> HttpResponse {
    let origin = req.headers().get(header::ORIGIN).cloned();
    // CORS preflight: answered from headers alone, no session lookup.
    if req.method() == hyper::Method::OPTIONS {
        let mut r = text(StatusCode::NO_CONTENT, "");
        add_cors(state, origin.as_ref(), &mut r);
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
        return r;
    }
    let query = match EngineQuery::parse(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(err) => return engine_response(state, origin.as_ref(), err.into_response()),
    };
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
        return engine_response(state, origin.as_ref(), engine.reject_oversized(&query));
    }
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            debug!(error = %err, "request body refused");
            return engine_response(state, origin.as_ref(), engine.reject_oversized(&query));
        }
    };
    let request = EngineRequest { method, query, binary_body, body, new_sid: None };
    count(state, RequestKind::of(&request));
    let response = engine.handle_http(request).await;
    engine_response(state, origin.as_ref(), response)
}

fn count(state: &HttpState, kind: RequestKind) {
    if let Some(metrics) = &state.metrics {
        metrics.received(kind);
    }
}

fn is_websocket_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && req.headers().contains_key(header::SEC_WEBSOCKET_KEY)
}

/// Bytes of WebSocket frames gathered before a write when no flush comes first.
const WRITE_GATHER: usize = 16 * 1024;

/// The WebSocket settings for a chat client: small buffers (an idle client costs a few KiB),
/// messages bounded by the engine's payload limit. Frames fed without a flush are gathered
/// up to `WRITE_GATHER` bytes, so a burst of queued frames goes out in one write (the
/// buffer's capacity grows only as far as a client's bursts need).
pub fn websocket_config(max_payload: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
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
    state.tasks.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                    let (sink, stream) = futures_util::StreamExt::split(ws);
                    engine.handle_websocket(query, sink, stream).await;
                }
                Err(err) => debug!(error = %err, "WebSocket upgrade failed"),
            }
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

fn engine_response(state: &HttpState, origin: Option<&HeaderValue>, response: EngineResponse) -> HttpResponse {
    let mut r = Response::new(Full::new(response.body));
    *r.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(response.content_type.as_str()));
    add_cors(state, origin, &mut r);
    r
}

fn add_cors(state: &HttpState, origin: Option<&HeaderValue>, r: &mut HttpResponse) {
    let Some(origin) = origin else { return };
    let allowed = state.cors_origins.iter().any(|o| o == "*" || o.as_bytes() == origin.as_bytes());
    if allowed {
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        r.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
    }
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
    use super::served_by;

    #[test]
    fn served_by_quotes_the_node_id() {
        assert_eq!(served_by("node1").unwrap(), "node;desc=\"node1\"");
        assert_eq!(served_by(r#"a"b\c"#).unwrap(), r#"node;desc="a\"b\\c""#);
        assert!(served_by("bad\nid").is_none());
    }
}
