//! Webhooks: the program's backend hears about changes without polling (SPEC §3.1).
//!
//! A change calls [`emit`] inside its own database transaction: the event goes to the
//! `webhook_events` outbox with one `webhook_deliveries` row per active subscription that
//! wants it, in the same statement. A change that rolls back therefore sends nothing, and
//! one that commits is never lost. The delivery worker (`crate::webhooks`) then claims due
//! deliveries ([`delivery`]), posts them and records each attempt ([`log`]).

pub mod addresses;
pub mod delivery;
pub mod log;
pub mod subscriptions;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Uuid as SqlUuid};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::prepared::prepared;
use crate::db::schema::customers;
use crate::db::text_enum;
use crate::domain::customers::Customer;
use crate::error::Error;

pub use crate::domain::json::timestamp;
pub use subscriptions::{Subscription, SubscriptionInput};

/// How long webhook attempts are kept when `REFERDESK_WEBHOOK_RETENTION_DAYS` is unset.
pub const DEFAULT_RETENTION_DAYS: i64 = 30;

text_enum! {
    /// What happened (`webhook_events.event`, `event` in the body).
    pub enum Event {
        CustomerCreated = "customer.created",
        CustomerUpdated = "customer.updated",
        CustomerDeleted = "customer.deleted",
        TransactionCreated = "transaction.created",
        TransactionUpdated = "transaction.updated",
        TransactionDeleted = "transaction.deleted",
        RewardCreated = "reward.created",
        RewardApproved = "reward.approved",
        /// Credited to the beneficiary's balance.
        RewardPaid = "reward.paid",
        RewardDenied = "reward.denied",
        RewardVoided = "reward.voided",
        BalanceCredited = "balance.credited",
        ReferralCreated = "referral.created",
        /// "Send test event" on the dashboard: only ever sent to the one subscription.
        Test = "webhook.test",
    }
}

impl Event {
    /// The events a subscription can ask for (all but the test event).
    pub fn subscribable() -> impl Iterator<Item = Event> {
        Event::ALL.into_iter().filter(|event| *event != Event::Test)
    }
}

/// Writes `event` about `data` for every active subscription of the program that wants it,
/// inside the caller's transaction; nothing at all when none does. `customer_id` is the
/// customer the event is about (the customer page links to its deliveries). Returns the
/// event id when the event was written.
///
/// Call it in the same transaction as the change, after the change succeeded: e.g.
/// `webhooks::emit(conn, program_id, Event::RewardCreated, Some(reward.customer_id), &data)`.
pub fn emit(
    conn: &mut PgConnection,
    program_id: i64,
    event: Event,
    customer_id: Option<i64>,
    data: &Value,
) -> Result<Option<Uuid>, Error> {
    let id = Uuid::new_v4();
    // One round trip: the subscriptions, the event (only if some want it) and its
    // deliveries. The subscriptions' rows are read without locks: one being edited at the
    // same moment is seen either before or after the edit.
    let written = prepared(
        "WITH subs AS (
             SELECT id FROM webhook_subscriptions
             WHERE program_id = $1 AND is_active AND (all_events OR $2 = ANY (events))
         ), ev AS (
             INSERT INTO webhook_events (id, program_id, event, customer_id, data)
             SELECT $3, $1, $2, $4, $5 WHERE EXISTS (SELECT 1 FROM subs)
             RETURNING id
         )
         INSERT INTO webhook_deliveries (event_id, subscription_id, event, customer_id)
         SELECT ev.id, subs.id, $2, $4 FROM ev, subs",
    )
    .bind::<BigInt, _>(program_id)
    .bind::<Text, _>(event.as_str())
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<BigInt>, _>(customer_id)
    .bind::<Jsonb, _>(data)
    .execute(conn)?;
    Ok((written > 0).then_some(id))
}

/// One event of [`emit_many`].
pub struct Emitted {
    pub program_id: i64,
    pub customer_id: Option<i64>,
    pub data: Value,
}

