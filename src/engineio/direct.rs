//! Writing a frame straight to a WebSocket's TCP socket from the task that sends it.
//!
//! A room broadcast queues one frame per member, and each member's WebSocket pump is a task
//! that must then be woken, scheduled and polled (queue, gates, the split sink's lock,
//! tungstenite's framing) only to make the one write the frame needs. When a member's pump is
//! idle (nothing queued, nothing half-written) the sender can make that write itself: a
//! server frame is a 2-10 byte header and the payload, written with one `writev` from the
//! sender's thread, non-blocking. Only what the socket does not take at once goes to the
//! pump (see `queue`), which writes it before anything else.
//!
//! For that the HTTP layer hands the upgraded connection's `TcpStream` to both: to
//! tungstenite through [`SharedTcp`] (reads, and the writes of the pump), and to the session's
//! queue through [`Direct`] (the writes of the senders). The queue's lock decides who writes.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A WebSocket's socket as the senders see it: non-blocking writes, and a wait for room.
pub trait DirectSocket: Send + Sync + 'static {
    /// Writes what the socket takes now (`WouldBlock` if nothing).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Until the socket may take more.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
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
pub struct Direct(pub(crate) Arc<dyn DirectSocket>);

impl Direct {
    pub fn new(socket: Arc<dyn DirectSocket>) -> Self {
        Self(socket)
    }
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Direct")
    }
}

impl PartialEq for Direct {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
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
pub(crate) fn write_text(socket: &dyn DirectSocket, payload: &Bytes) -> Written {
    let (header, used) = text_header(payload.len());
    let total = used + payload.len();
    match socket.try_write_vectored(&[IoSlice::new(&header[..used]), IoSlice::new(payload)]) {
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
            let s = Takes(std::sync::Mutex::new((take, Vec::new())));
            let got = match write_text(&s, &payload) {
                Written::All => Vec::new(),
                Written::Part(rest) => rest.to_vec(),
                Written::None => whole.clone(),
            };
            let mut wire = s.0.lock().unwrap().1.clone();
            wire.extend_from_slice(&got);
            assert_eq!(wire, whole, "take {take}");
        }
    }
}
