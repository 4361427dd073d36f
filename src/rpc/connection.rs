//! One authenticated, encrypted RPC connection between two nodes (see `noise`), multiplexing
//! requests and streams.
//!
//! A writer task drains a bounded queue of outgoing frames; a reader task matches responses
//! to waiting callers, feeds stream frames to their bounded per-stream queues, and hands
//! requests and new streams to the [`RpcHandler`], naming the peer the handshake proved. A
//! pending long-poll therefore never blocks other requests on the same connection, and a
//! stream whose consumer falls behind is closed rather than stalling the connection.
//!
//! Bounds per connection ([`RpcLimits`]): frames and bytes queued to send (a sender
//! waits for room; a control frame that finds none closes the connection), requests of ours
//! awaiting an answer (a caller waits for a slot within its deadline), and requests of the
//! peer being served (past the cap the peer is told `busy` at once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::message::{decode, encode, Push, Request, Response, RpcFrame, StreamOpen, WsFrame};
use super::noise::{RecordDecoder, RecordEncoder, Secured, MAX_RECORD_PLAINTEXT};
use crate::tasks::Tasks;

/// Outgoing frames queued per connection.
const OUTBOX: usize = 4096;
/// Capacity the writer's record buffer keeps between writes.
const KEPT_RECORDS: usize = 4 * MAX_RECORD_PLAINTEXT;
/// Incoming frames queued per stream before it is closed as too slow.
pub const STREAM_QUEUE: usize = 256;
/// Bytes of incoming frames queued per stream before it is closed as too slow (one frame
/// alone is always taken): a relayed client's frames may each be up to `max_payload`.
pub const STREAM_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Per-connection bounds (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcLimits {
    /// Bytes of encoded frames queued to send.
    pub max_queued_bytes: usize,
    /// Our requests awaiting the peer's answer.
    pub max_calls: usize,
    /// The peer's requests being served at once.
    pub max_served: usize,
}

impl Default for RpcLimits {
    fn default() -> Self {
        Self { max_queued_bytes: 16 * 1024 * 1024, max_calls: 1024, max_served: 1024 }
    }
}

/// Serves what a peer asks of this node. `peer` is the node id the channel's handshake
/// proved: a message that names a node must name that one.
pub trait RpcHandler: Send + Sync + 'static {
    fn request(&self, peer: &str, request: Request) -> BoxFuture<'static, Response>;
    /// A peer opened a stream; returns what serves it, which the connection runs as one of its
    /// tasks (it ends when the stream does, as the connection closing ends it). Dropping the
    /// stream refuses it.
    fn stream(&self, peer: &str, open: StreamOpen, stream: RpcStream) -> BoxFuture<'static, ()>;
    /// A one-way message; must not block.
    fn push(&self, peer: &str, push: Push);
}

/// An encoded frame on its way out: its bytes, their share of the byte budget (held until
/// the frame is buffered), and who is told once it is written (see [`Connection::push_then`]).
type Queued = (Bytes, OwnedSemaphorePermit, Option<Written>);

/// Told what became of a pushed frame (see [`Written`]).
pub trait OnWritten: Send + Sync {
    /// The frame is in the kernel's hands: written and flushed to the socket.
    fn written(self: Box<Self>);
    /// It may not have been: the connection closed first, or failed writing it (a failed
    /// write may have handed the kernel some of its batch).
    fn lost(self: Box<Self>);
}

/// Travels with a pushed frame and tells its [`OnWritten`] which end it came to. Only the
/// writer, having flushed the frame, says `written`; dropped anywhere else (a closed outbox,
/// a failed write, the connection's end with the frame still queued) it says `lost`, so no
/// path loses a frame silently before the kernel has it.
pub struct Written(Option<Box<dyn OnWritten>>);

impl Written {
    pub fn new(on: impl OnWritten + 'static) -> Self {
        Self(Some(Box::new(on)))
    }

