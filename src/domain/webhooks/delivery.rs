//! Claiming due deliveries and recording what became of each attempt.
//!
//! A claim (one short transaction) locks due deliveries with `FOR UPDATE SKIP LOCKED`, so
//! several server processes never take the same one, and moves each past a lease: a process
//! killed mid-delivery leaves it to become due again when the lease ends (delivered at
//! least once, never lost, never marked sent). The subscriptions are locked too
//! (`FOR NO KEY UPDATE SKIP LOCKED`, which leaves `emit`'s inserts free), so the count of
//! deliveries in flight per endpoint is exact across processes.
//!
//! Every time here is the caller's `now`: the worker passes the clock, tests a chosen time.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::prepared::prepared;
use crate::db::schema::{
    team_members, webhook_attempts, webhook_deliveries as deliveries, webhook_subscriptions as subs,
};
use crate::error::Error;

use super::{timestamp, Event};

/// The waits after the 1st, 2nd, … failed attempt; after the last one the delivery fails.
pub const BACKOFF_SECS: [i64; 7] = [60, 5 * 60, 30 * 60, 2 * 3600, 6 * 3600, 12 * 3600, 24 * 3600];
/// A subscription failing this long without a success is turned off.
pub const AUTO_DISABLE_AFTER_DAYS: i64 = 3;
/// The most of an answer kept in the log.
pub const MAX_RESPONSE_BYTES: usize = 2048;

/// How much one claim may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Deliveries claimed at most (the worker's free slots).
    pub batch: i64,
    /// Deliveries in flight at most per subscription, across processes.
    pub per_endpoint: i64,
    /// How long a claim holds a delivery: longer than an attempt can take.
    pub lease: Duration,
}

/// A claimed delivery with everything its request needs.
#[derive(Clone, Debug, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub delivery_id: i64,
    #[diesel(sql_type = BigInt)]
    pub subscription_id: i64,
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub event: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub customer_id: Option<i64>,
    /// This attempt's number (1 for the first).
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub webhook_key: String,
    #[diesel(sql_type = Text)]
    pub secret: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_secret: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub previous_secret_until: Option<DateTime<Utc>>,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

impl Claimed {
    /// The body, Partnero's envelope with the event id: exactly these bytes are signed.
    pub fn body(&self) -> String {
        json!({
            "created_at": timestamp(&self.created_at),
            "data": self.data,
            "event": self.event,
            "id": self.event_id,
            "url": self.url,
            "webhook_key": self.webhook_key,
        })
        .to_string()
    }

    /// The secrets that sign it at `now` (both during a rotation's overlap).
    pub fn secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_secret_until) {
            if now < until {
                secrets.push(previous);
            }
        }
        secrets
    }
}

#[derive(QueryableByName)]
struct Candidate {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    subscription_id: i64,
}

