//! Where a job that runs in one long transaction stands: its step ("Copying rows to the
//! database", step 3 of 6) and the units of that step done so far.
//!
//! A batch's changes are invisible until it commits, and the batch holds the lock on its
//! job's row; an import (all its rows or none) is one such batch. So its progress is
//! written on a connection of its own, to the job's row in `job_phases` (inserted with the
//! job, [`insert`]; afterwards only updated, which needs no lock on the job's row), and
//! read by the job page. The counts are the work really done — rows read, rows copied —
//! and a step done by one set-based statement has no count (`total` 0): the page shows it
//! as a step under way, not as a bar that moves.

use std::cell::Cell;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::db::schema::job_phases;
use crate::db::DbPool;
use crate::error::Error;

/// How often the units done are written while a step runs (a new step is written at once).
const WRITE_EVERY: Duration = Duration::from_millis(250);

/// A job's step and its progress, as last written.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = job_phases)]
pub struct Phase {
    pub step: i32,
    pub steps: i32,
    pub label: String,
    pub done: i64,
    /// 0 when the step's size is not known.
    pub total: i64,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Phase {
    /// Percent of the step done, when its size is known.
    pub fn percent(&self) -> Option<i64> {
        (self.total > 0).then(|| (self.done * 100 / self.total).clamp(0, 100))
    }

    /// Units per second in this step so far.
    pub fn rate(&self, now: DateTime<Utc>) -> Option<f64> {
        let seconds = (now - self.started_at).num_milliseconds() as f64 / 1000.0;
        (self.done > 0 && seconds > 0.0).then(|| self.done as f64 / seconds)
    }

    /// Seconds left in this step at its rate so far.
    pub fn seconds_left(&self, now: DateTime<Utc>) -> Option<i64> {
        if self.total <= 0 || self.done >= self.total {
            return None;
        }
        let rate = self.rate(now)?;
        Some(((self.total - self.done).max(0) as f64 / rate).ceil() as i64)
    }
}

/// Gives a new job its phase row ("waiting"), in the transaction that creates the job.
pub fn insert(conn: &mut PgConnection, job_id: i64, steps: i32, label: &str) -> Result<(), Error> {
    diesel::insert_into(job_phases::table)
        .values((
            job_phases::job_id.eq(job_id),
            job_phases::steps.eq(steps),
            job_phases::label.eq(label),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

/// The job's phase, if it reports any.
pub fn find(conn: &mut PgConnection, job_id: i64) -> Result<Option<Phase>, Error> {
    Ok(job_phases::table
        .find(job_id)
        .select(Phase::as_select())
        .first(conn)
        .optional()?)
}

/// Where a running job reports its steps.
pub trait Phases {
    /// Step `step` of `steps` starts; `total` units (0: not counted).
    fn step(&self, job_id: i64, step: i32, steps: i32, label: &str, total: u64);
    /// Units of the current step done so far.
    fn done(&self, job_id: i64, done: u64);
}

/// Nobody reads the steps (a job run in a request, or by a test).
pub struct Unreported;

impl Phases for Unreported {
    fn step(&self, _: i64, _: i32, _: i32, _: &str, _: u64) {}
    fn done(&self, _: i64, _: u64) {}
}

/// Writes the steps to `job_phases` through a connection of `pool` other than the one
/// running the job. Progress is only shown: a write that fails (no free connection, a
/// lock not granted at once) is logged and the job goes on.
pub struct Recorded<'a> {
    pool: &'a DbPool,
    last_write: Cell<Option<Instant>>,
    /// The current step's units.
    total: Cell<u64>,
}

impl<'a> Recorded<'a> {
    pub fn new(pool: &'a DbPool) -> Recorded<'a> {
        Recorded {
            pool,
            last_write: Cell::new(None),
            total: Cell::new(0),
        }
    }

    fn write(&self, job_id: i64, change: impl FnOnce(&mut PgConnection) -> QueryResult<usize>) {
        let written = self
            .pool
            .get()
            .map_err(|error| error.to_string())
            .and_then(|mut conn| {
                conn.transaction(|conn| {
                    // Never wait behind the job's own transaction (this thread runs it).
                    diesel::sql_query("SET LOCAL lock_timeout = '2s'").execute(conn)?;
                    change(conn)
                })
                .map_err(|error| error.to_string())
            });
        self.last_write.set(Some(Instant::now()));
        if let Err(error) = written {
            tracing::warn!(job_id, error = %error, "could not record a job's progress");
        }
    }
}

impl Phases for Recorded<'_> {
    fn step(&self, job_id: i64, step: i32, steps: i32, label: &str, total: u64) {
        self.total.set(total);
        self.write(job_id, |conn| {
            diesel::update(job_phases::table.find(job_id))
                .set((
                    job_phases::step.eq(step),
                    job_phases::steps.eq(steps),
                    job_phases::label.eq(label),
                    job_phases::done.eq(0),
                    job_phases::total.eq(total as i64),
                    job_phases::started_at.eq(diesel::dsl::now),
                    job_phases::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
        });
    }

    fn done(&self, job_id: i64, done: u64) {
        // The step's last count is always written; counts before it, now and then.
        let recent = self
            .last_write
            .get()
            .is_some_and(|last| last.elapsed() < WRITE_EVERY);
        if recent && done < self.total.get() {
            return;
        }
        self.write(job_id, |conn| {
            diesel::update(job_phases::table.find(job_id))
                .set((
                    job_phases::done.eq(done as i64),
                    job_phases::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
        });
    }
}