    fn confirm(mut self) {
        if let Some(on) = self.0.take() {
            on.written();
        }
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if let Some(on) = self.0.take() {
            on.lost();
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("connection to {0} lost")]
    ConnectionLost(String),
    #[error("no answer from {peer} within {timeout:?}")]
    Timeout { peer: String, timeout: Duration },
    #[error("cannot reach {peer}: {reason}")]
    Connect { peer: String, reason: String },
    #[error("cannot send to {peer}: {reason}")]
    Send { peer: String, reason: String },
}

pub struct Connection {
    /// The peer's node id, as its handshake proved it.
    peer: String,
    out: mpsc::Sender<Queued>,
    /// Bytes that may still be queued to send.
    budget: Arc<Semaphore>,
    max_queued_bytes: usize,
    /// Slots for our requests awaiting an answer.
    calls: Arc<Semaphore>,
    /// Slots for the peer's requests being served.
    served: Arc<Semaphore>,
    /// Callers waiting for a response, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    /// Open streams' inbound queues, by stream id.
    streams: Mutex<HashMap<u64, StreamIn>>,
    next_id: AtomicU64,
    /// A child of the owner's stop token: the owner's shutdown closes every connection.
    closed: CancellationToken,
    /// The owner's tasks (the listener's or the dialer's): this connection's reader and
    /// writer, each request it serves (at most `max_served` at once, stopped with the owner)
    /// and each stream it runs.
    tasks: Tasks,
}

impl Connection {
    /// Starts serving a connection whose handshake succeeded, on its owner's `tasks`, whose
    /// shutdown closes it and waits for everything it runs. `handler` serves the peer's
    /// requests; `None` refuses them (the dialing side only asks).
    pub fn spawn<S>(
        io: S,
        channel: Secured,
        handler: Option<Arc<dyn RpcHandler>>,
        limits: RpcLimits,
        tasks: &Tasks,
    ) -> Arc<Self>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (decoder, encoder) = channel.codecs();
        let (out, outbox) = mpsc::channel(OUTBOX);
        let conn = Arc::new(Self {
            peer: channel.peer,
            out,
            budget: Arc::new(Semaphore::new(limits.max_queued_bytes)),
            max_queued_bytes: limits.max_queued_bytes,
            calls: Arc::new(Semaphore::new(limits.max_calls)),
            served: Arc::new(Semaphore::new(limits.max_served)),
            pending: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: tasks.child_token(),
            tasks: tasks.clone(),
        });
        tasks.spawn(conn.clone().write_loop(write, encoder, outbox));
        tasks.spawn(conn.clone().read_loop(FramedRead::new(read, decoder), handler));
        conn
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Closes the connection from this side: what is queued is dropped, waiting callers fail
    /// and streams end (see [`crate::rpc::peers::Peers::forget`] for why).
    pub fn close(&self) {
        self.shut();
    }

