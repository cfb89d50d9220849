//! The background thread that prunes expired rows (`domain::maintenance::prune`).
//!
//! Started by `Application::build` and stopped with the server, like the mail worker. It
//! tries a pass at start and then every [`PRUNE_INTERVAL`]; the pass itself makes sure
//! that, of several server processes on one database, only one runs it per interval.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;

use crate::db::DbPool;
use crate::domain::maintenance::{self, PRUNE_INTERVAL};

/// A stop request a background thread waits on between passes, and a wake-up that ends
/// one wait early (also used by `reward_release`).
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

/// The running pruner. [`Pruner::stop`] ends it; dropping it asks it to stop.
pub struct Pruner {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl Pruner {
    /// `webhook_retention`: how long webhook attempts are kept.
    pub fn start(pool: DbPool, webhook_retention: chrono::Duration) -> anyhow::Result<Pruner> {
        let stop = Arc::new(Stop::default());
        let thread = std::thread::Builder::new()
            .name("pruner".to_string())
            .spawn({
                let stop = stop.clone();
                move || run(&stop, &pool, webhook_retention)
            })
            .context("could not start the pruning thread")?;
        Ok(Pruner {
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the pruner to stop after the pass it is running, and waits for it.
    /// Blocking: call it from a blocking context.
    pub fn stop(mut self) {
        self.stop.request();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the pruning thread panicked");
            }
        }
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        self.stop.request();
    }
}

fn run(stop: &Stop, pool: &DbPool, webhook_retention: chrono::Duration) {
    let min_gap = chrono::Duration::from_std(PRUNE_INTERVAL).unwrap_or_else(|_| chrono::Duration::minutes(5));
    loop {
        pass(pool, min_gap, webhook_retention);
        if stop.wait(PRUNE_INTERVAL) {
            break;
        }
    }
}

fn pass(pool: &DbPool, min_gap: chrono::Duration, webhook_retention: chrono::Duration) {
    // A database that is away now is tried again at the next interval.
    let result = pool
        .get()
        .map_err(|error| anyhow::anyhow!(error))
        .and_then(|mut conn| {
            maintenance::prune_with(&mut conn, min_gap, webhook_retention).map_err(anyhow::Error::from)
        });
    match result {
        Ok(Some((pruned, webhooks))) => tracing::info!(
            sessions = pruned.sessions,
            webhook_attempts = webhooks.attempts,
            webhook_deliveries = webhooks.deliveries,
            login_failures = pruned.login_failures,
            one_time_links = pruned.one_time_tokens,
            rate_windows = pruned.rate_windows,
            "pruned expired rows"
        ),
        Ok(None) => tracing::debug!("another process pruned recently"),
        Err(error) => tracing::warn!(error = %error, "pruning expired rows failed"),
    }
}
