//! Writing a frame straight to a WebSocket's TCP socket from the task that sends it.
//!
//! A room broadcast queues one frame per member, and each member's WebSocket pump is a task
//! that must then be woken, scheduled and polled (queue, gates, the split sink's lock,
//! tungstenite's framing) only to make the one write the frame needs. When a member's pump is
//! idle (nothing queued, nothing half-written) the sender can make that write itself: a
//! server frame is a 2-10 byte header and the payload, written with one `send` from the
//! sender's thread, non-blocking. Only what the socket does not take at once goes to the
//! pump (see `queue`), which writes it before anything else.
//!
//! For that the HTTP layer hands the upgraded connection's `TcpStream` to both: to
//! tungstenite through [`SharedTcp`] (reads, and the writes of the pump), and to the session's
//! queue through [`Direct`] (the writes of the senders). The queue's lock decides who writes.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A WebSocket's socket as the senders see it: non-blocking writes, and a wait for room.
pub trait DirectSocket: Send + Sync + 'static {
    /// Writes what the socket takes now (`WouldBlock` if nothing), noting a full socket for
    /// [`DirectSocket::poll_write_ready`].
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Until the socket may take more.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// Frames up to this size are copied into one buffer and sent with one `send`.
const GATHER_MAX: usize = 1024;

/// Writes what the socket `fd` takes now, straight to the kernel, past tokio's readiness (a
/// cache miss per write on a fan-out over thousands of sockets): a full socket is then found
/// by the pump's own write, which goes through tokio and so waits correctly. A small frame is
/// gathered into one buffer for a `send`, the kernel's shortest path for a socket write (a
/// `writev` goes through the file layer first).
/// `MSG_NOSIGNAL`: a peer gone writes an error, not a `SIGPIPE` (were the process not to
/// ignore it, as Rust's runtime does, it would end the process).
fn send_now(fd: &impl AsFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let socket = socket2::SockRef::from(fd);
    let flags = libc::MSG_NOSIGNAL;
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    match bufs {
        [one] => socket.send_with_flags(one, flags),
        _ if total <= GATHER_MAX => {
            // Not zeroed first: only what is copied in is touched.
            let mut gathered = smallvec::SmallVec::<[u8; GATHER_MAX]>::new();
            for b in bufs {
                gathered.extend_from_slice(b);
            }
            socket.send_with_flags(&gathered, flags)
        }
        _ => socket.send_vectored_with_flags(bufs, flags),
    }
}

impl DirectSocket for TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }
}

/// The socket of a WebSocket that senders may write to (carried from the HTTP layer to the
/// engine in [`super::EngineQuery::direct`]; never serialized: a WebSocket relayed from
/// another node has none).
#[derive(Clone)]
pub struct Direct {
    /// Private, like `fd`, and never reassigned: `fd` is valid because this is the stream
    /// that owns it (see [`Direct::write_now`]).
    socket: Arc<dyn DirectSocket>,
    /// The descriptor `socket` owns, if it is a [`TcpStream`] (see [`Direct::tcp`]). Set only
    /// with `socket`, never changed apart from it.
    fd: Option<RawFd>,
}

impl Direct {
    pub fn new(socket: Arc<dyn DirectSocket>) -> Self {
        Self { socket, fd: None }
    }

    /// A TCP stream's socket: the senders' writes go to its descriptor, kept here, without
    /// reading the stream itself (another allocation, a cache miss per delivery on a fan-out).
    pub fn tcp(tcp: Arc<TcpStream>) -> Self {
        let fd = tcp.as_raw_fd();
        Self { socket: tcp, fd: Some(fd) }
    }

    /// The socket, for the pump's writes (which wait through tokio).
    pub(crate) fn socket(&self) -> &Arc<dyn DirectSocket> {
        &self.socket
    }