#[derive(QueryableByName)]
struct InFlight {
    #[diesel(sql_type = BigInt)]
    subscription_id: i64,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// When the next delivery of an active subscription falls due: a retry, or the end of a
/// lease whose process died (it may be due already, waiting for a slot).
///
/// The first in time order rather than `min()`: PostgreSQL answers `min()` from an index
/// only on a single table, so with the join it would read every pending delivery on every
/// round of the worker; in order, it stops at the first one of an active subscription.
pub fn next_due(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(deliveries::table
        .inner_join(subs::table)
        .filter(deliveries::status.eq("pending"))
        .filter(subs::is_active)
        .order(deliveries::next_attempt_at)
        .select(deliveries::next_attempt_at)
        .first(conn)
        .optional()?)
}

/// Claims due deliveries of active subscriptions, at most `limits.per_endpoint` in flight
/// per subscription. Commits before returning: the requests are made outside any
/// transaction.
pub fn claim(conn: &mut PgConnection, now: DateTime<Utc>, limits: Limits) -> Result<Vec<Claimed>, Error> {
    if limits.batch <= 0 {
        return Ok(Vec::new());
    }
    conn.transaction(|conn| {
        let candidates = due_candidates(conn, now, &limits)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let free = free_slots(conn, now, &limits, &candidates)?;
        let chosen = choose(candidates, free, limits.batch);
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        lease(conn, &chosen, now, now + limits.lease)
    })
}

/// Due deliveries of active subscriptions, locked, in the order they fell due.
fn due_candidates(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Vec<Candidate>, Error> {
    // Endpoints already full are left out, so that the backlog of a slow or dead one
    // never stands in front of the others; more candidates than slots, as some
    // endpoints may fill up on the way.
    Ok(prepared(
        "SELECT d.id, d.subscription_id FROM webhook_deliveries d
             JOIN webhook_subscriptions s ON s.id = d.subscription_id AND s.is_active
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1
               AND d.subscription_id NOT IN (
                   SELECT subscription_id FROM webhook_deliveries
                   WHERE status = 'pending' AND claimed_until > $1
                   GROUP BY subscription_id HAVING count(*) >= $3)
             ORDER BY d.next_attempt_at, d.id LIMIT $2
             FOR UPDATE OF d SKIP LOCKED",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<BigInt, _>(limits.batch.saturating_mul(4))
    .bind::<BigInt, _>(limits.per_endpoint)
    .load(conn)?)
}

/// The candidates' subscriptions this worker could lock, each with how many more of its
/// deliveries may be in flight.
fn free_slots(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limits: &Limits,
    candidates: &[Candidate],
) -> Result<HashMap<i64, i64>, Error> {
    let mut wanted: Vec<i64> = candidates.iter().map(|c| c.subscription_id).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let locked: Vec<i64> = subs::table
        .filter(subs::id.eq_any(&wanted))
        .select(subs::id)
        .for_no_key_update()
        .skip_locked()
        .load(conn)?;
    let in_flight: Vec<InFlight> = prepared(
        "SELECT subscription_id, count(*) AS count FROM webhook_deliveries
             WHERE status = 'pending' AND claimed_until > $1 AND subscription_id = ANY ($2)
             GROUP BY subscription_id",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Array<BigInt>, _>(&locked)
    .load(conn)?;
    let mut free: HashMap<i64, i64> = locked.iter().map(|id| (*id, limits.per_endpoint)).collect();
    for busy in in_flight {
        if let Some(slots) = free.get_mut(&busy.subscription_id) {
            *slots -= busy.count;
        }
    }
    Ok(free)
}

/// The candidates to claim, in order: at most `batch`, each within its subscription's
/// free slots.
fn choose(candidates: Vec<Candidate>, mut free: HashMap<i64, i64>, batch: i64) -> Vec<i64> {
    let mut chosen = Vec::new();
    for candidate in candidates {
        if chosen.len() as i64 >= batch {
            break;
        }
        if let Some(slots) = free.get_mut(&candidate.subscription_id) {
            if *slots > 0 {
                *slots -= 1;
                chosen.push(candidate.id);
            }
        }
    }
    chosen
}

/// Counts an attempt of each chosen delivery and leases it until `until`; the deliveries
/// with what sending them needs.
fn lease(
    conn: &mut PgConnection,
    chosen: &[i64],
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<Claimed>, Error> {
    Ok(prepared(
        "WITH claimed AS (
                 UPDATE webhook_deliveries
                 SET attempts = attempts + 1, claimed_until = $2, next_attempt_at = $2, updated_at = $3
                 WHERE id = ANY ($1)
                 RETURNING id, subscription_id, event_id, event, customer_id, attempts
             )
             SELECT c.id AS delivery_id, c.subscription_id, c.event_id, c.event, c.customer_id,
                    c.attempts AS attempt, s.url, s.key AS webhook_key, s.secret,
                    s.previous_secret, s.previous_secret_until, e.data, e.created_at
             FROM claimed c
             JOIN webhook_subscriptions s ON s.id = c.subscription_id
             JOIN webhook_events e ON e.id = c.event_id
             ORDER BY c.id",
    )
    .bind::<Array<BigInt>, _>(chosen)
    .bind::<Timestamptz, _>(until)
    .bind::<Timestamptz, _>(now)
    .load(conn)?)
}

/// What one attempt gave.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    /// The first [`MAX_RESPONSE_BYTES`] of the answer.
    pub response: Option<String>,
    /// Why it failed before an answer (timeout, refused address, connection error).
    pub error: Option<String>,
}

impl AttemptResult {
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status_code.is_some_and(|code| (200..300).contains(&code))
    }
}

/// The wait after the `attempt`-th failure, with jitter (±20 %) so that the retries of a
/// burst spread out; `None` once the schedule is used up.
pub fn backoff(attempt: i32, jitter: f64) -> Option<Duration> {
    let base = *BACKOFF_SECS.get(usize::try_from(attempt).ok()?.checked_sub(1)?)?;
    let factor = 1.0 + 0.2 * jitter.clamp(-1.0, 1.0);
    Some(Duration::seconds((base as f64 * factor).round() as i64))
}

/// Records an attempt and what follows: delivered, retried later (`jitter` in [-1, 1]
/// spreads the wait) or failed. A failure streak of [`AUTO_DISABLE_AFTER_DAYS`] turns the
/// subscription off and tells the admins by email. Returns whether it disabled it.
pub fn record(
    conn: &mut PgConnection,
    claimed: &Claimed,
    result: &AttemptResult,
    now: DateTime<Utc>,
    jitter: f64,
) -> Result<bool, Error> {
    if result.succeeded() {
        record_success(conn, claimed, result, now)?;
        return Ok(false);
    }
    conn.transaction(|conn| {
        let retry_at = backoff(claimed.attempt, jitter).map(|wait| now + wait);
        let status = if retry_at.is_some() { "pending" } else { "failed" };
        diesel::update(deliveries::table.find(claimed.delivery_id))
            .filter(deliveries::status.eq("pending"))
            .set((
                deliveries::status.eq(status),
                deliveries::claimed_until.eq(None::<DateTime<Utc>>),
                deliveries::next_attempt_at.eq(retry_at.unwrap_or(now)),
                deliveries::updated_at.eq(now),
            ))
            .execute(conn)?;
        diesel::insert_into(webhook_attempts::table)
            .values((
                webhook_attempts::delivery_id.eq(claimed.delivery_id),
                webhook_attempts::subscription_id.eq(claimed.subscription_id),
                webhook_attempts::event_id.eq(claimed.event_id),
                webhook_attempts::event.eq(&claimed.event),
                webhook_attempts::customer_id.eq(claimed.customer_id),
                webhook_attempts::outcome.eq("failure"),
                webhook_attempts::status_code.eq(result.status_code),
                webhook_attempts::duration_ms.eq(result.duration_ms),
                webhook_attempts::response.eq(&result.response),
                webhook_attempts::error.eq(&result.error),
                webhook_attempts::next_retry_at.eq(retry_at),
                webhook_attempts::attempted_at.eq(now),
            ))
            .execute(conn)?;
        note_failure(conn, claimed.subscription_id, now)
    })
}

/// [`record`] for a success: one statement (atomic on its own, so no transaction and one
/// round trip) marks the delivery delivered, logs the attempt and ends the subscription's
/// failure streak, if any.
fn record_success(
    conn: &mut PgConnection,
    claimed: &Claimed,
    result: &AttemptResult,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    prepared(
        "WITH delivered AS (
             UPDATE webhook_deliveries
             SET status = 'delivered', claimed_until = NULL, next_attempt_at = $7, updated_at = $7
             WHERE id = $1 AND status = 'pending'
             RETURNING id
         ), logged AS (
             INSERT INTO webhook_attempts (delivery_id, subscription_id, event_id, event, customer_id,
                 outcome, status_code, duration_ms, response, error, next_retry_at, attempted_at)
             VALUES ($1, $2, $3, $4, $5, 'success', $6, $8, $9, NULL, NULL, $7)
             RETURNING id
         )
         UPDATE webhook_subscriptions SET failing_since = NULL
         WHERE id = $2 AND failing_since IS NOT NULL",
    )
    .bind::<BigInt, _>(claimed.delivery_id)
    .bind::<BigInt, _>(claimed.subscription_id)
    .bind::<SqlUuid, _>(claimed.event_id)
    .bind::<Text, _>(&claimed.event)
    .bind::<Nullable<BigInt>, _>(claimed.customer_id)
    .bind::<Nullable<Integer>, _>(result.status_code)
    .bind::<Timestamptz, _>(now)
    .bind::<Integer, _>(result.duration_ms)
    .bind::<Nullable<Text>, _>(&result.response)
    .execute(conn)?;
    Ok(())
}

/// Starts or continues the subscription's failure streak; ends it by disabling the
/// subscription when it has lasted [`AUTO_DISABLE_AFTER_DAYS`].
fn note_failure(conn: &mut PgConnection, subscription_id: i64, now: DateTime<Utc>) -> Result<bool, Error> {
    let streak: Option<(Option<DateTime<Utc>>, bool)> = subs::table
        .find(subscription_id)
        .select((subs::failing_since, subs::is_active))
        .for_no_key_update()
        .first(conn)
        .optional()?;
    let streak = match streak {
        Some((None, active)) => {
            diesel::update(subs::table.find(subscription_id))
                .set(subs::failing_since.eq(Some(now)))
                .execute(conn)?;
            Some((Some(now), active))
        }
        other => other,
    };
    let Some((Some(since), true)) = streak else {
        return Ok(false);
    };
    if now - since < Duration::days(AUTO_DISABLE_AFTER_DAYS) {
        return Ok(false);
    }
    let (program_id, name, url): (i64, String, String) = diesel::update(subs::table.find(subscription_id))
        .set((
            subs::is_active.eq(false),
            subs::auto_disabled_at.eq(Some(now)),
            subs::updated_at.eq(now),
        ))
        .returning((subs::program_id, subs::name, subs::url))
        .get_result(conn)?;
    tell_admins(conn, program_id, &name, &url, since)?;
    tracing::warn!(
        subscription_id,
        "webhook subscription disabled after failing for days"
    );
    Ok(true)
}

/// Queues the notice of an automatic disable to every active admin (the mail outbox).
fn tell_admins(
    conn: &mut PgConnection,
    program_id: i64,
    name: &str,
    url: &str,
    since: DateTime<Utc>,
) -> Result<(), Error> {
    let admins: Vec<String> = team_members::table
        .filter(team_members::role.eq("admin"))
        .filter(team_members::disabled.eq(false))
        .select(team_members::email)
        .load(conn)?;
    let program: String = crate::db::schema::programs::table
        .find(program_id)
        .select(crate::db::schema::programs::name)
        .first(conn)?;
    let subject = format!("Webhook \"{name}\" of {program} was turned off");
    let text = format!(
        "The webhook \"{name}\" ({url}) of the program {program} has failed every delivery since {}, \
         so Referdesk turned it off. Events are no longer sent to it.\n\n\
         Check the receiver, then turn the webhook on again on the Webhooks page; its delivery \
         log shows the answers it gave.\n",
        since.format("%Y-%m-%d %H:%M UTC")
    );
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let html = format!("<p>{}</p>", escaped.trim_end().replace("\n\n", "</p><p>"));
    for admin in admins {
        diesel::insert_into(crate::db::schema::mail_outbox::table)
            .values((
                crate::db::schema::mail_outbox::recipient.eq(admin),
                crate::db::schema::mail_outbox::subject.eq(&subject),
                crate::db::schema::mail_outbox::body_text.eq(&text),
                crate::db::schema::mail_outbox::body_html.eq(&html),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Queues a `webhook.test` event for this one subscription (it must be active).
pub fn send_test(conn: &mut PgConnection, program_id: i64, key: &str) -> Result<Uuid, Error> {
    conn.transaction(|conn| {
        let subscription = super::subscriptions::find(conn, program_id, key)?;
        if !subscription.is_active {
            return Err(Error::invalid(
                "webhook",
                "Turn the webhook on before sending it a test event.",
            ));
        }
        let id = Uuid::new_v4();
        prepared(
            "WITH ev AS (
                 INSERT INTO webhook_events (id, program_id, event, data) VALUES ($1, $2, $3, $4) RETURNING id
             )
             INSERT INTO webhook_deliveries (event_id, subscription_id, event) SELECT ev.id, $5, $3 FROM ev",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<BigInt, _>(program_id)
        .bind::<Text, _>(Event::Test.as_str())
        .bind::<Jsonb, _>(json!({"message": "A test event sent from the Referdesk dashboard."}))
        .bind::<BigInt, _>(subscription.id)
        .execute(conn)?;
        Ok(id)
    })
}

/// Queues a finished delivery (delivered or failed) again, with the same event id.
pub fn resend(
    conn: &mut PgConnection,
    program_id: i64,
    key: &str,
    delivery_id: i64,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let subscription = super::subscriptions::find(conn, program_id, key)?;
    let queued = requeue(conn, subscription.id, Some(delivery_id), None, now)?;
    if queued == 0 {
        return Err(Error::invalid(
            "delivery",
            "This delivery is already waiting to be sent.",
        ));
    }
    Ok(())
}

/// Queues again every failed delivery of the subscription whose event happened in
/// `from..to`; returns how many.
pub fn resend_failed(
    conn: &mut PgConnection,
    program_id: i64,
    key: &str,
    range: (DateTime<Utc>, DateTime<Utc>),
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let subscription = super::subscriptions::find(conn, program_id, key)?;
    requeue(conn, subscription.id, None, Some(range), now)
}

fn requeue(
    conn: &mut PgConnection,
    subscription_id: i64,
    delivery_id: Option<i64>,
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let mut query = diesel::update(deliveries::table)
        .filter(deliveries::subscription_id.eq(subscription_id))
        .filter(deliveries::status.ne("pending"))
        .into_boxed();
    if let Some(id) = delivery_id {
        query = query.filter(deliveries::id.eq(id));
    }
    if let Some((from, to)) = range {
        query = query
            .filter(deliveries::status.eq("failed"))
            .filter(deliveries::created_at.ge(from))
            .filter(deliveries::created_at.lt(to));
    }
    Ok(query
        .set((
            deliveries::status.eq("pending"),
            deliveries::attempts.eq(0),
            deliveries::next_attempt_at.eq(now),
            deliveries::claimed_until.eq(None::<DateTime<Utc>>),
            deliveries::updated_at.eq(now),
        ))
        .execute(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_schedule_then_gives_up() {
        assert_eq!(backoff(1, 0.0), Some(Duration::minutes(1)));
        assert_eq!(backoff(3, 0.0), Some(Duration::minutes(30)));
        assert_eq!(backoff(7, 0.0), Some(Duration::hours(24)));
        assert_eq!(backoff(8, 0.0), None);
        assert_eq!(backoff(0, 0.0), None);
        assert_eq!(backoff(1, 1.0), Some(Duration::seconds(72)));
        assert_eq!(backoff(1, -1.0), Some(Duration::seconds(48)));
    }
}
