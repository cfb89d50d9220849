//! Booking an entry: the customer locked, the balance checked, the idempotency key honoured.

use bigdecimal::BigDecimal;
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::{balance_transactions, customers};
use crate::domain::customers::CustomerStatus;
use crate::domain::{audit, webhooks, Actor};
use crate::error::{add_messages, is_unique_violation, Error, FieldErrors};

use super::{
    balance_of, format_amount, parse_amount, parse_units, Kind, NewEntry, Transaction, CURRENCY_DECIMALS,
    UNIT_DECIMALS,
};

const IDEMPOTENCY_CONSTRAINT: &str = "balance_transactions_program_id_idempotency_key_key";

/// Books a credit or debit for a customer of `program_id`.
///
/// Returns the transaction and whether it was booked now (`false`: the idempotency key was
/// used before, and the earlier transaction is returned; nothing is booked).
pub fn book(
    conn: &mut PgConnection,
    program_id: i64,
    customer_id: i64,
    actor: &Actor,
    entry: NewEntry,
) -> Result<(Transaction, bool), Error> {
    entry.check()?;
    let attempt =
        conn.transaction::<_, Failure, _>(|conn| book_locked(conn, program_id, customer_id, actor, &entry));
    match attempt {
        Ok(outcome) => Ok(outcome),
        Err(Failure::Error(error)) => Err(error),
        // Another request booked the same key between our check and our insert.
        Err(Failure::KeyTaken) => {
            let key = entry.idempotency_key.as_deref().unwrap_or_default();
            match find_by_idempotency_key(conn, program_id, key)? {
                Some(existing) => replay(existing, customer_id),
                None => Err(Error::Internal(anyhow::anyhow!(
                    "idempotency key conflict without a stored transaction"
                ))),
            }
        }
    }
}

/// Why debiting `amount` would take the balance below zero, if it would.
fn shortfall(
    conn: &mut PgConnection,
    customer_id: i64,
    amount: &BigDecimal,
    units: &str,
    is_currency: bool,
) -> Result<Option<String>, Error> {
    let current = balance_of(conn, customer_id, units, is_currency)?;
    Ok((current < *amount).then(|| {
        format!(
            "A debit may not take the balance below zero: the {units} balance is only {}.",
            format_amount(&current, is_currency)
        )
    }))
}

/// [`NewEntry::parse`] for a form about one customer, and, when that refuses it, whether a
/// debit whose amount and units are fine would overdraw the balance: every problem of the
/// form in one round. (A form that parses is checked again, under a lock, by [`book`].)
#[allow(clippy::too_many_arguments)]
pub fn parse_for_customer(
    conn: &mut PgConnection,
    customer_id: i64,
    kind: &str,
    amount: &str,
    units: &str,
    is_currency: bool,
    note: &str,
    idempotency_key: Option<&str>,
) -> Result<NewEntry, Error> {
    let mut fields = FieldErrors::new();
    let parsed = NewEntry::parse(kind, amount, units, is_currency, note, idempotency_key);
    let entry = Error::collect(&mut fields, parsed)?;
    let decimals = if is_currency {
        CURRENCY_DECIMALS
    } else {
        UNIT_DECIMALS
    };
    if entry.is_none() && Kind::parse(kind.trim()) == Some(Kind::Debit) {
        if let (Ok(amount), Ok(units)) = (parse_amount(amount, decimals), parse_units(units, is_currency)) {
            if let Some(message) = shortfall(conn, customer_id, &amount, &units, is_currency)? {
                add_messages(&mut fields, "amount", [message]);
            }
        }
    }
    Error::checked(entry, fields)
}

/// Why a booking transaction rolled back.
enum Failure {
    Error(Error),
    KeyTaken,
}

