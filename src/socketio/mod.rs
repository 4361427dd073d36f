//! Socket.IO on top of Engine.IO: namespaces, events, acknowledgements, rooms.
//!
//! `packet` is the pure codec; `server` dispatches each client's packets; `namespace` holds
//! the application's handlers and the room table; `socket` is one client in one namespace.

pub mod adapter;
pub mod namespace;
pub mod packet;
pub mod recovery;
pub mod server;
pub mod socket;

pub use adapter::{Adapter, Emitter, FoundSession, Labels, LocalAdapter, OnSent, PresenceCause, PresenceChange, Sent};
pub use namespace::{ConnectRequest, Event, Namespace, NamespaceBuilder, Room};
pub use recovery::{Keeper, RecoveryConfig};
pub use server::{SocketIo, SocketIoConfig};
pub use socket::{AckError, AckResponse, AckSender, Socket};

/// A socket id (distinct from the Engine.IO session id, as the protocol requires).
pub(crate) fn new_socket_id() -> std::sync::Arc<str> {
    crate::engineio::session::new_sid()
}
