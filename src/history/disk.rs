//! Room history on disk (`history.dir`): one redb file per node, `history.redb`, one row per
//! room (its key `namespace LF room`, its value the room's entries, bincode).
//!
//! Why redb: pure Rust (no C library to build or link, nothing to install on a host), one file,
//! ACID transactions with a checksummed commit, so a node killed mid-write opens on its last
//! commit; SQLite's SQL and its C build would buy nothing for a key-value table of rooms.
//!
//! Writes never block the async runtime: the store rings a bounded doorbell, and one thread of
//! this node's own takes every room changed since its last pass and commits them in one
//! transaction (at most one commit per [`MIN_COMMIT_INTERVAL`]), so a busy room costs one row
//! write per pass, not one per message. The file holds what the store holds: `per_room`
//! entries of at most `rooms` rooms; a room the store forgets is deleted. A missing file is
//! created (said at `info`); a file that cannot be opened as a redb database is moved aside
//! (`history.redb.corrupt-<ms>`, said at `error`) and the node starts empty; rows that cannot
//! be read are skipped and deleted (said at `warn`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableTable, TableDefinition};
use tracing::{error, info, warn};

use super::{merge, now_ms, Entry, HistoryStore, RoomId};

/// The file's name in `history.dir`.
pub const FILE: &str = "history.redb";
const ROOMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rooms");
/// Largest row read back, bytes (a room of 50 entries of 2,000 characters is ~400 KB).
const MAX_ROW: usize = 8 * 1024 * 1024;
/// At most one commit (and its fsync) per interval; what changes meanwhile goes in the next.
pub const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("history.dir {dir}: {source}")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("history file {path} is in use by another process")]
    InUse { path: PathBuf },
    #[error("history file {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("history file {path}: cannot move the unreadable file aside: {source}")]
    MoveAside { path: PathBuf, source: std::io::Error },
}

/// A failed write or delete (redb's error, boxed: it is large).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct WriteError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for WriteError {
    fn from(err: E) -> Self {
        Self(Box::new(err.into()))
    }
}

/// What opening the file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// No file: a new, empty one.
    Created,
    /// Rooms loaded; `skipped` rows unreadable, `dropped` rooms over the room cap.
    Loaded { rooms: usize, skipped: usize, dropped: usize },
    /// The file was unreadable and moved to this path; a new, empty one was created.
    MovedAside(PathBuf),
}

/// The open file.
pub struct Disk {
    /// `None` only between a failed write's close and the next open (see [`Disk::reopen`]).
    db: Option<Database>,
    path: PathBuf,
}

fn room_key((nsp, room): &RoomId) -> Vec<u8> {
    let mut key = Vec::with_capacity(nsp.len() + 1 + room.len());
    key.extend_from_slice(nsp.as_bytes());
    key.push(b'\n');
    key.extend_from_slice(room.as_bytes());
    key
}

fn room_of(key: &[u8]) -> Option<RoomId> {
    let key = std::str::from_utf8(key).ok()?;
    let (nsp, room) = key.split_once('\n')?;
    Some((nsp.to_owned(), room.to_owned()))
}

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_ROW>()
}

fn create(path: &Path) -> Result<Database, DatabaseError> {
    // redb reports a damaged file as an error; should it ever panic on one instead, that is
    // the same verdict.
    std::panic::catch_unwind(|| Database::create(path)).unwrap_or_else(|_| {
        Err(DatabaseError::Storage(redb::StorageError::Corrupted("redb panicked opening it".into())))
    })
}

impl Disk {
    /// Opens (or creates) `dir/history.redb` and loads it into `store`, keeping its newest
    /// `rooms` rooms. Blocking: call it off the async runtime.
    pub fn open(dir: &Path, store: &HistoryStore, rooms: usize) -> Result<(Self, Opened), DiskError> {
        std::fs::create_dir_all(dir).map_err(|source| DiskError::Dir { dir: dir.into(), source })?;
        let path = dir.join(FILE);
        let existed = path.exists();
        let (db, moved) = match create(&path) {
            Ok(db) => (db, None),
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(DiskError::InUse { path }),
            Err(err) => {
                let aside = dir.join(format!("{FILE}.corrupt-{}", now_ms()));
                error!(path = %path.display(), aside = %aside.display(), error = %err,
                    "room history file unreadable: moved aside, starting with no history");
                std::fs::rename(&path, &aside).map_err(|source| DiskError::MoveAside { path: path.clone(), source })?;
                let db =
                    create(&path).map_err(|err| DiskError::Open { path: path.clone(), reason: err.to_string() })?;
                (db, Some(aside))
            }
        };
        let disk = Self { db: Some(db), path };
        let opened = match moved {
            Some(aside) => Opened::MovedAside(aside),
            None if !existed => {
                info!(path = %disk.path.display(), "no room history file: starting with none");
                Opened::Created
            }
            None => disk.load(store, rooms)?,
        };
        // What was just loaded is on disk already: changes are noted from now on.
        store.keep_on_disk();
        Ok((disk, opened))
    }

