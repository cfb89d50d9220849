//! The background thread that prunes expired rows (`domain::maintenance::prune`).
//!
//! Started by `Application::build` and stopped with the server, like the mail worker. It
//! tries a pass at start and then every [`PRUNE_INTERVAL`]; the pass itself makes sure
//! that, of several server processes on one database, only one runs it per interval.

use crate::background::{Stop, StoppableThread};
use crate::db::DbPool;
use crate::domain::maintenance::{self, PRUNE_INTERVAL};

/// The running pruner. [`Pruner::stop`] ends it; dropping it asks it to stop.
pub struct Pruner {
    thread: StoppableThread,
}

impl Pruner {
    /// `webhook_retention`: how long webhook attempts are kept.
    pub fn start(pool: DbPool, webhook_retention: chrono::Duration) -> anyhow::Result<Pruner> {
        let thread = StoppableThread::spawn("pruner", "the pruning thread", move |stop| {
            run(stop, &pool, webhook_retention)
        })?;
        Ok(Pruner { thread })
    }

    /// Asks the pruner to stop after the pass it is running, and waits for it.
    /// Blocking: call it from a blocking context.
    pub fn stop(self) {
        self.thread.stop();
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
