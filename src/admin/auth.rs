//! The Admin UI's login, as `instrument()` does it: the CONNECT auth payload carries
//! `{username, password}`, checked against a bcrypt hash, or `{sessionId}` from an earlier
//! login. Unlike the reference's in-memory session store, a session id here is signed (HMAC
//! with a key derived from the password hash) and carries its expiry, so every node of the
//! cluster accepts it without shared state, and a new password ends every session.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The CONNECT_ERROR message the UI recognises as wrong credentials.
pub const INVALID_CREDENTIALS: &str = "invalid credentials";

/// Most bytes of a password or user name looked at (bcrypt itself reads 72).
const MAX_CREDENTIAL: usize = 256;

/// Checks logins and session ids against one password hash.
pub struct Login {
    username: String,
    hash: String,
    /// Key of the session ids' HMAC, derived from the hash.
    session_key: [u8; 32],
    session_ttl: Duration,
    /// bcrypt checks under way, at most `max_checks`.
    checks: AtomicUsize,
    max_checks: usize,
}

/// A successful login: `Some(session id)` for one made with the password (the UI keeps it to
/// reconnect), `None` for one made with a session id.
pub type LoginResult = Result<Option<String>, String>;

impl Login {
    pub fn new(username: String, hash: String, session_ttl: Duration, max_checks: usize) -> Self {
        let session_key =
            Sha256::new().chain_update(b"clusterchat admin session\n").chain_update(&hash).finalize().into();
        Self { username, hash, session_key, session_ttl, checks: AtomicUsize::new(0), max_checks }
    }

    /// Checks a CONNECT auth payload. A password is checked against the bcrypt hash (tens of
    /// milliseconds) on the runtime's blocking threads, at most `max_checks` at once; more are
    /// refused.
    pub async fn check(&self, auth: &Value) -> LoginResult {
        if let Some(id) = auth.get("sessionId").and_then(Value::as_str) {
            if self.session_valid(id, now()) {
                return Ok(None);
            }
        }
        let text = |key: &str| auth.get(key).and_then(Value::as_str).filter(|s| s.len() <= MAX_CREDENTIAL);
        let (Some(username), Some(password)) = (text("username"), text("password")) else {
            return Err(INVALID_CREDENTIALS.into());
        };
        let Some(_checking) = Checking::start(&self.checks, self.max_checks) else {
            return Err("too many logins at once, try again".into());
        };
        // Checked whatever the user name, so a wrong name takes as long as a wrong password.
        let (password, hash) = (password.to_owned(), self.hash.clone());
        let check = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false));
        let matches = check.await.unwrap_or(false);
        if matches && username == self.username {
            Ok(Some(self.new_session(now())))
        } else {
            Err(INVALID_CREDENTIALS.into())
        }
    }

    /// `<expiry, unix s>.<hex HMAC of the user name and expiry>`.
    fn new_session(&self, now: u64) -> String {
        let expiry = now.saturating_add(self.session_ttl.as_secs());
        format!("{expiry}.{}", hex(&self.mac(expiry)))
    }

    fn session_valid(&self, id: &str, now: u64) -> bool {
        let Some((expiry, mac)) = id.split_once('.') else { return false };
        let Ok(expiry) = expiry.parse::<u64>() else { return false };
        let Some(mac) = unhex(mac) else { return false };
        expiry > now && self.verifier(expiry).verify_slice(&mac).is_ok()
    }

    fn verifier(&self, expiry: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.session_key).expect("HMAC takes any key length");
        mac.update(self.username.as_bytes());
        mac.update(b"\n");
        mac.update(&expiry.to_be_bytes());
        mac
    }

    fn mac(&self, expiry: u64) -> Vec<u8> {
        self.verifier(expiry).finalize().into_bytes().to_vec()
    }
}

/// A password check under way: counted in `checks` until dropped (also when the login's
/// future is dropped before the check ends).
struct Checking<'a>(&'a AtomicUsize);

impl<'a> Checking<'a> {
    /// `None` if `max` checks are under way already.
    fn start(checks: &'a AtomicUsize, max: usize) -> Option<Self> {
        if checks.fetch_add(1, Ordering::AcqRel) >= max {
            checks.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(checks))
    }
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn login() -> Login {
        let hash = bcrypt::hash("right", 4).unwrap();
        Login::new("admin".into(), hash, Duration::from_secs(60), 2)
    }

    #[tokio::test]
    async fn password_then_session_id() {
        let l = login();
        let session = l.check(&json!({ "username": "admin", "password": "right" })).await.unwrap().unwrap();
        assert_eq!(l.check(&json!({ "sessionId": session })).await, Ok(None));
        for bad in [
            json!({ "username": "admin", "password": "wrong" }),
            json!({ "username": "root", "password": "right" }),
            json!({ "username": "admin" }),
            json!({ "username": "admin", "password": 7 }),
            json!({ "sessionId": "1.abc" }),
            json!({ "sessionId": format!("9{session}") }),
            json!(null),
            json!([1, 2]),
        ] {
            assert_eq!(l.check(&bad).await, Err(INVALID_CREDENTIALS.into()), "{bad}");
        }
    }

    #[test]
    fn at_most_max_checks_run_at_once() {
        let checks = AtomicUsize::new(0);
        let first = Checking::start(&checks, 2).expect("the first");
        let second = Checking::start(&checks, 2).expect("the second");
        assert!(Checking::start(&checks, 2).is_none(), "a third is refused");
        drop(first);
        let third = Checking::start(&checks, 2).expect("room again once one ends");
        drop((second, third));
        assert_eq!(checks.load(Ordering::Acquire), 0);
    }

    #[test]
    fn session_ids_expire_and_belong_to_one_password() {
        let l = login();
        let id = l.new_session(1000);
        assert!(l.session_valid(&id, 1059));
        assert!(!l.session_valid(&id, 1060));
        // Another password hash (a new password) makes other session ids.
        let other = Login::new("admin".into(), bcrypt::hash("right", 4).unwrap(), Duration::from_secs(60), 2);
        assert!(!other.session_valid(&id, 1000));
        // A forged expiry does not match its MAC.
        let (_, mac) = id.split_once('.').unwrap();
        assert!(!l.session_valid(&format!("99999.{mac}"), 1000));
        for junk in ["", ".", "x.y", "1000.zz", "1000.é"] {
            assert!(!l.session_valid(junk, 0), "{junk}");
        }
    }
}