    /// Writes the queued frames: whatever is queued when the writer wakes is sealed together
    /// (up to one record's plaintext, see `RecordEncoder`), so a burst of pushes costs one
    /// record and one write.
    async fn write_loop<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        mut io: W,
        mut encoder: RecordEncoder,
        mut outbox: mpsc::Receiver<Queued>,
    ) {
        // Told once the records holding their frames are written to the socket.
        let mut written: Vec<Written> = Vec::new();
        let mut records = BytesMut::new();
        'frames: loop {
            let first = tokio::select! {
                f = outbox.recv() => f,
                _ = self.closed.cancelled() => None,
            };
            let Some(mut next) = first else { break };
            loop {
                // The permit returns the frame's bytes to the budget once it is buffered.
                let (bytes, _permit, done) = next;
                written.extend(done);
                if encoder.push(bytes).is_err() {
                    break 'frames;
                }
                if encoder.buffered() >= MAX_RECORD_PLAINTEXT {
                    break;
                }
                match outbox.try_recv() {
                    Ok(queued) => next = queued,
                    Err(_) => break,
                }
            }
            if encoder.seal(&mut records).is_err() || io.write_all(&records).await.is_err() || io.flush().await.is_err()
            {
                break;
            }
            written.drain(..).for_each(Written::confirm);
            records.clear();
            if records.capacity() > KEPT_RECORDS {
                records = BytesMut::new(); // a rare large frame does not pin its size
            }
        }
        self.shut();
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        self: Arc<Self>,
        mut source: FramedRead<R, RecordDecoder>,
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
                let slot = if body.waits_on_a_client() {
                    None
                } else {
                    let Ok(slot) = self.served.clone().try_acquire_owned() else {
                        warn!(peer = %self.peer, "peer has too many requests in flight; answering busy");
                        let body = Response::Failed("busy: too many requests in flight".into());
                        self.try_send(RpcFrame::Response { id, body });
                        return;
                    };
                    Some(slot)
                };
                let conn = self.clone();
                let answer = handler.map(|h| h.request(&self.peer, body));
                // Runs on if this connection closes (its answer is then lost, as the caller
                // knows), until the owner stops: a node that stops serving RPC leaves the ring
                // at once rather than wait for answers nobody will read (a barrier waiting for
                // pushes its closed listener will never get).
                self.tasks.spawn_until_stopped(async move {
                    let body = match answer {
                        Some(fut) => fut.await,
                        None => Response::Failed("this connection serves no requests".into()),
                    };
                    drop(slot);
                    if let Err(RpcError::Send { reason, .. }) = conn.send(RpcFrame::Response { id, body }).await {
                        // Unsendable (too large): the caller hears why rather than waiting.
                        conn.try_send(RpcFrame::Response { id, body: Response::Failed(reason) });
                    }
                });
            }
            RpcFrame::Response { id, body } => {
                if let Some(tx) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                    // The caller may have timed out; then the answer is simply late.
                    let _ = tx.send(body);
                }
            }
            RpcFrame::StreamOpen { stream, open } => match handler {
                Some(h) => self.tasks.spawn(h.stream(&self.peer, open, self.register_stream(stream))),
                None => self.try_send(RpcFrame::StreamClose { stream }),
            },
            RpcFrame::StreamData { stream, frame } => {
                let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
                let full = match streams.get(&stream).map(|s| s.queue(frame)) {
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
                Some(h) => h.push(&self.peer, push),
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

    fn encode(&self, frame: &RpcFrame) -> Result<Bytes, RpcError> {
        let bytes = encode(frame).map_err(|err| RpcError::Send { peer: self.peer.clone(), reason: err.to_string() })?;
        if bytes.len() > self.max_queued_bytes {
            let reason = format!("frame of {} bytes exceeds the connection's byte budget", bytes.len());
            return Err(RpcError::Send { peer: self.peer.clone(), reason });
        }
        Ok(bytes)
    }

    /// Queues a frame, waiting while the outbox or the byte budget is full.
    async fn send(&self, frame: RpcFrame) -> Result<(), RpcError> {
        self.send_then(frame, None).await
    }

    /// Queues a frame, and `done` to be told once the frame is written to the socket.
    async fn send_then(&self, frame: RpcFrame, done: Option<Written>) -> Result<(), RpcError> {
        let bytes = self.encode(&frame)?;
        let queued = async {
            let permit = self.budget.clone().acquire_many_owned(bytes.len() as u32).await.ok()?;
            self.out.send((bytes, permit, done)).await.ok()
        };
        tokio::select! {
            sent = queued => match sent {
                Some(()) => Ok(()),
                None => {
                    self.closed.cancel();
                    Err(RpcError::ConnectionLost(self.peer.clone()))
                }
            },
            _ = self.closed.cancelled() => Err(RpcError::ConnectionLost(self.peer.clone())),
        }
    }

    /// Queues a control frame without waiting; if the outbox or the byte budget is full the
    /// connection is hopelessly behind and is closed.
    fn try_send(&self, frame: RpcFrame) {
        let Ok(bytes) = self.encode(&frame) else {
            warn!(peer = %self.peer, "unencodable control frame; closing connection");
            self.closed.cancel();
            return;
        };
        let Ok(permit) = self.budget.clone().try_acquire_many_owned(bytes.len() as u32) else {
            warn!(peer = %self.peer, "RPC send budget exhausted, closing connection");
            self.closed.cancel();
            return;
        };
        match self.out.try_send((bytes, permit, None)) {
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
        self.push_then(push, None).await
    }

    /// Sends a one-way message; `done` is told once it is written to the socket (from then
    /// on the kernel sends it even if this process dies), or that it never will be.
    pub async fn push_then(&self, push: Push, done: Option<Written>) -> Result<(), RpcError> {
        if self.is_closed() {
            return Err(RpcError::ConnectionLost(self.peer.clone()));
        }
        self.send_then(RpcFrame::Push(push), done).await
    }

    /// Sends a request and waits for its response, at most `timeout` in all (a free call
    /// slot, room in the outbox, the answer).
    pub async fn call(self: &Arc<Self>, body: Request, timeout: Duration) -> Result<Response, RpcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || RpcError::Timeout { peer: self.peer.clone(), timeout };
        let pending = tokio::time::timeout_at(deadline, self.send_request(body)).await.map_err(|_| timed_out())??;
        tokio::time::timeout_at(deadline, pending.answer()).await.map_err(|_| timed_out())?
    }

    /// Sends a request without waiting for its answer: once this resolves, the request is
    /// queued on the connection after everything queued before it, so a peer serves it after
    /// the pushes sent before (what keeps a node's word about a room in order). Waits for a
    /// free call slot and room in the outbox.
    pub async fn send_request(self: &Arc<Self>, body: Request) -> Result<PendingCall, RpcError> {
        let slot = if body.waits_on_a_client() {
            None
        } else {
            Some(self.calls.clone().acquire_owned().await.map_err(|_| RpcError::ConnectionLost(self.peer.clone()))?)
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        let pending = PendingCall { conn: self.clone(), id, rx, _slot: slot };
        if self.is_closed() {
            return Err(RpcError::ConnectionLost(self.peer.clone()));
        }
        self.send(RpcFrame::Request { id, body }).await?;
        Ok(pending)
    }

    /// Opens a stream to the peer.
    pub async fn open_stream(self: &Arc<Self>, open: StreamOpen) -> Result<RpcStream, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = self.register_stream(id);
        if self.is_closed() {
            return Err(RpcError::ConnectionLost(self.peer.clone()));
        }
        self.send(RpcFrame::StreamOpen { stream: id, open }).await?;
        Ok(stream)
    }

    fn register_stream(self: &Arc<Self>, id: u64) -> RpcStream {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).insert(id, StreamIn { tx, queued: queued.clone() });
        RpcStream { id, conn: self.clone(), rx, queued }
    }
}

