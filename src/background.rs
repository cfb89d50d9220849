//! What the background threads that wait between passes share (the pruner, the reward
//! release, the job worker, the replica watch): a stop request with a wake-up, and the
//! thread that waits on it.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;

/// A stop request a background thread waits on between passes, and a wake-up that ends
/// one wait early.
#[derive(Default)]
pub(crate) struct Stop {
    state: Mutex<StopState>,
    changed: Condvar,
}

#[derive(Default)]
struct StopState {
    requested: bool,
    woken: bool,
}

impl Stop {
    fn update(&self, change: impl FnOnce(&mut StopState)) {
        change(&mut self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        self.changed.notify_all();
    }

    pub(crate) fn request(&self) {
        self.update(|state| state.requested = true);
    }

    /// Ends the current (or next) wait early, without stopping.
    pub(crate) fn wake(&self) {
        self.update(|state| state.woken = true);
    }

    /// Sleeps for `timeout`, or until a stop is requested or a wake-up comes; true when a
    /// stop was requested.
    pub(crate) fn wait(&self, timeout: std::time::Duration) -> bool {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |state| !state.requested && !state.woken)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.woken = false;
        state.requested
    }
}

/// A running background thread that waits on a [`Stop`] between passes.
/// [`StoppableThread::stop`] ends it; dropping it asks it to stop.
pub(crate) struct StoppableThread {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
    /// The thread in messages: "the pruning thread".
    what: &'static str,
}

impl StoppableThread {
    /// Starts the thread `name` running `body`, which is handed the stop it waits on.
    pub(crate) fn spawn(
        name: &str,
        what: &'static str,
        body: impl FnOnce(&Stop) + Send + 'static,
    ) -> anyhow::Result<StoppableThread> {
        let stop = Arc::new(Stop::default());
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn({
                let stop = stop.clone();
                move || body(&stop)
            })
            .with_context(|| format!("could not start {what}"))?;
        Ok(StoppableThread {
            stop,
            thread: Some(thread),
            what,
        })
    }

    /// Ends the thread's current wait.
    pub(crate) fn wake(&self) {
        self.stop.wake();
    }

    /// A handle that calls [`StoppableThread::wake`], for `db::listener`.
    pub(crate) fn waker(&self) -> impl Fn() + Send + 'static {
        let stop = self.stop.clone();
        move || stop.wake()
    }

    /// Asks the thread to stop after the pass it is running, and waits for it.
    /// Blocking: call it from a blocking context.
    pub(crate) fn stop(mut self) {
        self.stop.request();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("{} panicked", self.what);
            }
        }
    }
}

impl Drop for StoppableThread {
    fn drop(&mut self) {
        self.stop.request();
    }
}