    fn db(&self) -> Result<&Database, WriteError> {
        self.db.as_ref().ok_or_else(|| WriteError::from(std::io::Error::other("the history file is not open")))
    }

    /// Closes and opens the file again: after an I/O error redb refuses every later write of
    /// that open (`PreviousIo`), so a failed write is retried on a new one.
    fn reopen(&mut self) -> Result<(), DatabaseError> {
        self.db = None; // closed first: an open holds the file's lock
        self.db = Some(create(&self.path)?);
        Ok(())
    }

    fn open_error(&self, err: impl std::fmt::Display) -> DiskError {
        DiskError::Open { path: self.path.clone(), reason: err.to_string() }
    }

    fn load(&self, store: &HistoryStore, cap: usize) -> Result<Opened, DiskError> {
        let mut rows: Vec<(RoomId, Vec<Entry>)> = Vec::new();
        let mut bad: Vec<Vec<u8>> = Vec::new();
        {
            let read = self.db().map_err(|e| self.open_error(e))?.begin_read().map_err(|e| self.open_error(e))?;
            let table = match read.open_table(ROOMS) {
                Ok(table) => Some(table),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(err) => return Err(self.open_error(err)),
            };
            for row in table.iter().flat_map(|t| t.iter()).flatten() {
                let (key, value) = row.map_err(|e| self.open_error(e))?;
                let decoded = room_of(key.value()).and_then(|room| {
                    let (entries, _): (Vec<Entry>, usize) =
                        bincode::serde::decode_from_slice(value.value(), codec()).ok()?;
                    let mut clean = Vec::new();
                    merge(&mut clean, entries, store.per_room());
                    (!clean.is_empty()).then_some((room, clean))
                });
                match decoded {
                    Some(row) => rows.push(row),
                    None => bad.push(key.value().to_vec()),
                }
            }
        }
        // The newest rooms (by their last entry) within the cap, loaded oldest first so the
        // store's recency order matches.
        rows.sort_by_key(|(_, entries)| std::cmp::Reverse(entries.last().map(|e| e.at_ms)));
        let over: Vec<RoomId> = rows.iter().skip(cap).map(|(room, _)| room.clone()).collect();
        rows.truncate(cap);
        let loaded = rows.len();
        for (room, entries) in rows.into_iter().rev() {
            store.merge(&room, entries);
        }
        let skipped = bad.len();
        if !bad.is_empty() {
            warn!(path = %self.path.display(), rows = bad.len(), "unreadable room history rows skipped and deleted");
        }
        if !bad.is_empty() || !over.is_empty() {
            let deletes = bad.into_iter().chain(over.iter().map(room_key));
            self.delete(deletes).map_err(|e| self.open_error(e))?;
        }
        let opened = Opened::Loaded { rooms: loaded, skipped, dropped: over.len() };
        info!(path = %self.path.display(), ?opened, "room history loaded");
        Ok(opened)
    }

    fn delete(&self, keys: impl Iterator<Item = Vec<u8>>) -> Result<(), WriteError> {
        let write = self.db()?.begin_write()?;
        {
            let mut table = write.open_table(ROOMS)?;
            for key in keys {
                table.remove(key.as_slice())?;
            }
        }
        write.commit()?;
        Ok(())
    }

    /// Writes each room's copy (`None`: deletes it) in one transaction. A room whose copy
    /// cannot be encoded is skipped (and said), not the batch: retried whole, it would fail
    /// every batch after it.
    pub fn write(&self, batch: &[(RoomId, Option<Vec<Entry>>)]) -> Result<(), WriteError> {
        let write = self.db()?.begin_write()?;
        {
            let mut table = write.open_table(ROOMS)?;
            for (room, copy) in batch {
                let key = room_key(room);
                match copy {
                    Some(entries) => match bincode::serde::encode_to_vec(entries, codec()) {
                        Ok(value) => {
                            table.insert(key.as_slice(), value.as_slice())?;
                        }
                        Err(err) => {
                            error!(nsp = room.0, room = room.1, error = %err, "room history not saved: cannot encode it")
                        }
                    },
                    None => {
                        table.remove(key.as_slice())?;
                    }
                }
            }
        }
        write.commit()?;
        Ok(())
    }
}

