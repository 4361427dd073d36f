//! Engine.IO: the transport layer under Socket.IO (protocol revisions 3 and 4).
//!
//! `packet` and `payload` are pure codecs; `request` and `error` are the plain-data requests,
//! responses and errors; `session` is one client's queue and heartbeat; `lifecycle` drives every session's heartbeat
//! and cleanup from one task; `engine` dispatches.

pub mod direct;
pub mod engine;
pub mod error;
mod gate;
mod lifecycle;
pub mod packet;
pub mod payload;
mod queue;
pub mod request;
pub mod session;

pub use engine::{Engine, EngineConfig};
pub use error::EngineError;
pub use packet::{Frame, PacketType, ProtocolVersion};
pub use queue::on_worker_park;
pub use request::{ContentType, EngineQuery, EngineRequest, EngineResponse, Method, TransportKind};
pub(crate) use session::Outbox;
pub use session::{CloseReason, EngineHandler, Message, SendError, Session, Sid};

/// A waker that counts its wakes, for the tests of what polls what (`gate`, `queue`).
#[cfg(test)]
pub(crate) struct WakeCount(pub std::sync::atomic::AtomicUsize);

#[cfg(test)]
impl std::task::Wake for WakeCount {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