impl From<diesel::result::Error> for Failure {
    fn from(error: diesel::result::Error) -> Self {
        if is_unique_violation(&error, IDEMPOTENCY_CONSTRAINT) {
            Failure::KeyTaken
        } else {
            Failure::Error(error.into())
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Error(error)
    }
}

/// The `data` of `balance.credited`: the entry and whose balance it credits.
pub(super) fn credited_data(
    booked: &Transaction,
    customer_external_id: &str,
    customer_key: &str,
) -> serde_json::Value {
    json!({
        // A JSON number, as the API shows amounts (every stored amount prints back exactly).
        "amount": bigdecimal::ToPrimitive::to_f64(&booked.amount),
        "amount_units": booked.amount_units,
        "created_at": webhooks::timestamp(&booked.created_at),
        "customer": {"id": customer_external_id, "key": customer_key},
        "id": booked.id,
        "is_currency": booked.is_currency,
        "note": booked.note,
    })
}

/// A replayed key returns the earlier booking, but only for the same customer: reusing a
/// key for someone else is a client bug that must not pass silently.
fn replay(existing: Transaction, customer_id: i64) -> Result<(Transaction, bool), Error> {
    if existing.customer_id == customer_id {
        Ok((existing, false))
    } else {
        Err(Error::invalid(
            "idempotency_key",
            "This idempotency key was already used for another customer.",
        ))
    }
}

fn find_by_idempotency_key(
    conn: &mut PgConnection,
    program_id: i64,
    key: &str,
) -> Result<Option<Transaction>, Error> {
    Ok(balance_transactions::table
        .filter(balance_transactions::program_id.eq(program_id))
        .filter(balance_transactions::idempotency_key.eq(key))
        .select(Transaction::as_select())
        .first(conn)
        .optional()?)
}

fn book_locked(
    conn: &mut PgConnection,
    program_id: i64,
    customer_id: i64,
    actor: &Actor,
    entry: &NewEntry,
) -> Result<(Transaction, bool), Failure> {
    // The lock serialises bookings per customer: a debit sees every earlier booking, and
    // a replayed key sees the booking made by the request it waited for.
    let (status, customer_key, customer_external_id): (CustomerStatus, String, String) = customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::id.eq(customer_id))
        .select((customers::status, customers::key, customers::external_id))
        .for_update()
        .first(conn)?;
    if let Some(key) = &entry.idempotency_key {
        if let Some(existing) = find_by_idempotency_key(conn, program_id, key)? {
            return Ok(replay(existing, customer_id)?);
        }
    }
    if status == CustomerStatus::Deleted {
        return Err(Error::invalid(
            "customer",
            "This customer is deleted; restore them before booking credits or debits.",
        )
        .into());
    }
    if entry.kind == Kind::Debit {
        if let Some(message) = shortfall(conn, customer_id, &entry.amount, &entry.units, entry.is_currency)? {
            return Err(Error::invalid("amount", message).into());
        }
    }
    let booked: Transaction = diesel::insert_into(balance_transactions::table)
        .values((
            balance_transactions::program_id.eq(program_id),
            balance_transactions::customer_id.eq(customer_id),
            balance_transactions::kind.eq(entry.kind),
            balance_transactions::amount.eq(&entry.amount),
            balance_transactions::amount_units.eq(&entry.units),
            balance_transactions::is_currency.eq(entry.is_currency),
            balance_transactions::note.eq(&entry.note),
            balance_transactions::actor_member_id.eq(actor.member_id),
            balance_transactions::actor_token_id.eq(actor.token_id),
            balance_transactions::idempotency_key.eq(&entry.idempotency_key),
        ))
        .returning(Transaction::as_returning())
        .get_result(conn)?;
    record_booking(conn, actor, program_id, customer_id, entry.kind, &booked)?;
    if entry.kind == Kind::Credit {
        let data = credited_data(&booked, &customer_external_id, &customer_key);
        webhooks::emit(
            conn,
            program_id,
            webhooks::Event::BalanceCredited,
            Some(customer_id),
            &data,
        )?;
    }
    Ok((booked, true))
}

/// The audit event of a booking.
fn record_booking(
    conn: &mut PgConnection,
    actor: &Actor,
    program_id: i64,
    customer_id: i64,
    kind: Kind,
    booked: &Transaction,
) -> Result<(), Error> {
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(program_id),
            action: match kind {
                Kind::Credit => "ledger.credit",
                Kind::Debit => "ledger.debit",
            },
            subject_type: "balance_transaction",
            subject_id: Some(booked.id.to_string()),
            customer_id: Some(customer_id),
            before: None,
            after: Some(json!({
                "kind": booked.kind,
                "amount": booked.amount_display(),
                "amount_units": booked.amount_units,
                "is_currency": booked.is_currency,
                "note": booked.note,
            })),
        },
    )
}
