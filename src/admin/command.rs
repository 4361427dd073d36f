//! The UI's commands (`_disconnect`, `join`, `leave`, `emit`): parsed from its events'
//! arguments, carried to every node, and applied there to the sockets they select.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engineio::CloseReason;
use crate::socketio::{Namespace, Socket, SocketIo};

/// Longest room name or event name a command may carry, in bytes.
const MAX_NAME: usize = 256;

/// A command on the sockets of one namespace that `filter` selects: a socket id, or a room
/// (every socket in it, on every node); none selects them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Disconnect {
        nsp: String,
        close: bool,
        filter: Option<String>,
    },
    Join {
        nsp: String,
        room: String,
        filter: Option<String>,
    },
    Leave {
        nsp: String,
        room: String,
        filter: Option<String>,
    },
    /// `args` as JSON text (bincode cannot carry `serde_json::Value`).
    Emit {
        nsp: String,
        filter: Option<String>,
        event: String,
        args: String,
    },
}

/// The UI event names of the commands.
pub const EVENTS: [&str; 4] = ["_disconnect", "join", "leave", "emit"];

impl Command {
    /// Parses a command event's arguments (as `ClientEvents` in the package's typings).
    pub fn parse(event: &str, args: &[Value]) -> Result<Self, String> {
        let text = |i: usize, what: &str| -> Result<String, String> {
            match args.get(i) {
                Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_NAME => Ok(s.clone()),
                _ => Err(format!(
                    "{event}: argument {} ({what}) must be a non-empty string of at most {MAX_NAME} bytes",
                    i + 1
                )),
            }
        };
        let filter = |i: usize| -> Result<Option<String>, String> {
            match args.get(i) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(_) => text(i, "filter: a socket id or a room").map(Some),
            }
        };
        match event {
            "_disconnect" => Ok(Self::Disconnect {
                nsp: text(0, "namespace")?,
                close: args.get(1).and_then(Value::as_bool).unwrap_or(false),
                filter: filter(2)?,
            }),
            "join" => Ok(Self::Join { nsp: text(0, "namespace")?, room: text(1, "room")?, filter: filter(2)? }),
            "leave" => Ok(Self::Leave { nsp: text(0, "namespace")?, room: text(1, "room")?, filter: filter(2)? }),
            "emit" => Ok(Self::Emit {
                nsp: text(0, "namespace")?,
                filter: filter(1)?,
                event: text(2, "event name")?,
                args: Value::Array(args.get(3..).unwrap_or_default().to_vec()).to_string(),
            }),
            other => Err(format!("unknown command {other}")),
        }
    }

    fn target(&self) -> (&str, Option<&str>) {
        match self {
            Self::Disconnect { nsp, filter, .. }
            | Self::Join { nsp, filter, .. }
            | Self::Leave { nsp, filter, .. }
            | Self::Emit { nsp, filter, .. } => (nsp, filter.as_deref()),
        }
    }

    /// Applies the command to this node's sockets; returns how many it acted on.
    pub async fn apply_local(&self, io: &SocketIo) -> Result<usize, String> {
        let (nsp, filter) = self.target();
        let ns = io.namespace(nsp).ok_or_else(|| format!("no namespace {nsp}"))?;
        let sockets = select(ns, filter);
        match self {
            Self::Disconnect { close, .. } => {
                for socket in &sockets {
                    socket.disconnect();
                    if *close {
                        socket.session().close(CloseReason::ServerClose);
                    }
                }
            }
            Self::Join { room, .. } => {
                let joined: Vec<_> = sockets.iter().filter_map(|s| s.join(room)).collect();
                futures_util::future::join_all(joined).await;
            }
            Self::Leave { room, .. } => {
                for socket in &sockets {
                    socket.leave(room);
                }
            }
            Self::Emit { event, args, .. } => {
                let args = match serde_json::from_str(args) {
                    Ok(Value::Array(args)) => args,
                    _ => return Err("emit: arguments are not a JSON array".into()),
                };
                for socket in &sockets {
                    if let Err(err) = socket.emit(event, args.clone()) {
                        tracing::debug!(socket = %socket.id(), error = %err, "admin emit not queued");
                    }
                }
            }
        }
        Ok(sockets.len())
    }
}

/// The sockets `filter` selects here: the socket with that id, or the members of that room.
fn select(ns: &Namespace, filter: Option<&str>) -> Vec<Arc<Socket>> {
    match filter {
        None => ns.sockets(),
        Some(filter) => match ns.socket(filter) {
            Some(socket) => vec![socket],
            None => ns.room_members(filter).to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_ui_commands() {
        assert_eq!(
            Command::parse("_disconnect", &[json!("/chat"), json!(false), json!("abc")]),
            Ok(Command::Disconnect { nsp: "/chat".into(), close: false, filter: Some("abc".into()) })
        );
        assert_eq!(
            Command::parse("join", &[json!("/chat"), json!("garden")]),
            Ok(Command::Join { nsp: "/chat".into(), room: "garden".into(), filter: None })
        );
        assert_eq!(
            Command::parse("emit", &[json!("/chat"), json!(null), json!("hello"), json!(1), json!({ "a": 2 })]),
            Ok(Command::Emit {
                nsp: "/chat".into(),
                filter: None,
                event: "hello".into(),
                args: "[1,{\"a\":2}]".into()
            })
        );
        for (event, args) in [
            ("join", vec![json!("/chat")]),
            ("join", vec![json!("/chat"), json!(3)]),
            ("leave", vec![json!(null), json!("r")]),
            ("_disconnect", vec![]),
            ("emit", vec![json!("/chat"), json!(5), json!("e")]),
            ("emit", vec![json!("/chat"), json!(null), json!("x".repeat(300))]),
            ("explode", vec![json!("/chat")]),
        ] {
            assert!(Command::parse(event, &args).is_err(), "{event} {args:?}");
        }
    }
}
