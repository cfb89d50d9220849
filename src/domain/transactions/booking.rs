//! Booking a transaction: the customer found (or created), the row written once per key,
//! the sale rules fired in the same database transaction.
//!
//! Idempotency: the row is inserted with `ON CONFLICT (program_id, key) DO NOTHING`. Of
//! concurrent requests with one key, PostgreSQL lets one insert; the others wait for it to
//! commit, insert nothing, and then read the committed row and its rewards — the same
//! answer. A different body under a used key (another `request_hash`) is refused.

use chrono::Utc;
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::transactions;
use crate::domain::customers::{self, Customer};
use crate::domain::programs::Program;
use crate::domain::rewards::engine::{self, Event, Fired, Known};
use crate::domain::rewards::lookup::{self, RewardLine};
use crate::domain::{audit, webhooks, Actor};
use crate::error::Error;

use super::input::{CustomerRef, NewTransaction};
use super::Transaction;

/// A booked transaction with what its answer shows.
#[derive(Debug)]
pub struct Booked {
    pub transaction: Transaction,
    pub customer: Customer,
    pub rewards: Vec<RewardLine>,
    /// `false`: the key was booked before (by this request's earlier try).
    pub created: bool,
}

/// Books `new` for a customer of `program` (see the module documentation).
pub fn book(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    new: NewTransaction,
) -> Result<Booked, Error> {
    if let Some(existing) = super::find_by_key(conn, program.id, &new.key).optional_found()? {
        return replay(conn, existing, &new);
    }
    let customer = resolve_customer(conn, program, actor, &new)?;
    if customer.is_deleted() {
        return Err(Error::invalid(
            new.customer.field(),
            "This customer is deleted; restore them before booking transactions.",
        ));
    }
    let inserted = conn.transaction(|conn| insert_and_fire(conn, program, actor, &customer, &new))?;
    match inserted {
        Some((transaction, rewards)) => Ok(Booked {
            transaction,
            customer,
            rewards,
            created: true,
        }),
        None => {
            let existing = super::find_by_key(conn, program.id, &new.key)?;
            replay(conn, existing, &new)
        }
    }
}

trait OptionalFound<T> {
    fn optional_found(self) -> Result<Option<T>, Error>;
}

impl<T> OptionalFound<T> for Result<T, Error> {
    /// `NotFound` as `None`.
    fn optional_found(self) -> Result<Option<T>, Error> {
        match self {
            Ok(found) => Ok(Some(found)),
            Err(Error::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

/// The answer to a key already booked: the booking, if the request is the same one.
fn replay(conn: &mut PgConnection, existing: Transaction, new: &NewTransaction) -> Result<Booked, Error> {
    if existing.request_hash != new.request_hash {
        return Err(Error::invalid(
            "key",
            "A transaction with this key was already booked with other details; use a new key.",
        ));
    }
    let customer = customers::find(conn, existing.program_id, existing.customer_id)?;
    let rewards = lookup::of_transaction(conn, existing.id)?;
    Ok(Booked {
        transaction: existing,
        customer,
        rewards,
        created: false,
    })
}

fn lookup_customer(
    conn: &mut PgConnection,
    program_id: i64,
    named: &CustomerRef,
) -> Result<Option<Customer>, Error> {
    match named {
        CustomerRef::Key(key) => customers::find_by_key(conn, program_id, key),
        CustomerRef::Id(value) | CustomerRef::Email(value) => {
            customers::find_by_ident(conn, program_id, value)
        }
    }
    .optional_found()
}

/// The customer the request names; created from its `customer` object when
/// `options.create_customer` asks for it and none matches. A concurrent request that
/// created them first is not an error: the customer it created is used.
fn resolve_customer(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    new: &NewTransaction,
) -> Result<Customer, Error> {
    if let Some(found) = lookup_customer(conn, program.id, &new.customer)? {
        return Ok(found);
    }
    let Some(create) = &new.create else {
        return Err(Error::invalid(
            new.customer.field(),
            "No such customer in this program. Send options.create_customer: true to create them.",
        ));
    };
    match customers::sign_up(conn, program, actor, create.clone()) {
        Ok(created) => Ok(created.customer),
        Err(Error::Invalid { fields, .. }) => match lookup_customer(conn, program.id, &new.customer)? {
            Some(found) => Ok(found),
            None => Err(Error::invalid_fields(
                fields
                    .into_iter()
                    .map(|(field, messages)| (format!("customer.{field}"), messages))
                    .collect(),
            )),
        },
        Err(other) => Err(other),
    }
}

/// Inserts the row unless the key is taken (`None`), and fires the sale rules; returns
/// the row with the rewards it fired.
fn insert_and_fire(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer: &Customer,
    new: &NewTransaction,
) -> Result<Option<(Transaction, Vec<RewardLine>)>, Error> {
    let inserted: Option<Transaction> = diesel::insert_into(transactions::table)
        .values((
            transactions::program_id.eq(program.id),
            transactions::customer_id.eq(customer.id),
            transactions::key.eq(&new.key),
            transactions::amount.eq(&new.amount),
            transactions::amount_units.eq(&new.amount_units),
            transactions::action.eq(new.action),
            transactions::product_id.eq(&new.product_id),
            transactions::product_type.eq(&new.product_type),
            transactions::rewardable.eq(customer.referrer_id.is_some()),
            transactions::request_hash.eq(&new.request_hash),
            transactions::actor_member_id.eq(actor.member_id),
            transactions::actor_token_id.eq(actor.token_id),
        ))
        .on_conflict((transactions::program_id, transactions::key))
        .do_nothing()
        .returning(Transaction::as_returning())
        .get_result(conn)
        .optional()?;
    let Some(sale) = inserted else {
        return Ok(None);
    };
    // Asked once for the sale's own event and its rewards' events.
    let listening = webhooks::has_subscriptions(conn, program.id)?;
    let known = Known {
        referrer: None,
        new_event: true,
        listening: Some(listening),
    };
    let fired = engine::fire(conn, program.id, customer, Event::Sale(&sale), Utc::now(), known)?;
    let sale = store_notes(conn, sale, &fired)?;
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(program.id),
            action: "transaction.create",
            subject_type: "transaction",
            subject_id: Some(sale.key.clone()),
            customer_id: Some(customer.id),
            before: None,
            after: Some(json!({
                "key": sale.key,
                "amount": sale.amount.to_string(),
                "amount_units": sale.amount_units,
                "action": sale.action,
                "rewards": fired.rewards.len(),
            })),
        },
    )?;
    if listening {
        super::lifecycle::announce_to_listeners(conn, webhooks::Event::TransactionCreated, &sale)?;
    }
    let rewards = fired.lines(customer, Some(&sale.key));
    Ok(Some((sale, rewards)))
}

/// Writes why rules created nothing onto the transaction (only when there is something
/// to say: most sales need no second write).
pub(super) fn store_notes(
    conn: &mut PgConnection,
    sale: Transaction,
    fired: &Fired,
) -> Result<Transaction, Error> {
    if fired.notes.is_empty() && sale.reward_notes.as_array().is_none_or(Vec::is_empty) {
        return Ok(sale);
    }
    let notes = serde_json::to_value(&fired.notes).map_err(|error| Error::Internal(error.into()))?;
    Ok(diesel::update(transactions::table.find(sale.id))
        .set(transactions::reward_notes.eq(notes))
        .returning(Transaction::as_returning())
        .get_result(conn)?)
}
