//! Running jobs: claiming one, running its batches, giving it back.
//!
//! A worker claims the oldest unfinished job whose lease is free or expired (`FOR UPDATE
//! SKIP LOCKED`: several processes never claim the same job at once) and takes its lease.
//! Each batch is one transaction that locks the job row, checks the lease is still this
//! worker's and the job still running (a cancel, or another worker after an expired
//! lease, ends it here), lets the kind do its rows, and writes their skipped rows, the
//! counts, the cursor and a renewed lease. Because the rows' changes and the cursor commit
//! together, a job resumed by anyone continues exactly after the last committed row.
//!
//! A kind that works in one transaction (an import) is one batch: it holds the job's row
//! for as long as it runs, so no other worker claims it even once the lease has run out
//! (`SKIP LOCKED`), and a process that dies in it leaves nothing committed — the job is
//! run again from the start by whoever claims it after the lease. It reports its steps
//! through [`Phases`].

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use super::kinds::{self, Batch, Context};
use super::phases::{Phases, Unreported};
use super::{Job, JobStatus};
use crate::db::schema::{job_skipped_rows, jobs};
use crate::domain::customers::listing::CustomerList;
use crate::domain::programs;
use crate::error::Error;

/// Longest stored error text.
const MAX_ERROR_CHARS: usize = 1000;

/// How a worker runs jobs.
#[derive(Clone, Copy, Debug)]
pub struct RunSettings {
    /// Rows per batch (one transaction).
    pub batch_size: i64,
    /// How long a claim holds without a batch renewing it; then another worker may
    /// resume the job.
    pub lease: Duration,
    /// Batches failing in a row before the job is marked failed.
    pub max_failures: i32,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            batch_size: 200,
            lease: Duration::seconds(60),
            max_failures: 5,
        }
    }
}

/// What one [`run_batch`] call came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchResult {
    /// A batch committed; there is more to do.
    Progress,
    /// The job is over (done, or failed after too many failed batches).
    Finished(JobStatus),
    /// The batch failed and rolled back; it will be tried again.
    Failed,
    /// The job is not this worker's any more (cancelled, or claimed by another after
    /// the lease expired).
    Lost,
}

/// Claims the oldest job that is queued, or running with a lease that expired at `now`.
pub fn claim_next(
    conn: &mut PgConnection,
    owner: &str,
    settings: &RunSettings,
    now: DateTime<Utc>,
) -> Result<Option<Job>, Error> {
    conn.transaction(|conn| {
        let free = jobs::lease_until.is_null().or(jobs::lease_until.lt(now));
        let id: Option<i64> = jobs::table
            .filter(jobs::status.eq_any([JobStatus::Queued, JobStatus::Running]))
            .filter(free)
            .order(jobs::id)
            .select(jobs::id)
            .for_update()
            .skip_locked()
            .first(conn)
            .optional()?;
        let Some(id) = id else {
            return Ok(None);
        };
        let job: Job = diesel::update(jobs::table.find(id))
            .set((
                jobs::status.eq(JobStatus::Running),
                jobs::lease_owner.eq(owner),
                jobs::lease_until.eq(now + settings.lease),
                jobs::started_at.eq(diesel::dsl::sql::<
                    diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
                >("coalesce(started_at, now())")),
                jobs::updated_at.eq(now),
            ))
            .returning(Job::as_returning())
            .get_result(conn)?;
        tracing::info!(job_id = job.id, kind = %job.kind, resumed = job.cursor.is_some(), "job claimed");
        Ok(Some(job))
    })
}

/// Runs the next batch of job `job_id` for `owner`, which holds its lease.
pub fn run_batch(
    conn: &mut PgConnection,
    list: &CustomerList,
    job_id: i64,
    owner: &str,
    settings: &RunSettings,
) -> Result<BatchResult, Error> {
    run_batch_reporting(conn, list, job_id, owner, settings, &Unreported)
}