/// The thread that writes the store's changes to disk; [`Writer::stop`] makes it write what is
/// left and end.
pub struct Writer {
    bell: SyncSender<()>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(disk: Disk, store: &Arc<HistoryStore>) -> Self {
        let (bell, rings) = sync_channel(1);
        store.set_doorbell(bell.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (weak, stopping) = (Arc::downgrade(store), stop.clone());
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || {
                let _node = span.enter();
                let mut disk = disk;
                let mut failures = 0u32;
                // After a failure: not before then (a second, doubling up to a minute).
                let mut retry_at: Option<Instant> = None;
                loop {
                    let rang = rings.recv_timeout(Duration::from_secs(1));
                    let last = stopping.load(Ordering::Acquire) || rang == Err(RecvTimeoutError::Disconnected);
                    if !last && retry_at.is_some_and(|at| Instant::now() < at) {
                        continue;
                    }
                    match write_pending(&weak, |batch| disk.write(batch)) {
                        Pass::StoreGone => return,
                        Pass::Written => {
                            failures = 0;
                            retry_at = None;
                        }
                        Pass::Failed(err) => {
                            failures += 1;
                            if failures.is_power_of_two() || last {
                                error!(path = %disk.path.display(), error = %err, failures, last,
                                    "room history not saved");
                            }
                            retry_at = Some(Instant::now() + RETRY_FIRST.saturating_mul(1 << failures.min(6)).min(RETRY_MAX));
                            if let Err(err) = disk.reopen() {
                                if failures.is_power_of_two() {
                                    error!(path = %disk.path.display(), error = %err, "room history file cannot be opened again");
                                }
                            }
                        }
                    }
                    if last {
                        return;
                    }
                    std::thread::sleep(MIN_COMMIT_INTERVAL);
                }
            })
            .ok();
        if thread.is_none() {
            error!("cannot start the room history writer thread: history will not be saved");
        }
        Self { bell, stop, thread }
    }

