//! The background thread that releases held rewards (`domain::rewards::credit::release_due`).
//!
//! Started by `Application::build` and stopped with the server, like the pruner. It
//! credits the rewards whose hold is over (approved ones, and pending ones that need no
//! manual approval) when the next hold ends, when woken (by `db::listener`: a reward made
//! releasable in any process notifies `referdesk_rewards`), and at least every
//! `REFERDESK_REWARD_RELEASE_SECS` seconds. Several server processes on one database may
//! all run it: the release claims rows with `FOR UPDATE SKIP LOCKED`, so each reward is
//! credited exactly once.

use std::time::Duration;

use crate::background::StoppableThread;
use crate::db::{listener, DbPool};
use crate::domain::rewards::credit;

/// The shortest wait: a reward due already is being credited by another process.
const BUSY_POLL: Duration = Duration::from_secs(1);

/// The running release thread. [`RewardRelease::stop`] ends it; dropping it asks it to stop.
pub struct RewardRelease {
    thread: StoppableThread,
}

impl RewardRelease {
    pub fn start(pool: DbPool, interval: Duration) -> anyhow::Result<RewardRelease> {
        let thread =
            StoppableThread::spawn("reward-release", "the reward release thread", move |stop| loop {
                let next = pass(&pool);
                let wait = listener::until_due(next, chrono::Utc::now(), BUSY_POLL, interval);
                if stop.wait(wait) {
                    break;
                }
            })?;
        Ok(RewardRelease { thread })
    }

    /// Ends the thread's current wait: something may be due.
    pub fn wake(&self) {
        self.thread.wake();
    }

    /// A handle that calls [`RewardRelease::wake`], for `db::listener`.
    pub fn waker(&self) -> impl Fn() + Send + 'static {
        self.thread.waker()
    }

    /// Asks the thread to stop after the pass it is running, and waits for it.
    /// Blocking: call it from a blocking context.
    pub fn stop(self) {
        self.thread.stop();
    }
}

/// One release; returns when the next hold ends, if it knows.
fn pass(pool: &DbPool) -> Option<chrono::DateTime<chrono::Utc>> {
    // A database that is away now is tried again at the next interval.
    let result = pool
        .get()
        .map_err(|error| anyhow::anyhow!(error))
        .and_then(|mut conn| {
            let released = credit::release_due(&mut conn, chrono::Utc::now())?;
            Ok((released, credit::next_due(&mut conn)?))
        });
    match result {
        Ok((released, next)) => {
            if released.credited + released.voided > 0 {
                tracing::info!(
                    credited = released.credited,
                    voided = released.voided,
                    "released held rewards"
                );
            }
            next
        }
        Err(error) => {
            tracing::warn!(error = %error, "releasing held rewards failed");
            None
        }
    }
}
