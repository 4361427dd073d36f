//! Which records of this node's sessions their keepers have not confirmed yet: the sessions a
//! crash of this node now would not recover. Pure bookkeeping; the cluster adapter feeds it
//! the records it sends and the answers it gets.

use std::collections::HashMap;

/// A record sent to its keeper and not confirmed kept there yet.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pending {
    /// The newest version sent.
    version: u64,
    /// An answer other than "kept" came: the socket sends its whole record again.
    failed: bool,
}

/// Unconfirmed records by (namespace, pid). An entry ends when the newest version sent is
/// kept and none failed since, when its failure is taken to be sent again, or when the
/// session leaves this node; so it is bounded by the node's sessions.
#[derive(Debug, Default)]
pub struct Keeps {
    pending: HashMap<(String, String), Pending>,
}

impl Keeps {
    /// A record's `version` is on its way to its keeper.
    pub fn sent(&mut self, nsp: &str, pid: &str, version: u64) {
        let entry = self.pending.entry((nsp.to_owned(), pid.to_owned())).or_insert(Pending { version, failed: false });
        entry.version = entry.version.max(version);
    }

    /// The keeper's answer to `version`. A failure marks the record to be sent again, whole
    /// (the keeper may have missed a change): a later "kept" of a change does not clear it.
    pub fn answered(&mut self, nsp: String, pid: String, version: u64, kept: bool) {
        let key = (nsp, pid);
        if kept {
            if self.pending.get(&key).is_some_and(|p| !p.failed && p.version <= version) {
                self.pending.remove(&key);
            }
        } else {
            self.pending.entry(key).or_insert(Pending { version, failed: true }).failed = true;
        }
    }

    /// Takes the failed records of `nsp`: their sockets send them again (tracked afresh by
    /// [`Keeps::sent`]); a socket that is gone sends nothing and is forgotten.
    pub fn take_failed(&mut self, nsp: &str) -> Vec<String> {
        let mut failed = Vec::new();
        self.pending.retain(|(n, pid), p| {
            let take = p.failed && n == nsp;
            if take {
                failed.push(pid.clone());
            }
            !take
        });
        failed
    }

    /// The session left this node: nothing of it is to be sent again.
    pub fn released(&mut self, nsp: &str, pid: &str) {
        self.pending.remove(&(nsp.to_owned(), pid.to_owned()));
    }

    /// Records not confirmed kept: in flight, or failed and not yet sent again.
    pub fn count(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_unconfirmed_until_its_newest_version_is_kept() {
        let mut keeps = Keeps::default();
        keeps.sent("/", "p", 1);
        keeps.sent("/", "p", 2);
        assert_eq!(keeps.count(), 1);
        keeps.answered("/".into(), "p".into(), 1, true);
        assert_eq!(keeps.count(), 1, "version 2 is still in flight");
        keeps.answered("/".into(), "p".into(), 2, true);
        assert_eq!(keeps.count(), 0);
    }

    #[test]
    fn a_failure_stays_until_taken_and_sent_again() {
        let mut keeps = Keeps::default();
        keeps.sent("/", "p", 1);
        keeps.sent("/", "p", 2);
        keeps.answered("/".into(), "p".into(), 1, false);
        keeps.answered("/".into(), "p".into(), 2, true);
        assert_eq!(keeps.count(), 1, "a change kept after a failure does not confirm the record");
        assert_eq!(keeps.take_failed("/other"), Vec::<String>::new());
        assert_eq!(keeps.take_failed("/"), vec!["p".to_owned()]);
        assert_eq!(keeps.count(), 0, "taken: the resend is tracked afresh");
        keeps.sent("/", "p", 3);
        keeps.answered("/".into(), "p".into(), 3, true);
        assert_eq!(keeps.count(), 0);
    }

    #[test]
    fn a_session_that_leaves_is_forgotten() {
        let mut keeps = Keeps::default();
        keeps.sent("/", "p", 1);
        keeps.sent("/chat", "p", 1);
        keeps.released("/", "p");
        assert_eq!(keeps.count(), 1, "per namespace");
        keeps.answered("/".into(), "p".into(), 1, true);
        assert_eq!(keeps.count(), 1, "a late answer does not bring it back");
    }
}
