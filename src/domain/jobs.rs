//! Background jobs: long actions (bulk actions on customers, imports) that run in batches.
//!
//! A job is a row in `jobs`: its kind, who started it, its parameters, its counts and a
//! cursor. [`create`] writes it (with its "job started" audit event); a worker — the
//! server's job thread, or the request itself for small jobs — takes its lease and runs it
//! batch after batch ([`runner`]). Each batch commits its changes together with the new
//! counts and cursor, so a job stopped anywhere (a restart, a killed process) resumes
//! after the last committed row and never applies a row twice.
//!
//! What a batch does is the kind's own function ([`kinds`]): a new kind is a variant of
//! [`JobKind`], a value in the `jobs_kind_check` constraint, and one arm in
//! `kinds::run_batch`.

pub mod kinds;
pub mod phases;
pub mod runner;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::schema::{job_skipped_rows, jobs};
use crate::db::text_enum;
use crate::domain::{audit, Actor};
use crate::error::Error;

pub use runner::{
    claim_next, release, run_batch, run_batch_reporting, run_to_end, run_to_end_reporting, BatchResult,
    RunSettings,
};

/// How many skipped rows the job page lists (the CSV has them all).
pub const SKIPPED_SHOWN: i64 = 50;

text_enum! {
    /// What a job does; each kind has its function in [`kinds`].
    pub enum JobKind {
        CustomersApprove = "customers.approve",
        CustomersUnapprove = "customers.unapprove",
        CustomersDelete = "customers.delete",
        CustomersRestore = "customers.restore",
        CustomersInvite = "customers.invite",
        CustomersCredit = "customers.credit",
        CustomersImport = "customers.import",
    }
}

impl JobKind {
    /// How the job page names it.
    pub fn title(self) -> &'static str {
        match self {
            JobKind::CustomersApprove => "Approve customers",
            JobKind::CustomersUnapprove => "Unapprove customers",
            JobKind::CustomersDelete => "Delete customers",
            JobKind::CustomersRestore => "Restore customers",
            JobKind::CustomersInvite => "Invite customers",
            JobKind::CustomersCredit => "Credit customers",
            JobKind::CustomersImport => "Import customers",
        }
    }

    /// Whether the job works in one transaction (all its rows or none), reporting its
    /// steps in `job_phases` rather than rows committed batch by batch. Such a job cannot
    /// be stopped part-way.
    pub fn is_one_transaction(self) -> bool {
        self == JobKind::CustomersImport
    }
}

text_enum! {
    pub enum JobStatus {
        Queued = "queued",
        Running = "running",
        Done = "done",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled)
    }

    pub fn badge(self) -> &'static str {
        match self {
            JobStatus::Queued | JobStatus::Running => "badge-yellow",
            JobStatus::Done => "badge-green",
            JobStatus::Failed => "badge-red",
            JobStatus::Cancelled => "badge-gray",
        }
    }
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: i64,
    pub program_id: i64,
    pub kind: JobKind,
    pub status: JobStatus,
    pub actor_member_id: Option<i64>,
    pub actor_label: String,
    pub actor_address: Option<String>,
    pub params: Value,
    pub form_token: Option<Uuid>,
    pub total: i64,
    pub done: i64,
    pub skipped: i64,
    pub cursor: Option<Value>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub failures: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    pub fn title(&self) -> &'static str {
        self.kind.title()
    }

    /// Who started it, as the rows it changes record it.
    pub fn actor(&self) -> Actor {
        Actor {
            member_id: self.actor_member_id,
            token_id: None,
            label: self.actor_label.clone(),
            address: self.actor_address.clone(),
        }
    }

    /// Rows handled so far (applied or skipped).
    pub fn handled(&self) -> i64 {
        self.done + self.skipped
    }

    /// Percent handled, 0 to 100 (100 once finished).
    pub fn percent(&self) -> i64 {
        if self.status == JobStatus::Done {
            return 100;
        }
        if self.total <= 0 {
            return 0;
        }
        (self.handled() * 100 / self.total).clamp(0, 100)
    }

    /// Rows per second since the job started, once it has handled some.
    pub fn rate(&self, now: DateTime<Utc>) -> Option<f64> {
        let started = self.started_at?;
        let until = self.finished_at.unwrap_or(now);
        let seconds = (until - started).num_milliseconds() as f64 / 1000.0;
        (self.handled() > 0 && seconds > 0.0).then(|| self.handled() as f64 / seconds)
    }

    /// Seconds left at the current rate, while the job runs.
    pub fn seconds_left(&self, now: DateTime<Utc>) -> Option<i64> {
        if self.status.is_finished() {
            return None;
        }
        let rate = self.rate(now)?;
        let left = (self.total - self.handled()).max(0) as f64;
        Some((left / rate).ceil() as i64)
    }
}