    /// Writes what the socket takes now, for a sender whose leftovers go to the pump. A TCP
    /// stream's is written past tokio's readiness (see `send_now`); the pump's own write then
    /// notes a full socket, so that its wait waits. Any other socket writes as the pump does.
    pub(crate) fn write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.fd {
            // SAFETY: `fd` is the descriptor of the `TcpStream` in `self.socket`: `Direct::tcp`
            // is the only place it is set, both fields are private to this module, which
            // never reassigns either (a `Direct` is only cloned or moved whole), and nothing
            // closes the stream's descriptor but its drop (`SharedTcp::poll_shutdown` does
            // not). `self` holds that stream, so the descriptor stays open for this borrow.
            Some(fd) => send_now(&unsafe { BorrowedFd::borrow_raw(fd) }, bufs),
            None => self.socket.try_write_vectored(bufs),
        }
    }
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Direct")
    }
}

impl PartialEq for Direct {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.socket, &other.socket)
    }
}

impl Eq for Direct {}

/// The header of an unmasked, final WebSocket text frame of `len` payload bytes: the bytes
/// and how many of them are used.
pub(crate) fn text_header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x81; // FIN, text
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= usize::from(u16::MAX) {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// What a write of one text frame left.
pub(crate) enum Written {
    /// All of it.
    All,
    /// The socket took part of it: these bytes must follow before anything else.
    Part(Bytes),
    /// Nothing (the socket is full, or failed): the frame goes to the pump.
    None,
}

/// Writes a text frame with `payload` to `socket` now, as far as it takes it.
pub(crate) fn write_text(socket: &Direct, payload: &Bytes) -> Written {
    let (header, used) = text_header(payload.len());
    let total = used + payload.len();
    match socket.write_now(&[IoSlice::new(&header[..used]), IoSlice::new(payload)]) {
        Ok(n) if n >= total => Written::All,
        Ok(0) | Err(_) => Written::None,
        Ok(n) if n < used => {
            let mut rest = Vec::with_capacity(total - n);
            rest.extend_from_slice(&header[n..used]);
            rest.extend_from_slice(payload);
            Written::Part(rest.into())
        }
        Ok(n) => Written::Part(payload.slice(n - used..)),
    }
}

/// Writes all of `rest` to `socket`, waiting for room as needed.
pub(crate) async fn write_all(socket: &dyn DirectSocket, mut rest: Bytes) -> io::Result<()> {
    std::future::poll_fn(|cx| {
        while rest.has_remaining() {
            ready!(socket.poll_write_ready(cx))?;
            match socket.try_write_vectored(&[IoSlice::new(&rest)]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => rest.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

/// An upgraded connection's socket, shared between tungstenite (this) and the senders'
/// [`Direct`] writes; `prefix` is what the HTTP layer had read past the upgrade request.
pub struct SharedTcp {
    tcp: Arc<TcpStream>,
    prefix: Bytes,
}

impl SharedTcp {
    pub fn new(tcp: Arc<TcpStream>, prefix: Bytes) -> Self {
        let mut me = Self { tcp, prefix: Bytes::new() };
        me.set_prefix(prefix);
        me
    }

    /// Keeps `prefix` only while it has bytes: even empty, a slice of hyper's read buffer
    /// would keep the whole buffer (kilobytes) for the connection's life.
    fn set_prefix(&mut self, prefix: Bytes) {
        self.prefix = if prefix.is_empty() { Bytes::new() } else { prefix };
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.prefix.has_remaining() {
            let mut prefix = std::mem::take(&mut me.prefix);
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            me.set_prefix(prefix);
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(me.tcp.poll_read_ready(cx))?;
            // tungstenite reads into an initialised buffer: this fills nothing.
            match me.tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The socket closes when its last holder drops it (the queue lets go of its [`Direct`]
    /// when the pump ends).
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn headers_by_length() {
        assert_eq!(&text_header(5).0[..text_header(5).1], &[0x81, 5]);
        assert_eq!(&text_header(125).0[..2], &[0x81, 125]);
        assert_eq!(&text_header(126).0[..text_header(126).1], &[0x81, 126, 0, 126]);
        assert_eq!(&text_header(65535).0[..4], &[0x81, 126, 0xff, 0xff]);
        assert_eq!(&text_header(65536).0[..text_header(65536).1], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    /// A socket that takes at most `take` bytes per write and records them.
    struct Takes(std::sync::Mutex<(usize, Vec<u8>)>);

    impl DirectSocket for Takes {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut me = self.0.lock().unwrap();
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(me.0 - n);
                me.1.extend_from_slice(&b[..k]);
                n += k;
            }
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }

        fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_part_written_frame_leaves_exactly_the_rest() {
        let payload = Bytes::from_static(b"42[\"m\"]");
        let whole = [&[0x81, 7][..], &payload[..]].concat();
        for take in 0..=whole.len() {
            let s = Arc::new(Takes(std::sync::Mutex::new((take, Vec::new()))));
            let got = match write_text(&Direct::new(s.clone()), &payload) {
                Written::All => Vec::new(),
                Written::Part(rest) => rest.to_vec(),
                Written::None => whole.clone(),
            };
            let mut wire = s.0.lock().unwrap().1.clone();
            wire.extend_from_slice(&got);
            assert_eq!(wire, whole, "take {take}");
        }
    }

    /// A connected pair on loopback with small buffers, so the writer fills up quickly.
    async fn small_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpSocket::new_v4().unwrap();
        listener.set_recv_buffer_size(4096).unwrap();
        listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listener.listen(1).unwrap();
        let writer = tokio::net::TcpSocket::new_v4().unwrap();
        writer.set_send_buffer_size(4096).unwrap();
        let (writer, accepted) = tokio::join!(writer.connect(listener.local_addr().unwrap()), listener.accept());
        (writer.unwrap(), accepted.unwrap().0)
    }

    /// A socket that counts write attempts and fails past `CAP` of them: a writer spinning on
    /// a full socket ends in an error instead of a hung test.
    struct Counted {
        tcp: Arc<TcpStream>,
        attempts: std::sync::atomic::AtomicUsize,
    }

    impl Counted {
        const CAP: usize = 10_000;

        fn attempt(&self) -> io::Result<()> {
            match self.attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                n if n < Self::CAP => Ok(()),
                _ => Err(io::Error::other("spinning on a full socket")),
            }
        }
    }

    impl DirectSocket for Counted {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.attempt()?;
            self.tcp.try_write_vectored(bufs)
        }

        fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.tcp.poll_write_ready(cx)
        }
    }

    /// The senders' writes (to the descriptor, see [`Direct::tcp`]) bypass tokio's readiness:
    /// once one found the socket full, the pump's wait for room must still wait (not spin on
    /// a stale "writable"), and every byte must arrive once, in order, small frames (gathered)
    /// and large (vectored).
    #[tokio::test]
    async fn a_full_socket_met_by_a_sender_is_then_written_by_the_pump() {
        use tokio::io::AsyncReadExt;
        let (tcp, mut reader) = small_pair().await;
        let tcp = Arc::new(tcp);
        let senders = Direct::tcp(tcp.clone());
        let pump = Counted { tcp, attempts: Default::default() };
        let small = Bytes::from(vec![b's'; 100]);
        let large = Bytes::from(vec![b'L'; 3 * GATHER_MAX]);
        let mut expected = Vec::new();
        let mut frames = 0;
        let rest = loop {
            let payload = if frames % 3 == 0 { &small } else { &large };
            frames += 1;
            let (header, used) = text_header(payload.len());
            let before = expected.len();
            expected.extend_from_slice(&header[..used]);
            expected.extend_from_slice(payload);
            match write_text(&senders, payload) {
                Written::All => {}
                Written::Part(rest) => break rest,
                Written::None => break Bytes::from(expected[before..].to_vec()),
            }
            assert!(expected.len() < 64 << 20, "the socket never filled");
        };
        assert!(frames > 3, "both sizes were written before the socket filled");
        let pumping = write_all(&pump, rest);
        let mut pumping = std::pin::pin!(pumping);
        // Nobody reads yet: the pump must wait for room, not spin.
        let first = std::future::poll_fn(|cx| Poll::Ready(pumping.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the pump did not wait for room: {first:?}");
        // At most two attempts before it waits (tokio's budget would end a spin after ~128
        // with Pending too).
        let attempts = pump.attempts.load(std::sync::atomic::Ordering::Relaxed);
        assert!(attempts <= 2, "{attempts} write attempts by the pump on a full socket: it spun");
        let mut got = vec![0u8; expected.len()];
        let (read, written) = tokio::join!(reader.read_exact(&mut got), pumping);
        read.unwrap();
        written.unwrap();
        assert!(got == expected, "the bytes arrived out of order or changed");
    }
}