/// Where a stream's incoming frames go: its queue, and the bytes in it.
struct StreamIn {
    tx: mpsc::Sender<WsFrame>,
    queued: Arc<AtomicUsize>,
}

impl StreamIn {
    /// Queues `frame`; false if the queue is full, in frames ([`STREAM_QUEUE`]) or bytes
    /// ([`STREAM_QUEUE_BYTES`]), or closed. Counted before it is sent: the reader may take it
    /// at once.
    fn queue(&self, frame: WsFrame) -> Result<(), mpsc::error::TrySendError<WsFrame>> {
        let size = frame.len();
        let before = self.queued.fetch_add(size, Ordering::Relaxed);
        let sent = if before > 0 && before + size > STREAM_QUEUE_BYTES {
            Err(mpsc::error::TrySendError::Full(frame))
        } else {
            self.tx.try_send(frame)
        };
        if sent.is_err() {
            self.queued.fetch_sub(size, Ordering::Relaxed);
        }
        sent
    }
}

/// One stream: WebSocket data messages in both directions. Dropping it closes it at both ends.
pub struct RpcStream {
    id: u64,
    conn: Arc<Connection>,
    rx: mpsc::Receiver<WsFrame>,
    /// Bytes of the frames in `rx` (see [`StreamIn`]).
    queued: Arc<AtomicUsize>,
}