/// A job to start.
pub struct NewJob {
    pub program_id: i64,
    pub kind: JobKind,
    pub params: Value,
    /// The form's one-time token: the same token again answers the job it started.
    pub form_token: Option<Uuid>,
    /// Rows it expects to handle (shown as the bar's end; corrected when it finishes).
    pub total: i64,
    /// What the audit event says the job acts on (e.g. the list's filter).
    pub described: Value,
}

/// How a job was started: now, or earlier by the same form.
pub enum Started {
    New(Job),
    Again(Job),
}

impl Started {
    pub fn job(&self) -> &Job {
        match self {
            Started::New(job) | Started::Again(job) => job,
        }
    }
}

/// Writes a queued job and its `job.start` audit event. `owner`: the worker that takes
/// the lease at once (a request that runs a small job itself), or `None` to leave it to
/// the job thread. A form token used before answers the job it started.
pub fn create(
    conn: &mut PgConnection,
    actor: &Actor,
    new: NewJob,
    owner: Option<(&str, chrono::Duration)>,
) -> Result<Started, Error> {
    if let Some(token) = new.form_token {
        if let Some(job) = by_form_token(conn, new.program_id, token)? {
            return Ok(Started::Again(job));
        }
    }
    let now = Utc::now();
    let (status, lease_owner, lease_until, started_at) = match owner {
        Some((owner, lease)) => (JobStatus::Running, Some(owner), Some(now + lease), Some(now)),
        None => (JobStatus::Queued, None, None, None),
    };
    let made = conn.transaction::<_, Error, _>(|conn| {
        // A form sent twice at once: the second insert waits for the first and then
        // inserts nothing.
        let job: Option<Job> = diesel::insert_into(jobs::table)
            .values((
                jobs::program_id.eq(new.program_id),
                jobs::kind.eq(new.kind),
                jobs::status.eq(status),
                jobs::actor_member_id.eq(actor.member_id),
                jobs::actor_label.eq(&actor.label),
                jobs::actor_address.eq(&actor.address),
                jobs::params.eq(&new.params),
                jobs::form_token.eq(new.form_token),
                jobs::total.eq(new.total.max(0)),
                jobs::lease_owner.eq(lease_owner),
                jobs::lease_until.eq(lease_until),
                jobs::started_at.eq(started_at),
            ))
            .on_conflict_do_nothing()
            .returning(Job::as_returning())
            .get_result(conn)
            .optional()?;
        let Some(job) = job else {
            return Ok(None);
        };
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(new.program_id),
                action: "job.start",
                subject_type: "job",
                subject_id: Some(job.id.to_string()),
                customer_id: None,
                before: None,
                after: Some(json!({
                    "kind": new.kind.as_str(),
                    "total": job.total,
                    "selection": new.described,
                })),
            },
        )?;
        Ok(Some(job))
    })?;
    match made {
        Some(job) => Ok(Started::New(job)),
        None => by_form_token(conn, new.program_id, new.form_token.unwrap_or_default())?
            .map(Started::Again)
            .ok_or(Error::NotFound),
    }
}

fn by_form_token(conn: &mut PgConnection, program_id: i64, token: Uuid) -> Result<Option<Job>, Error> {
    Ok(jobs::table
        .filter(jobs::program_id.eq(program_id))
        .filter(jobs::form_token.eq(token))
        .select(Job::as_select())
        .first(conn)
        .optional()?)
}

