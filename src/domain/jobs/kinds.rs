//! What each kind of job does with one batch. A kind's function reads its parameters and
//! cursor from the job, handles at most `batch_size` rows inside the batch's transaction
//! (a row it cannot handle becomes a [`SkippedRow`] with its reason, never an error that
//! undoes the batch) and says where the next batch starts.

use diesel::PgConnection;
use serde_json::Value;

use super::phases::Phases;
use super::{Job, JobKind, SkippedRow};
use crate::domain::customers::bulk::{self, BulkAction};
use crate::domain::customers::listing::CustomerList;
use crate::domain::imports;
use crate::domain::programs::Program;
use crate::error::Error;

/// What a kind's batch may use besides the connection.
pub struct Context<'a> {
    pub program: &'a Program,
    /// The customer list's one entry point, for kinds that walk a filtered list.
    pub list: &'a CustomerList,
    pub batch_size: i64,
    /// Where a one-transaction kind reports its steps (`phases`).
    pub phases: &'a dyn Phases,
}

/// One batch's outcome.
#[derive(Debug, Default)]
pub struct Batch {
    /// Rows applied.
    pub done: i64,
    pub skipped: Vec<SkippedRow>,
    /// Where the next batch starts.
    pub cursor: Option<Value>,
    /// True when nothing is left.
    pub finished: bool,
    /// The rows there were, when the kind knows better than applied + skipped (an import
    /// that wrote nothing: its valid rows were neither applied nor refused).
    pub total: Option<i64>,
}

/// Runs one batch of `job`, by its kind.
pub fn run_batch(conn: &mut PgConnection, job: &Job, context: &Context<'_>) -> Result<Batch, Error> {
    let action = match job.kind {
        JobKind::CustomersApprove => BulkAction::Approve,
        JobKind::CustomersUnapprove => BulkAction::Unapprove,
        JobKind::CustomersDelete => BulkAction::Delete,
        JobKind::CustomersRestore => BulkAction::Restore,
        JobKind::CustomersInvite => BulkAction::Invite,
        JobKind::CustomersCredit => BulkAction::Credit,
        JobKind::CustomersImport => return imports::stored::run_job(conn, job, context),
    };
    bulk::run_batch(conn, job, context, action)
}

/// What is left to undo once a job has failed for good, in the transaction that marks it
/// failed: an upload whose import failed can be imported again.
pub fn after_failure(conn: &mut PgConnection, job: &Job) -> Result<(), Error> {
    match job.kind {
        JobKind::CustomersImport => imports::stored::job_failed(conn, job),
        _ => Ok(()),
    }
}
