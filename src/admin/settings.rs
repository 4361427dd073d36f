//! `[admin]`: who may use the Admin UI and what the `/admin` namespace sends it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The environment variable that overrides `admin.password_hash` (as `CLUSTERCHAT_SECRET`
/// does the cluster secret): `./cluster.sh start` passes the demo's hash this way.
pub const PASSWORD_HASH_ENV: &str = "CLUSTERCHAT_ADMIN_PASSWORD_HASH";

/// The Admin UI's settings; the UI and the `/admin` namespace exist only when `[admin]` is in
/// the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// The user name the UI must give.
    pub username: String,
    /// The bcrypt hash of the UI's password (`clusterchat admin-hash` makes one);
    /// `CLUSTERCHAT_ADMIN_PASSWORD_HASH` overrides it.
    pub password_hash: String,
    /// Read-only: the UI sees everything, and every command (disconnect, join, leave, emit)
    /// is refused.
    pub read_only: bool,
    /// Most sockets the UI is told about, cluster-wide (`all_sockets` and the events that
    /// follow it). Past it the list is a stable subset (lowest socket ids of each node first);
    /// the counts in `server_stats` stay exact.
    pub max_sockets: usize,
    /// How often each node's stats (and the sockets' changes) reach the UI, ms.
    pub stats_interval_ms: u64,
    /// How long a session id handed to a logged-in UI lets it reconnect without the
    /// password, s.
    pub session_secs: u64,
    /// bcrypt checks under way at once on a node; more logins at that moment are refused
    /// (each check costs tens of milliseconds of CPU, by design).
    pub max_logins: usize,
    /// Admin UIs connected at once to a node (each asks every node for a snapshot every
    /// interval); more are refused.
    pub max_uis: usize,
    /// Directory of the UI's npm install (`node_modules/@socket.io/admin-ui` and its fonts).
    pub ui_dir: PathBuf,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            username: "admin".into(),
            password_hash: String::new(),
            read_only: false,
            max_sockets: 1000,
            stats_interval_ms: 2000,
            session_secs: 86_400,
            max_logins: 2,
            max_uis: 16,
            ui_dir: "admin".into(),
        }
    }
}

impl AdminSettings {
    /// The password hash, from the environment or the file.
    pub fn password_hash(&self) -> String {
        match std::env::var(PASSWORD_HASH_ENV).ok().filter(|s| !s.is_empty()) {
            Some(hash) => hash,
            None => self.password_hash.clone(),
        }
    }

    /// Rejects settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let hash = self.password_hash();
        if hash.is_empty() {
            return Err(format!(
                "admin.password_hash is required (a bcrypt hash: `clusterchat admin-hash`), or {PASSWORD_HASH_ENV}"
            ));
        }
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err("admin.password_hash must be a bcrypt hash ($2b$...): `clusterchat admin-hash`".into());
        }
        let checks = [
            (self.username.is_empty(), "admin.username must not be empty"),
            (self.max_sockets == 0, "admin.max_sockets must be > 0"),
            (self.stats_interval_ms < 100, "admin.stats_interval_ms must be at least 100"),
            (self.session_secs == 0, "admin.session_secs must be > 0"),
            (self.max_logins == 0, "admin.max_logins must be > 0"),
            (self.max_uis == 0, "admin.max_uis must be > 0"),
        ];
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err((*msg).into()),
            None => Ok(()),
        }
    }
}