/// A job of the program.
pub fn find(conn: &mut PgConnection, program_id: i64, job_id: i64) -> Result<Job, Error> {
    jobs::table
        .filter(jobs::program_id.eq(program_id))
        .filter(jobs::id.eq(job_id))
        .select(Job::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)
}

/// The program's jobs, newest first: a page of them and whether there are more.
pub fn recent(conn: &mut PgConnection, program_id: i64, offset: i64, limit: i64) -> Result<Vec<Job>, Error> {
    Ok(jobs::table
        .filter(jobs::program_id.eq(program_id))
        .order(jobs::id.desc())
        .offset(offset)
        .limit(limit)
        .select(Job::as_select())
        .load(conn)?)
}

pub fn count(conn: &mut PgConnection, program_id: i64) -> Result<i64, Error> {
    Ok(jobs::table
        .filter(jobs::program_id.eq(program_id))
        .count()
        .get_result(conn)?)
}

/// A row a job left alone, and why.
#[derive(Clone, Debug, Default, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = job_skipped_rows)]
pub struct SkippedRow {
    pub line: Option<i64>,
    pub customer_key: Option<String>,
    pub email: Option<String>,
    pub reason: String,
}

/// Skipped rows of a job in the order they were met, `limit` from after `after_id`, with
/// their ids (for the CSV's batches).
pub fn skipped_rows(
    conn: &mut PgConnection,
    job_id: i64,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, SkippedRow)>, Error> {
    Ok(job_skipped_rows::table
        .filter(job_skipped_rows::job_id.eq(job_id))
        .filter(job_skipped_rows::id.gt(after_id))
        .order(job_skipped_rows::id)
        .limit(limit)
        .select((job_skipped_rows::id, SkippedRow::as_select()))
        .load(conn)?)
}

/// How many rows were skipped for each reason, most frequent first.
pub fn skipped_reasons(conn: &mut PgConnection, job_id: i64) -> Result<Vec<(String, i64)>, Error> {
    use diesel::dsl::count_star;
    Ok(job_skipped_rows::table
        .filter(job_skipped_rows::job_id.eq(job_id))
        .group_by(job_skipped_rows::reason)
        .select((job_skipped_rows::reason, count_star()))
        .order(count_star().desc())
        .limit(20)
        .load(conn)?)
}

/// Cancels a job that has not finished: the batch running now completes, no other
/// starts. Recorded in the audit log.
pub fn cancel(conn: &mut PgConnection, actor: &Actor, program_id: i64, job_id: i64) -> Result<Job, Error> {
    // Read without a lock first: a running import holds its row for the whole import.
    if find(conn, program_id, job_id)?.kind.is_one_transaction() {
        return Err(Error::invalid(
            "job",
            "An import writes all its rows in one transaction and cannot be stopped part-way.",
        ));
    }
    conn.transaction(|conn| {
        let job: Job = jobs::table
            .filter(jobs::program_id.eq(program_id))
            .filter(jobs::id.eq(job_id))
            .select(Job::as_select())
            .for_update()
            .first(conn)
            .optional()?
            .ok_or(Error::NotFound)?;
        if job.status.is_finished() {
            return Err(Error::invalid("job", "This job has already finished."));
        }
        let now = Utc::now();
        let cancelled: Job = diesel::update(jobs::table.find(job.id))
            .set((
                jobs::status.eq(JobStatus::Cancelled),
                jobs::lease_owner.eq(None::<String>),
                jobs::lease_until.eq(None::<DateTime<Utc>>),
                jobs::finished_at.eq(now),
                jobs::updated_at.eq(now),
            ))
            .returning(Job::as_returning())
            .get_result(conn)?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(program_id),
                action: "job.cancel",
                subject_type: "job",
                subject_id: Some(job.id.to_string()),
                customer_id: None,
                before: Some(json!({"status": job.status, "done": job.done})),
                after: Some(json!({"status": cancelled.status})),
            },
        )?;
        Ok(cancelled)
    })
}