    /// Writes what is pending and ends the thread; waits for it off the async runtime.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.bell.try_send(());
        if let Some(thread) = self.thread.take() {
            if !matches!(tokio::task::spawn_blocking(move || thread.join()).await, Ok(Ok(()))) {
                error!("the room history writer thread failed; the last changes may not be saved");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.bell.try_send(());
    }
}

/// First wait before a failed write is tried again; it doubles with each failure in a row.
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between tries of a failing disk.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What one pass of the writer did.
enum Pass {
    StoreGone,
    /// Written, or nothing to write.
    Written,
    Failed(WriteError),
}

/// One pass: writes what changed. The rooms of a batch that fails are noted again, so a later
/// pass (see the writer's back-off) writes their copies as they are then: a failed write (a
/// full disk, say) does not leave them unsaved until they change again. Not the deletions of
/// rooms the store let go: retried, they would grow with every room name seen meanwhile; a
/// room left in the file that way is dropped at the next start if the store has more recent
/// rooms than it keeps.
fn write_pending(
    store: &Weak<HistoryStore>,
    write: impl FnOnce(&[(RoomId, Option<Vec<Entry>>)]) -> Result<(), WriteError>,
) -> Pass {
    let Some(store) = store.upgrade() else { return Pass::StoreGone };
    let batch = store.take_dirty();
    if batch.is_empty() {
        return Pass::Written;
    }
    match write(&batch) {
        Ok(()) => Pass::Written,
        Err(err) => {
            store.dirty_again(batch.into_iter().filter(|(_, copy)| copy.is_some()).map(|(room, _)| room));
            Pass::Failed(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry { at_ms: n, id: (7, n), body: format!("m{n}") }
    }

    fn room(r: &str) -> RoomId {
        ("/chat".into(), r.into())
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("clusterchat-history-{name}-{}-{}", std::process::id(), now_ms()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn rooms_survive_a_reopen_within_their_bounds() {
        let dir = temp_dir("reopen");
        {
            let store = HistoryStore::new(3, 2).unwrap();
            let (disk, opened) = Disk::open(&dir, &store, 2).unwrap();
            assert_eq!(opened, Opened::Created);
            store.merge(&room("a"), (1..=5).map(entry).collect());
            store.merge(&room("b"), vec![entry(6)]);
            disk.write(&store.take_dirty()).unwrap();
            store.merge(&room("c"), vec![entry(7)]); // forgets a (least recent)
            disk.write(&store.take_dirty()).unwrap();
        }
        let store = HistoryStore::new(3, 2).unwrap();
        let (_disk, opened) = Disk::open(&dir, &store, 2).unwrap();
        assert_eq!(opened, Opened::Loaded { rooms: 2, skipped: 0, dropped: 0 });
        assert!(store.entries(&room("a")).is_empty(), "a was evicted, on disk too");
        assert_eq!(store.entries(&room("b")), vec![entry(6)]);
        assert_eq!(store.rooms(), [room("b"), room("c")]);
        drop(_disk);
        // A smaller room cap keeps the newest.
        let store = HistoryStore::new(3, 1).unwrap();
        let (_disk, opened) = Disk::open(&dir, &store, 1).unwrap();
        assert_eq!(opened, Opened::Loaded { rooms: 1, skipped: 0, dropped: 1 });
        assert_eq!(store.rooms(), [room("c")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_file_is_moved_aside() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE), vec![0x5a; 10_000]).unwrap();
        let store = HistoryStore::new(3, 2).unwrap();
        let (disk, opened) = Disk::open(&dir, &store, 2).unwrap();
        let Opened::MovedAside(aside) = opened else { panic!("not moved aside: {opened:?}") };
        assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 10_000], "the bad file is kept for a look");
        store.merge(&room("a"), vec![entry(1)]);
        disk.write(&store.take_dirty()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_truncated_file_opens_or_is_moved_aside_never_fails() {
        let dir = temp_dir("truncated");
        {
            let store = HistoryStore::new(3, 10).unwrap();
            let (disk, _) = Disk::open(&dir, &store, 10).unwrap();
            for r in 0..10 {
                store.merge(&room(&r.to_string()), vec![entry(r)]);
            }
            disk.write(&store.take_dirty()).unwrap();
        }
        let file = dir.join(FILE);
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len / 2).unwrap();
        let store = HistoryStore::new(3, 10).unwrap();
        let (_disk, opened) = Disk::open(&dir, &store, 10).expect("a node starts on a truncated file");
        assert!(matches!(opened, Opened::Loaded { .. } | Opened::MovedAside(_)), "{opened:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The rooms of a batch that fails are written by the next pass, with their copies of
    /// then; a deletion (a room the store let go) is not retried.
    #[test]
    fn a_batch_that_fails_is_written_by_the_next_pass() {
        let store = Arc::new(HistoryStore::new(3, 2).unwrap());
        store.keep_on_disk();
        let weak = Arc::downgrade(&store);
        for r in ["a", "b", "c"] {
            store.merge(&room(r), vec![entry(1)]); // "a" is let go for "c"
        }
        let mut refused = Vec::new();
        let refuse = |batch: &[(RoomId, Option<Vec<Entry>>)]| {
            refused = batch.to_vec();
            Err(WriteError::from(std::io::Error::other("disk full")))
        };
        assert!(matches!(write_pending(&weak, refuse), Pass::Failed(_)));
        assert!(refused.contains(&(room("a"), None)), "the deletion was in the batch: {refused:?}");
        store.merge(&room("b"), vec![entry(2)]);
        let mut written = Vec::new();
        let pass = write_pending(&weak, |batch| {
            written = batch.to_vec();
            Ok(())
        });
        assert!(matches!(pass, Pass::Written));
        written.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            written,
            vec![(room("b"), Some(vec![entry(1), entry(2)])), (room("c"), Some(vec![entry(1)]))],
            "both rooms, as they are now"
        );
        assert!(store.take_dirty().is_empty(), "nothing left after the write");
    }

    /// After a failed write, the file is opened again and written to.
    #[test]
    fn a_reopened_file_takes_writes() {
        let dir = temp_dir("reopen");
        let store = HistoryStore::new(3, 10).unwrap();
        let (mut disk, _) = Disk::open(&dir, &store, 10).unwrap();
        disk.reopen().unwrap();
        disk.write(&[(room("a"), Some(vec![entry(1)]))]).unwrap();
        drop(disk);
        let again = HistoryStore::new(3, 10).unwrap();
        let (_disk, _) = Disk::open(&dir, &again, 10).unwrap();
        assert_eq!(again.entries(&room("a")), vec![entry(1)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_writer_saves_what_changes() {
        let dir = temp_dir("writer");
        let store = Arc::new(HistoryStore::new(3, 10).unwrap());
        let (disk, _) = Disk::open(&dir, &store, 10).unwrap();
        let writer = Writer::start(disk, &store);
        for n in 1..=4 {
            store.merge(&room("a"), vec![entry(n)]);
        }
        writer.stop().await;
        let again = HistoryStore::new(3, 10).unwrap();
        let (_disk, _) = Disk::open(&dir, &again, 10).unwrap();
        assert_eq!(again.entries(&room("a")), vec![entry(2), entry(3), entry(4)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
