//! Bulk actions on customers: approve, unapprove, delete, restore, invite or credit every
//! customer of a selection — the keys ticked on a page, or every customer matching the
//! list's filter. Each runs as a job (`domain::jobs`), batch by batch; each customer goes
//! through the same function as a single action (`set_approved`, `delete`, `restore`,
//! `invites::create`, `ledger::book`), so it gets the same checks and audit event.
//!
//! "All matching" stores the filter, not the customers: each batch reads the next
//! customers matching it now, after the last one handled, through the customer list's
//! one entry point (`CustomerList::walk_from`, the export's keyset walk). A credit's
//! booking carries the idempotency key `bulk-job:{job}:{customer}`, so no customer is
//! credited twice by one job whatever happens to it.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::listing::{CustomerFilter, CustomerList, ReferStatus, StatusFilter, Total};
use super::{Customer, CustomerStatus};
use crate::db::schema::customers;
use crate::domain::invites::{self, NewInvite};
use crate::domain::jobs::kinds::{Batch, Context};
use crate::domain::jobs::{Job, JobKind, SkippedRow};
use crate::domain::ledger::{self, NewEntry};
use crate::domain::programs::Program;
use crate::domain::Actor;
use crate::error::Error;

/// Most keys one selection may name (a page holds at most 250).
pub const MAX_SELECTED: usize = 1000;

/// What a bulk action does to each customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkAction {
    Approve,
    Unapprove,
    Delete,
    Restore,
    Invite,
    Credit,
}

impl BulkAction {
    pub const ALL: [BulkAction; 6] = [
        BulkAction::Approve,
        BulkAction::Unapprove,
        BulkAction::Delete,
        BulkAction::Restore,
        BulkAction::Invite,
        BulkAction::Credit,
    ];

    pub fn parse(value: &str) -> Option<BulkAction> {
        BulkAction::ALL
            .into_iter()
            .find(|action| action.as_str() == value.trim())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Approve => "approve",
            BulkAction::Unapprove => "unapprove",
            BulkAction::Delete => "delete",
            BulkAction::Restore => "restore",
            BulkAction::Invite => "invite",
            BulkAction::Credit => "credit",
        }
    }

    /// The job kind that runs it.
    pub fn kind(self) -> JobKind {
        match self {
            BulkAction::Approve => JobKind::CustomersApprove,
            BulkAction::Unapprove => JobKind::CustomersUnapprove,
            BulkAction::Delete => JobKind::CustomersDelete,
            BulkAction::Restore => JobKind::CustomersRestore,
            BulkAction::Invite => JobKind::CustomersInvite,
            BulkAction::Credit => JobKind::CustomersCredit,
        }
    }

    /// Delete and restore are for admins, as they are for one customer; the others for
    /// support.
    pub fn needs_admin(self) -> bool {
        matches!(self, BulkAction::Delete | BulkAction::Restore)
    }

    /// "Approve", "Send an invite to", …: the start of the confirmation's sentence.
    pub fn verb(self) -> &'static str {
        match self {
            BulkAction::Approve => "Approve",
            BulkAction::Unapprove => "Unapprove",
            BulkAction::Delete => "Delete",
            BulkAction::Restore => "Restore",
            BulkAction::Invite => "Send an invite to",
            BulkAction::Credit => "Credit",
        }
    }
}

/// The list's filter as a job stores it (the sort does not matter to a bulk action).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFilter {
    pub search: Option<String>,
    pub refer_status: Option<String>,
    pub status: String,
    pub approved: Option<bool>,
    pub created_from: Option<NaiveDate>,
    pub created_to: Option<NaiveDate>,
}

impl StoredFilter {
    pub fn of(filter: &CustomerFilter) -> StoredFilter {
        StoredFilter {
            search: filter.search.clone(),
            refer_status: filter.refer_status.map(|status| status.as_str().to_string()),
            status: filter.status.as_str().to_string(),
            approved: filter.approved,
            created_from: filter.created_from,
            created_to: filter.created_to,
        }
    }

    pub fn filter(&self) -> CustomerFilter {
        CustomerFilter {
            search: self.search.clone(),
            refer_status: self.refer_status.as_deref().and_then(ReferStatus::parse),
            status: StatusFilter::parse(&self.status).unwrap_or_default(),
            approved: self.approved,
            created_from: self.created_from,
            created_to: self.created_to,
            ..Default::default()
        }
    }
}

/// Which customers: the keys ticked, or all matching a filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Selection {
    Keys { keys: Vec<String> },
    Matching { filter: StoredFilter },
}

/// A credit's amount, as typed (parsed again by every booking).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditParams {
    pub amount: String,
    pub units: String,
    pub is_currency: bool,
    pub note: String,
}

impl CreditParams {
    /// The booking for one customer, or the per-field messages of the form.
    pub fn entry(&self, idempotency_key: Option<&str>) -> Result<NewEntry, Error> {
        NewEntry::parse(
            "credit",
            &self.amount,
            &self.units,
            self.is_currency,
            &self.note,
            idempotency_key,
        )
    }
}

