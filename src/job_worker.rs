//! The background thread that runs jobs (`domain::jobs`): bulk actions on customers too
//! large to run in the request, imports.
//!
//! Started by `Application::build` and stopped with the server, like the pruner. Every
//! time a job is queued (a notification), and every ten seconds besides, it claims the
//! next job it may run (queued, or running with an expired lease) and runs it batch by
//! batch to the end. Asked to stop, it finishes the batch it is running
//! and gives the job back, so the next server start (or another process) resumes it
//! at once. Several server processes on one database share the jobs: a claim takes a
//! lease under `FOR UPDATE SKIP LOCKED`, and each batch checks the lease is still its own.
//!
//! Its pool has two connections: one runs the job, the other writes the steps of a job
//! that works in one transaction (an import; `jobs::phases`). An import is one batch, so
//! a server asked to stop while it imports waits for the import to end.

use std::time::Duration;

use crate::background::{Stop, StoppableThread};
use crate::db::DbPool;
use crate::domain::customers::listing::CustomerList;
use crate::domain::jobs::phases::Recorded;
use crate::domain::jobs::{self, RunSettings};

/// How long the thread sleeps when no job is waiting and no notification came: a new job
/// wakes it at once (`db::listener::JOBS`); this finds jobs whose process died and whose
/// lease ran out.
const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The running job thread. [`JobWorker::stop`] ends it; dropping it asks it to stop.
pub struct JobWorker {
    thread: StoppableThread,
}

impl JobWorker {
    pub fn start(pool: DbPool, list: CustomerList, settings: RunSettings) -> anyhow::Result<JobWorker> {
        let owner = format!("worker-{}", crate::random::random_token(12));
        let thread = StoppableThread::spawn("jobs", "the job thread", move |stop| loop {
            pass(&pool, &list, &owner, &settings, stop);
            if stop.wait(POLL_INTERVAL) {
                break;
            }
        })?;
        Ok(JobWorker { thread })
    }

    /// What wakes the thread now: a job was queued (by any process).
    pub fn waker(&self) -> impl Fn() + Send + 'static {
        self.thread.waker()
    }

    /// Asks the thread to stop after the batch it is running, and waits for it.
    /// Blocking: call it from a blocking context.
    pub fn stop(self) {
        self.thread.stop();
    }
}

/// Runs every job there is to claim, one after the other, until none is left or a stop
/// is asked for.
fn pass(pool: &DbPool, list: &CustomerList, owner: &str, settings: &RunSettings, stop: &Stop) {
    // A database that is away now is tried again at the next interval.
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(error) => {
            tracing::warn!("job thread: no database connection: {error}");
            return;
        }
    };
    let stopping = |pause: Duration| stop.wait(pause);
    while !stop.wait(Duration::ZERO) {
        let claimed = match jobs::claim_next(&mut conn, owner, settings, chrono::Utc::now()) {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(error = %error, "job thread: claiming a job failed");
                return;
            }
        };
        // An import reports its steps on the pool's other connection.
        let phases = Recorded::new(pool);
        let ran =
            jobs::run_to_end_reporting(&mut conn, list, claimed.id, owner, settings, &stopping, &phases);
        if let Err(error) = ran {
            tracing::warn!(job_id = claimed.id, error = %error, "job thread: the job stopped");
            return;
        }
    }
}
