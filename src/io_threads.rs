//! The threads that serve the HTTP listener's connections: a single-threaded tokio runtime
//! each, and a connection stays on the thread it was handed to.
//!
//! On tokio's multi-thread runtime the task a socket's event wakes may run on any worker, and
//! a worker that queues work wakes a parked sibling to look for it: a `futex` and a context
//! switch that find nothing to do when the first worker runs the task itself. In the fan-out
//! benchmark at 800 messages/s (each message arrives at an idle node) that was about one
//! `futex` per message; with these threads it is one per twenty (`bench/analysis.md`).
//! Here a connection's tasks (hyper's, the WebSocket pump, what its requests spawn, such as a
//! session's timers) run on the thread whose I/O driver polls its socket, and no thread is
//! woken for another's work. A broadcast that reaches members served by another thread mostly
//! writes straight to their sockets (`engineio::direct`); only a full socket wakes its pump
//! over there.
//!
//! What this gives up is work stealing: a thread whose connections are busy cannot hand work
//! to an idle one. Connections are handed out in turn, so many clients share the threads
//! evenly; the node's other work (gossip, the internal RPC, timers of the cluster) stays on
//! the main runtime.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The connection threads of one HTTP server. Dropping them ends the threads (what still runs
/// there is dropped); [`IoThreads::stop`] also waits for them.
pub struct IoThreads {
    handles: Vec<Handle>,
    /// The thread the next connection goes to, modulo their number.
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl IoThreads {
    /// Starts `n` threads (at least one), named `io-0`, `io-1`…
    pub fn start(n: usize) -> io::Result<Self> {
        let n = n.max(1);
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let stopped = stop.clone();
            let thread = std::thread::Builder::new().name(format!("io-{i}")).spawn(move || {
                // `on_thread_park`: as the main runtime's workers, these batch their writes
                // while busy (`engineio::queue::batch`).
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_park(crate::engineio::on_worker_park)
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(stopped.cancelled());
                    }
                    Err(err) => {
                        let _ = tx.send(Err(err));
                    }
                }
            });
            let started = thread.and_then(|thread| {
                threads.push(thread);
                rx.recv().unwrap_or_else(|_| Err(io::Error::other("connection thread ended at start")))
            });
            match started {
                Ok(handle) => handles.push(handle),
                Err(err) => {
                    stop.cancel();
                    return Err(err);
                }
            }
        }
        Ok(Self { handles, next: AtomicUsize::new(0), stop, threads: Mutex::new(threads) })
    }

    /// One per core, as tokio's multi-thread runtime counts them.
    pub fn default_count() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// The runtime of the next connection: the threads in turn.
    pub fn next(&self) -> &Handle {
        &self.handles[self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()]
    }

    /// Ends the threads and waits for them. Call it once the server has stopped: a task still
    /// running there is dropped.
    pub async fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let joined = tokio::task::spawn_blocking(move || {
            threads.into_iter().map(JoinHandle::join).filter(Result::is_err).count()
        })
        .await;
        if !matches!(joined, Ok(0)) {
            warn!("a connection thread panicked");
        }
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_threads_in_turn_and_each_runs_its_own_tasks() {
        let threads = IoThreads::start(2).expect("threads start");
        assert_eq!(threads.handles.len(), 2);
        let mut names = Vec::new();
        for _ in 0..4 {
            let name = threads.next().spawn(async { std::thread::current().name().map(String::from) });
            names.push(name.await.expect("task runs").expect("named thread"));
        }
        assert_eq!(names, ["io-0", "io-1", "io-0", "io-1"]);
        threads.stop().await;
        // Stopped: a task handed to a thread now never runs.
        assert!(threads.handles[0].spawn(async {}).await.is_err());
    }
}