impl RpcStream {
    /// The next frame from the peer; `None` once the stream or its connection closed.
    async fn recv(&mut self) -> Option<WsFrame> {
        let frame = tokio::select! {
            f = self.rx.recv() => f,
            _ = self.conn.closed.cancelled() => None,
        };
        if let Some(frame) = &frame {
            self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
        }
        frame
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
        self.conn.send(RpcFrame::StreamData { stream: self.id, frame }).await
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

/// A request sent with [`Connection::send_request`], its answer still to come. Dropping it
/// gives up on the answer (and frees its call slot).
pub struct PendingCall {
    conn: Arc<Connection>,
    id: u64,
    rx: oneshot::Receiver<Response>,
    /// Its call slot (none for a long-poll, see [`Request::waits_on_a_client`]).
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl PendingCall {
    /// The peer's answer; an error if the connection is lost first. Bound it with a timeout.
    pub async fn answer(mut self) -> Result<Response, RpcError> {
        let peer = || RpcError::ConnectionLost(self.conn.peer.clone());
        tokio::select! {
            answer = &mut self.rx => answer.map_err(|_| peer()),
            _ = self.conn.closed.cancelled() => Err(peer()),
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.conn.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::keyring::Keyring;
    use crate::rpc::noise::{accept, dial};

    /// Collects the pushes it is given.
    struct Pushes(mpsc::UnboundedSender<Push>);

    impl RpcHandler for Pushes {
        fn request(&self, _peer: &str, _request: Request) -> BoxFuture<'static, Response> {
            Box::pin(std::future::ready(Response::Failed("not here".into())))
        }
        fn stream(&self, _peer: &str, _open: StreamOpen, _stream: RpcStream) -> BoxFuture<'static, ()> {
            Box::pin(std::future::ready(()))
        }
        fn push(&self, _peer: &str, push: Push) {
            let _ = self.0.send(push);
        }
    }

    /// node1's and node2's ends of a pipe of `capacity` bytes, the handshake done (node1
    /// dialed): each with what its side proved.
    async fn handshaken(capacity: usize) -> ((tokio::io::DuplexStream, Secured), (tokio::io::DuplexStream, Secured)) {
        let keys = Keyring::new(&["the-cluster-secret-1".to_string()], &[]).unwrap();
        let (mut a, mut b) = tokio::io::duplex(capacity);
        let t = Duration::from_secs(2);
        let (dialed, accepted) =
            tokio::join!(dial(&mut a, &keys, "node1", "node2", t), accept(&mut b, &keys, "node2", t));
        ((a, dialed.unwrap()), (b, accepted.unwrap()))
    }

    /// Notes that its push was written (`written`) or that it never will be (`lost`).
    #[derive(Clone, Default)]
    struct Flag {
        written: Arc<AtomicBool>,
        lost: Arc<AtomicBool>,
    }

    impl OnWritten for Flag {
        fn written(self: Box<Self>) {
            self.written.store(true, Ordering::SeqCst);
        }
        fn lost(self: Box<Self>) {
            self.lost.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_pushs_guard_is_told_once_the_push_is_on_the_socket() {
        // A pipe that holds 64 bytes: the push does not fit until the peer reads.
        let ((a, dialed), (b, accepted)) = handshaken(64).await;
        let t = Duration::from_secs(2);
        let tasks = Tasks::default();
        let sender = Connection::spawn(a, dialed, None, RpcLimits::default(), &tasks);
        let flag = Flag::default();
        let written = flag.written.clone();
        let push = Push::Record {
            nsp: "/chat".into(),
            room: "lobby".into(),
            entry: crate::history::Entry { at_ms: 1, id: (1, 1), body: "x".repeat(1000) },
        };
        sender.push_then(push.clone(), Some(Written::new(flag.clone()))).await.unwrap();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!written.load(Ordering::SeqCst), "not on the socket while the peer reads nothing");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _receiver = Connection::spawn(b, accepted, Some(Arc::new(Pushes(tx))), RpcLimits::default(), &tasks);
        assert_eq!(rx.recv().await, Some(push));
        let deadline = tokio::time::Instant::now() + t;
        while !written.load(Ordering::SeqCst) {
            assert!(tokio::time::Instant::now() < deadline, "the guard is told once the push is written");
            tokio::task::yield_now().await;
        }
        assert!(!flag.lost.load(Ordering::SeqCst));
    }

    /// A push still queued when its connection ends, and one pushed after, are told they are
    /// lost (the cluster's rooms hold a history record on that).
    #[tokio::test]
    async fn a_push_that_never_reaches_the_socket_is_told_it_is_lost() {
        let ((a, dialed), (b, accepted)) = handshaken(64).await;
        let t = Duration::from_secs(2);
        drop(accepted);
        let tasks = Tasks::default();
        let sender = Connection::spawn(a, dialed, None, RpcLimits::default(), &tasks);
        let entry = |n| crate::history::Entry { at_ms: n, id: (1, n), body: "x".repeat(1000) };
        let push = |n| Push::Record { nsp: "/chat".into(), room: "lobby".into(), entry: entry(n) };
        // The first fills the pipe (nobody reads it) and holds the writer; the second waits in
        // the outbox.
        let (first, second) = (Flag::default(), Flag::default());
        sender.push_then(push(1), Some(Written::new(first.clone()))).await.unwrap();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        sender.push_then(push(2), Some(Written::new(second.clone()))).await.unwrap();
        drop(b); // the peer's end goes away: the write fails
        sender.close();
        let deadline = tokio::time::Instant::now() + t;
        while !(first.lost.load(Ordering::SeqCst) && second.lost.load(Ordering::SeqCst)) {
            assert!(tokio::time::Instant::now() < deadline, "both are told they are lost");
            tokio::task::yield_now().await;
        }
        let third = Flag::default();
        assert!(sender.push_then(push(3), Some(Written::new(third.clone()))).await.is_err());
        assert!(third.lost.load(Ordering::SeqCst), "a push refused by a closed connection is lost");
        for flag in [first, second, third] {
            assert!(!flag.written.load(Ordering::SeqCst));
        }
    }

    /// Hands every stream a peer opens to the test.
    struct Streams(mpsc::UnboundedSender<RpcStream>);

    impl RpcHandler for Streams {
        fn request(&self, _peer: &str, _request: Request) -> BoxFuture<'static, Response> {
            Box::pin(std::future::ready(Response::Failed("no requests here".into())))
        }
        fn stream(&self, _peer: &str, _open: StreamOpen, stream: RpcStream) -> BoxFuture<'static, ()> {
            let _ = self.0.send(stream);
            Box::pin(std::future::ready(()))
        }
        fn push(&self, _peer: &str, _push: Push) {}
    }

    /// A stream whose reader falls [`STREAM_QUEUE_BYTES`] behind is closed, though far fewer
    /// than [`STREAM_QUEUE`] frames wait: what was queued is still read, then the end.
    #[tokio::test]
    async fn a_stream_whose_reader_falls_too_many_bytes_behind_is_closed() {
        let ((a, dialed), (b, accepted)) = handshaken(1 << 20).await;
        let t = Duration::from_secs(5);
        let tasks = Tasks::default();
        let client = Connection::spawn(a, dialed, None, RpcLimits::default(), &tasks);
        let (tx, mut opened) = mpsc::unbounded_channel();
        let _server = Connection::spawn(b, accepted, Some(Arc::new(Streams(tx))), RpcLimits::default(), &tasks);
        let open = StreamOpen {
            path: "/socket.io/".into(),
            query: crate::engineio::EngineQuery::parse("EIO=4&transport=websocket").unwrap(),
            new_sid: None,
        };
        let (sender, mut client_end) = client.open_stream(open).await.unwrap().split();
        let mut served = opened.recv().await.unwrap();
        let frame = |n: u8| WsFrame::Binary(Bytes::from(vec![n; 1_000_000]));
        let fit = STREAM_QUEUE_BYTES / 1_000_000;
        assert!(fit < STREAM_QUEUE);
        for n in 0..=fit {
            sender.send(frame(n as u8)).await.unwrap();
        }
        // The server closes the stream, which ends it at the client too.
        assert_eq!(tokio::time::timeout(t, client_end.recv()).await.expect("closed within 5 s"), None);
        for n in 0..fit {
            assert_eq!(served.recv().await, Some(frame(n as u8)));
        }
        assert_eq!(served.recv().await, None);
    }

    /// Holds every forwarded long-poll for good; answers anything else at once.
    struct Polls;

    impl RpcHandler for Polls {
        fn request(&self, _peer: &str, request: Request) -> BoxFuture<'static, Response> {
            match request {
                Request::Engine { .. } => Box::pin(std::future::pending()),
                _ => Box::pin(std::future::ready(Response::Failed("answered".into()))),
            }
        }
        fn stream(&self, _peer: &str, _open: StreamOpen, _stream: RpcStream) -> BoxFuture<'static, ()> {
            Box::pin(std::future::ready(()))
        }
        fn push(&self, _peer: &str, _push: Push) {}
    }