/// [`run_batch`], with a one-transaction kind's steps reported to `phases`.
pub fn run_batch_reporting(
    conn: &mut PgConnection,
    list: &CustomerList,
    job_id: i64,
    owner: &str,
    settings: &RunSettings,
    phases: &dyn Phases,
) -> Result<BatchResult, Error> {
    let attempt = conn.transaction::<_, Error, _>(|conn| {
        let Some(job) = lock_if_ours(conn, job_id, owner)? else {
            return Ok(BatchResult::Lost);
        };
        let program = programs::find(conn, job.program_id)?;
        let context = Context {
            program: &program,
            list,
            batch_size: settings.batch_size,
            phases,
        };
        let batch = kinds::run_batch(conn, &job, &context)?;
        record_batch(conn, &job, batch, settings)
    });
    match attempt {
        Ok(result) => Ok(result),
        // Nothing to record while the database is away; the worker tries again later.
        Err(Error::Unavailable) => Err(Error::Unavailable),
        Err(error) => record_failure(conn, job_id, owner, &error, settings),
    }
}

/// The job, locked, while it runs under `owner`'s lease; `None` once it is not theirs
/// (cancelled, finished, or taken over after the lease ran out).
fn lock_if_ours(conn: &mut PgConnection, job_id: i64, owner: &str) -> Result<Option<Job>, Error> {
    let job: Job = jobs::table
        .find(job_id)
        .select(Job::as_select())
        .for_update()
        .first(conn)?;
    if job.status != JobStatus::Running || job.lease_owner.as_deref() != Some(owner) {
        return Ok(None);
    }
    Ok(Some(job))
}

