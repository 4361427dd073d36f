//! One authenticated RPC connection between two nodes, multiplexing requests and streams.
//!
//! A writer task drains a bounded queue of outgoing frames; a reader task matches responses
//! to waiting callers, feeds stream frames to their bounded per-stream queues, and hands
//! requests and new streams to the [`RpcHandler`]. A pending long-poll therefore never blocks
//! other requests on the same connection, and a stream whose consumer falls behind is closed
//! rather than stalling the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use super::message::{decode, encode, Push, Request, Response, RpcFrame, StreamOpen, WsFrame, MAX_FRAME};

/// Outgoing frames queued per connection.
const OUTBOX: usize = 4096;
/// Incoming frames queued per stream before it is closed as too slow.
pub const STREAM_QUEUE: usize = 256;

/// Serves what a peer asks of this node.
pub trait RpcHandler: Send + Sync + 'static {
    fn request(&self, request: Request) -> BoxFuture<'static, Response>;
    /// A peer opened a stream; the handler owns it (and spawns whatever serves it).
    fn stream(&self, open: StreamOpen, stream: RpcStream);
    /// A one-way message; must not block.
    fn push(&self, push: Push);
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("connection to {0} lost")]
    ConnectionLost(String),
    #[error("no answer from {peer} within {timeout:?}")]
    Timeout { peer: String, timeout: Duration },
    #[error("cannot reach {peer}: {reason}")]
    Connect { peer: String, reason: String },
}

pub struct Connection {
    /// The peer, for logs and errors.
    peer: String,
    out: mpsc::Sender<RpcFrame>,
    /// Callers waiting for a response, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    /// Open streams' inbound queues, by stream id.
    streams: Mutex<HashMap<u64, mpsc::Sender<WsFrame>>>,
    next_id: AtomicU64,
    closed: CancellationToken,
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec()
}

impl Connection {
    /// Starts serving an authenticated connection. `handler` serves the peer's requests;
    /// `None` refuses them (the dialing side only asks).
    pub fn spawn<S>(io: S, peer: String, handler: Option<Arc<dyn RpcHandler>>) -> Arc<Self>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out, outbox) = mpsc::channel(OUTBOX);
        let conn = Arc::new(Self {
            peer,
            out,
            pending: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: CancellationToken::new(),
        });
        tokio::spawn(conn.clone().write_loop(FramedWrite::new(write, codec()), outbox).in_current_span());
        tokio::spawn(conn.clone().read_loop(FramedRead::new(read, codec()), handler).in_current_span());
        conn
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub fn close(&self) {
        self.closed.cancel();
    }

    async fn write_loop<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        mut sink: FramedWrite<W, LengthDelimitedCodec>,
        mut outbox: mpsc::Receiver<RpcFrame>,
    ) {
        loop {
            let frame = tokio::select! {
                f = outbox.recv() => f,
                _ = self.closed.cancelled() => None,
            };
            let Some(frame) = frame else { break };
            let bytes = match encode(&frame) {
                Ok(b) => b,
                Err(err) => {
                    warn!(peer = %self.peer, error = %err, "dropping unencodable RPC frame");
                    continue;
                }
            };
            if sink.feed(bytes).await.is_err() {
                break;
            }
            if outbox.is_empty() && SinkExt::<bytes::Bytes>::flush(&mut sink).await.is_err() {
                break;
            }
        }
        self.shut();
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        self: Arc<Self>,
        mut source: FramedRead<R, LengthDelimitedCodec>,
        handler: Option<Arc<dyn RpcHandler>>,
    ) {
        loop {
            let next = tokio::select! {
                n = source.next() => n,
                _ = self.closed.cancelled() => None,
            };
            let bytes = match next {
                Some(Ok(b)) => b,
                Some(Err(err)) => {
                    warn!(peer = %self.peer, error = %err, "RPC connection broken");
                    break;
                }
                None => break,
            };
            let frame = match decode(&bytes) {
                Ok(f) => f,
                Err(err) => {
                    warn!(peer = %self.peer, error = %err, "refusing malformed RPC frame, closing connection");
                    break;
                }
            };
            self.dispatch(frame, handler.as_ref());
        }
        self.shut();
    }

    fn dispatch(self: &Arc<Self>, frame: RpcFrame, handler: Option<&Arc<dyn RpcHandler>>) {
        match frame {
            RpcFrame::Request { id, body } => {
                let conn = self.clone();
                let answer = handler.map(|h| h.request(body));
                tokio::spawn(
                    async move {
                        let body = match answer {
                            Some(fut) => fut.await,
                            None => Response::Failed("this connection serves no requests".into()),
                        };
                        conn.send(RpcFrame::Response { id, body }).await;
                    }
                    .in_current_span(),
                );
            }
            RpcFrame::Response { id, body } => {
                if let Some(tx) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                    // The caller may have timed out; then the answer is simply late.
                    let _ = tx.send(body);
                }
            }
            RpcFrame::StreamOpen { stream, open } => match handler {
                Some(h) => h.stream(open, self.register_stream(stream)),
                None => self.try_send(RpcFrame::StreamClose { stream }),
            },
            RpcFrame::StreamData { stream, frame } => {
                let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
                let full = match streams.get(&stream).map(|tx| tx.try_send(frame)) {
                    Some(Err(mpsc::error::TrySendError::Full(_))) => true,
                    Some(Err(mpsc::error::TrySendError::Closed(_))) => {
                        streams.remove(&stream);
                        false
                    }
                    _ => false,
                };
                if full {
                    streams.remove(&stream);
                    drop(streams);
                    warn!(peer = %self.peer, stream, "stream consumer too slow, closing stream");
                    self.try_send(RpcFrame::StreamClose { stream });
                }
            }
            RpcFrame::StreamClose { stream } => {
                self.streams.lock().unwrap_or_else(|e| e.into_inner()).remove(&stream);
            }
            RpcFrame::Push(push) => match handler {
                Some(h) => h.push(push),
                None => debug!(peer = %self.peer, "push on a connection that serves none, ignored"),
            },
        }
    }

    /// Marks the connection dead: waiting callers fail, streams end.
    fn shut(&self) {
        self.closed.cancel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    async fn send(&self, frame: RpcFrame) {
        tokio::select! {
            r = self.out.send(frame) => if r.is_err() { self.closed.cancel() },
            _ = self.closed.cancelled() => {}
        }
    }

    /// Queues a control frame without waiting; if the outbox is full the connection is
    /// hopelessly behind and is closed.
    fn try_send(&self, frame: RpcFrame) {
        match self.out.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(peer = %self.peer, "RPC outbox full, closing connection");
                self.closed.cancel();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.closed.cancel(),
        }
    }

    /// Sends a one-way message, waiting while the outbox is full.
    pub async fn push(&self, push: Push) -> Result<(), RpcError> {
        if self.is_closed() {
            return Err(RpcError::ConnectionLost(self.peer.clone()));
        }
        self.send(RpcFrame::Push(push)).await;
        Ok(())
    }

    /// Sends a request and waits for its response, at most `timeout`.
    pub async fn call(&self, body: Request, timeout: Duration) -> Result<Response, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        if self.is_closed() {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            return Err(RpcError::ConnectionLost(self.peer.clone()));
        }
        self.send(RpcFrame::Request { id, body }).await;
        let result = tokio::time::timeout(timeout, rx).await;
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(RpcError::ConnectionLost(self.peer.clone())),
            Err(_) => Err(RpcError::Timeout { peer: self.peer.clone(), timeout }),
        }
    }

    /// Opens a stream to the peer.
    pub async fn open_stream(self: &Arc<Self>, open: StreamOpen) -> Result<RpcStream, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = self.register_stream(id);
        if self.is_closed() {
            return Err(RpcError::ConnectionLost(self.peer.clone()));
        }
        self.send(RpcFrame::StreamOpen { stream: id, open }).await;
        Ok(stream)
    }

    fn register_stream(self: &Arc<Self>, id: u64) -> RpcStream {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        RpcStream { id, conn: self.clone(), rx }
    }
}

