//! The background thread that releases held rewards (`domain::rewards::credit::release_due`).
//!
//! Started by `Application::build` and stopped with the server, like the pruner. Every
//! `REFERDESK_REWARD_RELEASE_SECS` seconds it credits the rewards whose hold is over
//! (approved ones, and pending ones that need no manual approval). Several server
//! processes on one database may all run it: the release claims rows with
//! `FOR UPDATE SKIP LOCKED`, so each reward is credited exactly once.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::db::DbPool;
use crate::domain::rewards::credit;
use crate::pruner::Stop;

/// The running release thread. [`RewardRelease::stop`] ends it; dropping it asks it to stop.
pub struct RewardRelease {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl RewardRelease {
    pub fn start(pool: DbPool, interval: Duration) -> anyhow::Result<RewardRelease> {
        let stop = Arc::new(Stop::default());
        let thread = std::thread::Builder::new()
            .name("reward-release".to_string())
            .spawn({
                let stop = stop.clone();
                move || loop {
                    pass(&pool);
                    if stop.wait(interval) {
                        break;
                    }
                }
            })
            .context("could not start the reward release thread")?;
        Ok(RewardRelease {
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the thread to stop after the pass it is running, and waits for it.
    /// Blocking: call it from a blocking context.
    pub fn stop(mut self) {
        self.stop.request();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the reward release thread panicked");
            }
        }
    }
}

impl Drop for RewardRelease {
    fn drop(&mut self) {
        self.stop.request();
    }
}

fn pass(pool: &DbPool) {
    // A database that is away now is tried again at the next interval.
    let result = pool
        .get()
        .map_err(|error| anyhow::anyhow!(error))
        .and_then(|mut conn| credit::release_due(&mut conn, chrono::Utc::now()).map_err(anyhow::Error::from));
    match result {
        Ok(released) if released.credited + released.voided > 0 => tracing::info!(
            credited = released.credited,
            voided = released.voided,
            "released held rewards"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(error = %error, "releasing held rewards failed"),
    }
}