fn record_batch(
    conn: &mut PgConnection,
    job: &Job,
    batch: Batch,
    settings: &RunSettings,
) -> Result<BatchResult, Error> {
    let now = Utc::now();
    let skipped = batch.skipped.len() as i64;
    let total = batch.total;
    if !batch.skipped.is_empty() {
        let rows: Vec<_> = batch
            .skipped
            .iter()
            .map(|row| {
                (
                    job_skipped_rows::job_id.eq(job.id),
                    job_skipped_rows::line.eq(row.line),
                    job_skipped_rows::customer_key.eq(&row.customer_key),
                    job_skipped_rows::email.eq(&row.email),
                    job_skipped_rows::reason.eq(&row.reason),
                )
            })
            .collect();
        // Five parameters a row: batches stay far below PostgreSQL's 65,535.
        for chunk in rows.chunks(5000) {
            diesel::insert_into(job_skipped_rows::table)
                .values(chunk)
                .execute(conn)?;
        }
    }
    let (done, skipped) = (job.done + batch.done, job.skipped + skipped);
    let counts = (
        jobs::done.eq(done),
        jobs::skipped.eq(skipped),
        jobs::cursor.eq(&batch.cursor),
        jobs::failures.eq(0),
        jobs::last_error.eq(None::<String>),
        jobs::updated_at.eq(now),
    );
    if batch.finished {
        diesel::update(jobs::table.find(job.id))
            .set((
                counts,
                jobs::status.eq(JobStatus::Done),
                // The rows met, whatever the count said when the job started (the
                // filter is checked again as the job runs).
                jobs::total.eq(total.unwrap_or(done + skipped)),
                jobs::finished_at.eq(now),
                jobs::lease_owner.eq(None::<String>),
                jobs::lease_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)?;
        tracing::info!(job_id = job.id, done, skipped, "job done");
        Ok(BatchResult::Finished(JobStatus::Done))
    } else {
        diesel::update(jobs::table.find(job.id))
            .set((
                counts,
                jobs::total.eq(job.total.max(done + skipped)),
                jobs::lease_until.eq(now + settings.lease),
            ))
            .execute(conn)?;
        Ok(BatchResult::Progress)
    }
}

fn record_failure(
    conn: &mut PgConnection,
    job_id: i64,
    owner: &str,
    error: &Error,
    settings: &RunSettings,
) -> Result<BatchResult, Error> {
    let message: String = match error {
        Error::Internal(inner) => format!("{inner:#}"),
        other => other.to_string(),
    }
    .chars()
    .take(MAX_ERROR_CHARS)
    .collect();
    tracing::warn!(job_id, error = %message, "a job batch failed");
    conn.transaction(|conn| {
        let Some(job) = lock_if_ours(conn, job_id, owner)? else {
            return Ok(BatchResult::Lost);
        };
        let failures = job.failures + 1;
        let now = Utc::now();
        // Input the job refuses (an import's file or choices) is refused again by any
        // retry: the job fails at once, with the message.
        let refused = matches!(error, Error::Invalid { .. });
        if failures >= settings.max_failures || refused {
            diesel::update(jobs::table.find(job_id))
                .set((
                    jobs::status.eq(JobStatus::Failed),
                    jobs::failures.eq(failures),
                    jobs::last_error.eq(&message),
                    jobs::finished_at.eq(now),
                    jobs::updated_at.eq(now),
                    jobs::lease_owner.eq(None::<String>),
                    jobs::lease_until.eq(None::<DateTime<Utc>>),
                ))
                .execute(conn)?;
            kinds::after_failure(conn, &job)?;
            Ok(BatchResult::Finished(JobStatus::Failed))
        } else {
            diesel::update(jobs::table.find(job_id))
                .set((
                    jobs::failures.eq(failures),
                    jobs::last_error.eq(&message),
                    jobs::updated_at.eq(now),
                    jobs::lease_until.eq(now + settings.lease),
                ))
                .execute(conn)?;
            Ok(BatchResult::Failed)
        }
    })
}

/// Gives a claimed job back (a worker stopping between batches): another worker, or
/// this server after a restart, resumes it at once instead of after the lease. The
/// job threads of other processes hear of it as of a new job.
pub fn release(conn: &mut PgConnection, job_id: i64, owner: &str) -> Result<(), Error> {
    let released = diesel::update(jobs::table.find(job_id))
        .filter(jobs::lease_owner.eq(owner))
        .filter(jobs::status.eq(JobStatus::Running))
        .set((
            jobs::lease_owner.eq(None::<String>),
            jobs::lease_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)?;
    if released > 0 {
        diesel::sql_query("SELECT pg_notify($1, '')")
            .bind::<diesel::sql_types::Text, _>(crate::db::listener::JOBS)
            .execute(conn)?;
    }
    Ok(())
}

/// Runs job `job_id` batch after batch until it is over, lost, or `stop()` says to stop
/// (then the job is released for another worker). A failed batch is tried again after
/// `pause`. Returns the job's last result.
pub fn run_to_end(
    conn: &mut PgConnection,
    list: &CustomerList,
    job_id: i64,
    owner: &str,
    settings: &RunSettings,
    stop: &dyn Fn(std::time::Duration) -> bool,
) -> Result<BatchResult, Error> {
    run_to_end_reporting(conn, list, job_id, owner, settings, stop, &Unreported)
}

/// [`run_to_end`], with a one-transaction kind's steps reported to `phases`.
pub fn run_to_end_reporting(
    conn: &mut PgConnection,
    list: &CustomerList,
    job_id: i64,
    owner: &str,
    settings: &RunSettings,
    stop: &dyn Fn(std::time::Duration) -> bool,
    phases: &dyn Phases,
) -> Result<BatchResult, Error> {
    loop {
        let result = run_batch_reporting(conn, list, job_id, owner, settings, phases)?;
        match result {
            BatchResult::Finished(_) | BatchResult::Lost => return Ok(result),
            BatchResult::Progress => {
                if stop(std::time::Duration::ZERO) {
                    release(conn, job_id, owner)?;
                    return Ok(result);
                }
            }
            BatchResult::Failed => {
                if stop(std::time::Duration::from_secs(1)) {
                    release(conn, job_id, owner)?;
                    return Ok(result);
                }
            }
        }
    }
}