/// One stream: WebSocket data messages in both directions. Dropping it closes it at both ends.
pub struct RpcStream {
    id: u64,
    conn: Arc<Connection>,
    rx: mpsc::Receiver<WsFrame>,
}

impl RpcStream {
    /// The next frame from the peer; `None` once the stream or its connection closed.
    async fn recv(&mut self) -> Option<WsFrame> {
        tokio::select! {
            f = self.rx.recv() => f,
            _ = self.conn.closed.cancelled() => None,
        }
    }
}

impl Drop for RpcStream {
    fn drop(&mut self) {
        let known = self.conn.streams.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id).is_some();
        if known && !self.conn.is_closed() {
            debug!(peer = %self.conn.peer, stream = self.id, "closing stream");
            self.conn.try_send(RpcFrame::StreamClose { stream: self.id });
        }
    }
}

impl RpcStream {
    /// Splits the stream so sending and receiving can proceed independently. Dropping the
    /// receiving half closes the stream.
    pub fn split(self) -> (StreamSender, StreamReceiver) {
        let sender = StreamSender { id: self.id, conn: self.conn.clone() };
        (sender, StreamReceiver { inner: self })
    }
}

/// The sending half of an [`RpcStream`].
#[derive(Clone)]
pub struct StreamSender {
    id: u64,
    conn: Arc<Connection>,
}

impl StreamSender {
    /// Sends a frame to the peer, waiting while the connection's outbox is full.
    pub async fn send(&self, frame: WsFrame) -> Result<(), RpcError> {
        if self.conn.is_closed() {
            return Err(RpcError::ConnectionLost(self.conn.peer.clone()));
        }
        self.conn.send(RpcFrame::StreamData { stream: self.id, frame }).await;
        Ok(())
    }
}

/// The receiving half of an [`RpcStream`]; dropping it closes the stream at both ends.
pub struct StreamReceiver {
    inner: RpcStream,
}

impl StreamReceiver {
    pub async fn recv(&mut self) -> Option<WsFrame> {
        self.inner.recv().await
    }
}