/// [`emit`] for many events of one kind, possibly of several programs (the hold release
/// spans them all), in one statement: each is written only for a program with an active
/// subscription that wants it. Callers skip building `data` for programs without any
/// subscription ([`listening_programs`]).
pub fn emit_many(conn: &mut PgConnection, event: Event, items: &[Emitted]) -> Result<(), Error> {
    if items.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = items.iter().map(|_| Uuid::new_v4()).collect();
    let programs: Vec<i64> = items.iter().map(|item| item.program_id).collect();
    let customers: Vec<Option<i64>> = items.iter().map(|item| item.customer_id).collect();
    let data: Vec<&Value> = items.iter().map(|item| &item.data).collect();
    prepared(
        "WITH items AS (
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::jsonb[])
                 WITH ORDINALITY AS i(id, program_id, customer_id, data, n)
         ), subs AS (
             SELECT id, program_id FROM webhook_subscriptions
             WHERE program_id = ANY ($2) AND is_active AND (all_events OR $5 = ANY (events))
         ), ev AS (
             INSERT INTO webhook_events (id, program_id, event, customer_id, data)
             SELECT i.id, i.program_id, $5, i.customer_id, i.data FROM items i
             WHERE EXISTS (SELECT 1 FROM subs WHERE subs.program_id = i.program_id)
             ORDER BY i.n
             RETURNING id, program_id, customer_id
         )
         INSERT INTO webhook_deliveries (event_id, subscription_id, event, customer_id)
         SELECT ev.id, subs.id, $5, ev.customer_id
         FROM ev JOIN subs ON subs.program_id = ev.program_id",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<BigInt>, _>(&programs)
    .bind::<Array<Nullable<BigInt>>, _>(&customers)
    .bind::<Array<Jsonb>, _>(&data)
    .bind::<Text, _>(event.as_str())
    .execute(conn)?;
    Ok(())
}

/// Which of `programs` have an active subscription (one query for a whole batch).
pub fn listening_programs(conn: &mut PgConnection, programs: &[i64]) -> Result<Vec<i64>, Error> {
    use crate::db::schema::webhook_subscriptions as subs;
    if programs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(subs::table
        .filter(subs::program_id.eq_any(programs))
        .filter(subs::is_active)
        .select(subs::program_id)
        .distinct()
        .load(conn)?)
}

/// Whether the program has an active subscription: a change may skip its webhook work
/// (and a transaction of its own) when it has none.
pub fn has_subscriptions(conn: &mut PgConnection, program_id: i64) -> Result<bool, Error> {
    use crate::db::schema::webhook_subscriptions as subs;
    Ok(diesel::select(diesel::dsl::exists(
        subs::table
            .filter(subs::program_id.eq(program_id))
            .filter(subs::is_active),
    ))
    .get_result(conn)?)
}

/// A customer as the events about customers carry it: the API's customer fields without
/// the referral links (which the receiver can fetch), with the referrer's key.
pub fn customer_data(customer: &Customer, referrer_key: Option<&str>) -> Value {
    json!({
        "approved": customer.approved,
        "created_at": timestamp(&customer.created_at),
        "custom_fields": customer.custom_fields,
        "email": customer.email,
        "id": customer.external_id,
        "key": customer.key,
        "metadata": customer.metadata,
        "name": customer.name,
        "referrals_count": customer.referrals_count,
        "referring_customer": referrer_key.map(|key| json!({"key": key})),
        "status": customer.status,
        "surname": customer.surname,
        "updated_at": timestamp(&customer.updated_at),
    })
}

/// [`customer_data`], reading the referrer's key.
pub fn customer_data_read(conn: &mut PgConnection, customer: &Customer) -> Result<Value, Error> {
    let referrer_key: Option<String> = match customer.referrer_id {
        Some(id) => customers::table
            .find(id)
            .select(customers::key)
            .first(conn)
            .optional()?,
        None => None,
    };
    Ok(customer_data(customer, referrer_key.as_deref()))
}

/// Emits `customer.created`, and `referral.created` when the customer has a referrer.
pub fn customer_created(
    conn: &mut PgConnection,
    customer: &Customer,
    referrer: Option<&Customer>,
) -> Result<(), Error> {
    let data = customer_data(customer, referrer.map(|referrer| referrer.key.as_str()));
    emit(
        conn,
        customer.program_id,
        Event::CustomerCreated,
        Some(customer.id),
        &data,
    )?;
    if let Some(referrer) = referrer {
        referral_created(conn, customer, referrer, data)?;
    }
    Ok(())
}

/// Emits `referral.created`: `customer` (as [`customer_data`]) was referred by `referrer`.
pub fn referral_created(
    conn: &mut PgConnection,
    customer: &Customer,
    referrer: &Customer,
    customer_json: Value,
) -> Result<(), Error> {
    let data = json!({
        "customer": customer_json,
        "referrer": customer_data_read(conn, referrer)?,
    });
    emit(
        conn,
        customer.program_id,
        Event::ReferralCreated,
        Some(referrer.id),
        &data,
    )?;
    Ok(())
}