    /// A long-poll forwarded to its session's owner waits for up to a ping interval: past the
    /// slots' bound, polls alone would hold up every other call to that owner. They hold no
    /// slot, at either end; the quick calls keep theirs.
    #[tokio::test]
    async fn long_polls_hold_no_call_slot_at_either_end() {
        let ((a, dialed), (b, accepted)) = handshaken(64 * 1024).await;
        let t = Duration::from_secs(2);
        let limits = RpcLimits { max_calls: 2, max_served: 2, ..RpcLimits::default() };
        let tasks = Tasks::default();
        let caller = Connection::spawn(a, dialed, None, limits, &tasks);
        let _owner = Connection::spawn(b, accepted, Some(Arc::new(Polls)), limits, &tasks);
        let poll = |sid: &str| {
            let query = crate::engineio::EngineQuery::parse(&format!("EIO=4&transport=polling&sid={sid}")).unwrap();
            let method = crate::engineio::Method::Get;
            let req =
                crate::engineio::EngineRequest { method, query, binary_body: false, body: Bytes::new(), new_sid: None };
            Request::Engine { path: "/socket.io/".into(), req }
        };
        assert!(poll("s").waits_on_a_client());
        let mut polls = Vec::new();
        for n in 0..5 {
            polls.push(tokio::time::timeout(t, caller.send_request(poll(&format!("s{n}")))).await.unwrap().unwrap());
        }
        let history = || Request::History { nsp: "/chat".into(), room: "lobby".into() };
        for _ in 0..3 {
            assert_eq!(caller.call(history(), t).await.unwrap(), Response::Failed("answered".into()));
        }
        tasks.shutdown().await;
    }

    #[tokio::test]
    async fn pushes_queued_together_arrive_whole_and_in_order() {
        let ((a, dialed), (b, accepted)) = handshaken(1024).await;
        let tasks = Tasks::default();
        let sender = Connection::spawn(a, dialed, None, RpcLimits::default(), &tasks);
        // Queued while nobody reads: the writer seals whatever it finds queued at once, small
        // frames and one larger than a record among them.
        let record = |n: u64, len: usize| Push::Record {
            nsp: "/chat".into(),
            room: "lobby".into(),
            entry: crate::history::Entry { at_ms: n, id: (1, n), body: "x".repeat(len) },
        };
        let pushes: Vec<Push> = (0..200).map(|n| record(n, if n == 100 { 100_000 } else { 10 })).collect();
        for push in &pushes {
            sender.push(push.clone()).await.unwrap();
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _receiver = Connection::spawn(b, accepted, Some(Arc::new(Pushes(tx))), RpcLimits::default(), &tasks);
        for push in pushes {
            assert_eq!(rx.recv().await, Some(push));
        }
    }
}
