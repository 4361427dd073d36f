//! A set of tasks with one owner: the owner's shutdown stops those whose later work no longer
//! matters and waits for every one, so nothing it started outlives it (ARCHITECTURE.md, *One
//! shutdown path*).

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The tasks of one owner (a Socket.IO server and its namespaces, an engine, the RPC listener
/// or dialer, the membership). Cloning gives another handle to the same set.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    /// Cancelled by [`Tasks::shutdown`]: ends the tasks started with [`Tasks::spawn_until_stopped`].
    stop: CancellationToken,
}

impl Tasks {
    /// Runs `task`, in the current span, to its end: the owner's shutdown waits for it. For
    /// work that ends on its own (with its session, or within a deadline) and must not be cut
    /// short, such as a reconnection being restored.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task.in_current_span());
    }

    /// Runs `task`, in the current span, until it ends or the owner shuts down: for timers,
    /// sweepers and answers nobody will read once the owner stops.
    pub fn spawn_until_stopped<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker.spawn(async move { stop.run_until_cancelled(task).await.unwrap_or(()) }.in_current_span());
    }

    /// A token cancelled when the owner shuts down (or when cancelled itself): for a task
    /// that must end its own way, e.g. a connection that closes, then drains.
    pub fn child_token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Stops the timers and waits until every task has ended. A task spawned afterwards (a
    /// late callback) still runs, and a timer ends at once.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
