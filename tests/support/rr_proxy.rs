//! A request-level round-robin balancer for tests: every HTTP request, including each
//! request of a keep-alive connection, goes to the next backend in turn, and a WebSocket
//! upgrade is spliced to the backend that answered it. This is the worst case the cluster
//! must handle: no request of a session is likely to reach the node that owns it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, hyper::Error>;

pub struct RoundRobinProxy {
    addr: SocketAddr,
    backends: Arc<Vec<SocketAddr>>,
    accept: JoinHandle<()>,
}

impl RoundRobinProxy {
    /// Listens on `listen` (port 0 for any) and balances over `backends`.
    pub async fn start(listen: SocketAddr, backends: Vec<SocketAddr>) -> std::io::Result<Self> {
        assert!(!backends.is_empty(), "a proxy needs backends");
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let backends = Arc::new(backends);
        let next = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let backends = backends.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (backends, next) = (backends.clone(), next.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
                            forward(backend, req)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                }
            }
        });
        Ok(Self { addr, backends, accept })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Sends one request to `backend` on a fresh connection; for an upgrade, splices the two
/// upgraded connections once the backend agrees.
async fn forward(backend: SocketAddr, mut req: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
    let stream = match TcpStream::connect(backend).await {
        Ok(s) => s,
        Err(err) => return Ok(bad_gateway(format!("backend {backend}: {err}"))),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(err) => return Ok(bad_gateway(format!("backend {backend}: {err}"))),
    };
    tokio::spawn(conn.with_upgrades());
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut response = match sender.send_request(req).await {
        Ok(r) => r,
        Err(err) => return Ok(bad_gateway(format!("backend {backend}: {err}"))),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let backend_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(backend)) = (client_upgrade.await, backend_upgrade.await) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(backend)).await;
            }
        });
    }
    Ok(response.map(|b| b.boxed()))
}

fn bad_gateway(reason: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(reason)).map_err(|never| match never {}).boxed());
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