/// A bulk job's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkParams {
    pub selection: Selection,
    #[serde(default)]
    pub credit: Option<CreditParams>,
}

/// How many customers the selection holds now: exact up to a thousand, an estimate
/// beyond for "all matching" (as the list says it).
pub fn count(
    conn: &mut PgConnection,
    list: &CustomerList,
    program_id: i64,
    selection: &Selection,
) -> Result<Total, Error> {
    match selection {
        Selection::Matching { filter } => list.total(conn, program_id, &filter.filter()),
        Selection::Keys { keys } => Ok(Total::Exact(
            customers::table
                .filter(customers::program_id.eq(program_id))
                .filter(customers::key.eq_any(keys))
                .count()
                .get_result(conn)?,
        )),
    }
}

/// One customer as a batch meets it.
struct Target {
    id: i64,
    key: String,
    email: Option<String>,
    status: CustomerStatus,
    approved: bool,
}

/// Where a "keys" job has got to.
#[derive(Serialize, Deserialize)]
struct KeysCursor {
    next: usize,
}

/// Where an "all matching" job has got to: the last customer handled.
#[derive(Serialize, Deserialize)]
struct WalkCursor {
    created_at: DateTime<Utc>,
    id: i64,
}

fn cursor_of<T: for<'de> Deserialize<'de>>(job: &Job) -> Result<Option<T>, Error> {
    job.cursor
        .clone()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|error| {
            Error::Internal(anyhow::anyhow!(
                "job {} has an unreadable cursor: {error}",
                job.id
            ))
        })
}

fn to_value<T: Serialize>(value: T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|error| Error::Internal(anyhow::anyhow!("job cursor: {error}")))
}

/// One batch of a bulk job (see `jobs::kinds`).
pub fn run_batch(
    conn: &mut PgConnection,
    job: &Job,
    context: &Context<'_>,
    action: BulkAction,
) -> Result<Batch, Error> {
    let params: BulkParams = serde_json::from_value(job.params.clone()).map_err(|error| {
        Error::Internal(anyhow::anyhow!(
            "job {} has unreadable parameters: {error}",
            job.id
        ))
    })?;
    let program = context.program;
    let limit = context.batch_size.max(1);
    let next = match &params.selection {
        Selection::Matching { filter } => next_matching(conn, job, context, filter, limit)?,
        Selection::Keys { keys } => next_keys(conn, job, program.id, keys, limit)?,
    };
    let mut batch = Batch {
        cursor: next.cursor,
        finished: next.finished,
        ..Default::default()
    };
    let actor = job.actor();
    for target in next.targets {
        match target {
            Ok(target) => apply_one(conn, program, &actor, job, &params, action, &target, &mut batch)?,
            Err(key) => batch.skipped.push(SkippedRow {
                customer_key: Some(key),
                reason: "No customer has this key any more.".into(),
                ..Default::default()
            }),
        }
    }
    Ok(batch)
}

/// The customers of one batch, in order (`Err(key)` for a ticked key no customer has any
/// more), where the next batch starts, and whether this batch is the last.
struct NextTargets {
    targets: Vec<Result<Target, String>>,
    cursor: Option<Value>,
    finished: bool,
}

/// The next customers matching the stored filter, after the last one handled.
fn next_matching(
    conn: &mut PgConnection,
    job: &Job,
    context: &Context<'_>,
    filter: &StoredFilter,
    limit: i64,
) -> Result<NextTargets, Error> {
    let after = cursor_of::<WalkCursor>(job)?.map(|cursor| (cursor.created_at, cursor.id));
    let mut walk = context.list.walk_from(context.program.id, filter.filter(), after);
    let rows = walk.next_batch(conn, limit)?;
    let finished = (rows.len() as i64) < limit;
    let cursor = match walk.reached() {
        Some((created_at, id)) => Some(to_value(WalkCursor { created_at, id })?),
        None => job.cursor.clone(),
    };
    let targets = rows
        .into_iter()
        .map(|row| {
            Ok(Target {
                id: row.id,
                key: row.key,
                email: row.email,
                status: row.status,
                approved: row.approved,
            })
        })
        .collect();
    Ok(NextTargets {
        targets,
        cursor,
        finished,
    })
}

/// The next ticked keys' customers, in the order they were ticked.
fn next_keys(
    conn: &mut PgConnection,
    job: &Job,
    program_id: i64,
    keys: &[String],
    limit: i64,
) -> Result<NextTargets, Error> {
    let start = cursor_of::<KeysCursor>(job)?
        .map_or(0, |cursor| cursor.next)
        .min(keys.len());
    let end = (start + limit as usize).min(keys.len());
    let wanted = &keys[start..end];
    let found: Vec<Customer> = customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::key.eq_any(wanted))
        .select(Customer::as_select())
        .load(conn)?;
    // In the order they were ticked; a key that no longer exists is skipped.
    let targets = wanted
        .iter()
        .map(|key| {
            found
                .iter()
                .find(|customer| &customer.key == key)
                .map(|customer| Target {
                    id: customer.id,
                    key: customer.key.clone(),
                    email: customer.email.clone(),
                    status: customer.status,
                    approved: customer.approved,
                })
                .ok_or_else(|| key.clone())
        })
        .collect();
    Ok(NextTargets {
        targets,
        cursor: Some(to_value(KeysCursor { next: end })?),
        finished: end >= keys.len(),
    })
}

