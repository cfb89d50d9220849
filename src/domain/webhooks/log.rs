//! The delivery log: every attempt, newest first, paged by id (a page costs the same at
//! the millionth attempt as at the first: the indexes lead with the subscription, or the
//! customer, then the id), and its pruning.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::schema::{
    webhook_attempts as attempts, webhook_deliveries as deliveries, webhook_events as events,
};
use crate::error::Error;

/// Attempts per page.
pub const PAGE_SIZE: i64 = 50;

/// Whose attempts: one subscription's, or those about one customer (any subscription of
/// the program; customer ids belong to one program).
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    Subscription(i64),
    Customer(i64),
}

#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub event: Option<String>,
    /// `success` or `failure`.
    pub outcome: Option<String>,
    /// Attempts older than this id (the next page).
    pub before: Option<i64>,
}

#[derive(Clone, Debug, Queryable)]
pub struct Attempt {
    pub id: i64,
    pub delivery_id: i64,
    pub subscription_id: i64,
    pub event_id: Uuid,
    pub event: String,
    pub outcome: String,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub response: Option<String>,
    pub error: Option<String>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub attempted_at: DateTime<Utc>,
    /// Where the delivery stands now (`pending`, `delivered`, `failed`).
    pub delivery_status: String,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.outcome == "success"
    }

    /// A finished delivery can be sent again.
    pub fn can_resend(&self) -> bool {
        self.delivery_status != "pending"
    }
}

/// A page of attempts, and the id to continue from when there are more.
pub fn page(
    conn: &mut PgConnection,
    scope: Scope,
    filters: &Filters,
) -> Result<(Vec<Attempt>, Option<i64>), Error> {
    let mut query = attempts::table
        .inner_join(deliveries::table)
        .select((
            attempts::id,
            attempts::delivery_id,
            attempts::subscription_id,
            attempts::event_id,
            attempts::event,
            attempts::outcome,
            attempts::status_code,
            attempts::duration_ms,
            attempts::response,
            attempts::error,
            attempts::next_retry_at,
            attempts::attempted_at,
            deliveries::status,
        ))
        .order(attempts::id.desc())
        .limit(PAGE_SIZE + 1)
        .into_boxed();
    query = match scope {
        Scope::Subscription(id) => query.filter(attempts::subscription_id.eq(id)),
        Scope::Customer(id) => query.filter(attempts::customer_id.eq(id)),
    };
    if let Some(event) = &filters.event {
        query = query.filter(attempts::event.eq(event.clone()));
    }
    if let Some(outcome) = &filters.outcome {
        query = query.filter(attempts::outcome.eq(outcome.clone()));
    }
    if let Some(before) = filters.before {
        query = query.filter(attempts::id.lt(before));
    }
    let mut rows: Vec<Attempt> = query.load(conn)?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let next = if more { rows.last().map(|row| row.id) } else { None };
    Ok((rows, next))
}

/// What one pruning pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub attempts: usize,
    pub deliveries: usize,
    pub events: usize,
}

/// Deletes attempts older than `retention`, finished deliveries untouched that long, and
/// events left without deliveries. Waiting deliveries and their events are kept.
pub fn prune(conn: &mut PgConnection, now: DateTime<Utc>, retention: Duration) -> Result<Pruned, Error> {
    let cutoff = now - retention;
    let attempts = diesel::delete(attempts::table.filter(attempts::attempted_at.lt(cutoff))).execute(conn)?;
    let deliveries = diesel::delete(
        deliveries::table
            .filter(deliveries::status.ne("pending"))
            .filter(deliveries::updated_at.lt(cutoff)),
    )
    .execute(conn)?;
    let events = diesel::delete(events::table.filter(events::created_at.lt(cutoff)).filter(
        diesel::dsl::not(diesel::dsl::exists(
            deliveries::table.filter(deliveries::event_id.eq(events::id)),
        )),
    ))
    .execute(conn)?;
    Ok(Pruned {
        attempts,
        deliveries,
        events,
    })
}