/// Applies the action to one customer, counting it as done or skipped. An error that is
/// the customer's (a rule refuses it) skips it; any other ends the batch.
#[allow(clippy::too_many_arguments)]
fn apply_one(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    job: &Job,
    params: &BulkParams,
    action: BulkAction,
    target: &Target,
    batch: &mut Batch,
) -> Result<(), Error> {
    let outcome = match refusal(action, target) {
        Some(reason) => Err(reason.to_string()),
        None => match apply(conn, program, actor, job, params, action, target) {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(reason),
            Err(error) => match error {
                Error::Invalid { .. } | Error::NotFound | Error::Forbidden(_) | Error::BadRequest(_) => {
                    Err(error.to_string())
                }
                other => return Err(other),
            },
        },
    };
    match outcome {
        Ok(()) => batch.done += 1,
        Err(reason) => batch.skipped.push(SkippedRow {
            line: None,
            customer_key: Some(target.key.clone()),
            email: target.email.clone(),
            reason,
        }),
    }
    Ok(())
}

/// Why the action does not apply to this customer as they are, if it does not.
fn refusal(action: BulkAction, target: &Target) -> Option<&'static str> {
    let deleted = target.status == CustomerStatus::Deleted;
    match action {
        BulkAction::Approve if target.approved => Some("Already approved."),
        BulkAction::Unapprove if !target.approved => Some("Already not approved."),
        BulkAction::Delete if deleted => Some("Already deleted."),
        BulkAction::Restore if !deleted => Some("Not deleted."),
        BulkAction::Invite | BulkAction::Credit if deleted => {
            Some("This customer is deleted; restore them first.")
        }
        BulkAction::Invite if target.email.is_none() => Some("This customer has no email address."),
        _ => None,
    }
}

/// Runs the single action; `Some(reason)` when it turned out to change nothing.
fn apply(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    job: &Job,
    params: &BulkParams,
    action: BulkAction,
    target: &Target,
) -> Result<Option<String>, Error> {
    match action {
        BulkAction::Approve => super::set_approved(conn, program, actor, target.id, true).map(|_| None),
        BulkAction::Unapprove => super::set_approved(conn, program, actor, target.id, false).map(|_| None),
        BulkAction::Delete => super::delete(conn, program, actor, target.id).map(|_| None),
        BulkAction::Restore => super::restore(conn, program, actor, target.id).map(|_| None),
        BulkAction::Invite => {
            let customer = super::find(conn, program.id, target.id)?;
            let email = customer.email.clone().unwrap_or_default();
            let name = customer.name.clone().unwrap_or_default();
            let new = NewInvite::parse(&email, &name, &[])?;
            invites::create(conn, program, actor, Some(&customer), new).map(|_| None)
        }
        BulkAction::Credit => {
            let credit = params
                .credit
                .as_ref()
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("credit job {} without an amount", job.id)))?;
            let key = format!("bulk-job:{}:{}", job.id, target.id);
            let entry = credit.entry(Some(&key))?;
            let (_, booked) = ledger::book(conn, program.id, target.id, actor, entry)?;
            Ok((!booked).then(|| "Already credited by this job.".to_string()))
        }
    }
}

/// What the "job started" audit event says the job acts on.
pub fn described(selection: &Selection, list_query: &str) -> Value {
    match selection {
        Selection::Keys { keys } => json!({"scope": "keys", "keys": keys}),
        Selection::Matching { filter } => json!({"scope": "matching", "filter": filter, "query": list_query}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_filter_gives_back_the_filter() {
        let filter = CustomerFilter {
            search: Some("@acme".into()),
            refer_status: Some(ReferStatus::Referred),
            status: StatusFilter::All,
            approved: Some(false),
            created_from: NaiveDate::from_ymd_opt(2024, 1, 1),
            created_to: NaiveDate::from_ymd_opt(2024, 2, 1),
            ..Default::default()
        };
        let stored = StoredFilter::of(&filter);
        let back: StoredFilter = serde_json::from_value(serde_json::to_value(&stored).unwrap()).unwrap();
        assert_eq!(back.filter(), filter);
    }

    #[test]
    fn every_action_has_its_kind_and_name() {
        for action in BulkAction::ALL {
            assert_eq!(BulkAction::parse(action.as_str()), Some(action));
        }
        assert_eq!(BulkAction::parse("erase"), None);
        assert!(BulkAction::Delete.needs_admin() && !BulkAction::Credit.needs_admin());
    }
}
