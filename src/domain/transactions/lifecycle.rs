//! Refunding, archiving and un-archiving a transaction, with what each does to its rewards.
//!
//! - Refund (`DELETE`): status `deleted`, final. Unpaid rewards are voided; credited ones
//!   are reversed through the ledger, or marked reversal owed (`rewards::voiding`).
//! - Archive: the transaction stops counting; its unpaid rewards are voided (reason
//!   [`VOID_ARCHIVED`]). Credited rewards stay: archiving is not a refund.
//! - Revoke archive: it counts again and the sale rules are evaluated anew, as of now. A
//!   reward that archiving voided comes back in place — the same row, `pending` again,
//!   with the amount, hold and rule snapshot of the rule as it is now — so the
//!   once-per-event constraint is never in the way; rules that now refuse it (a limit
//!   reached meanwhile, a rule disabled) leave it voided and say why on the transaction.
//!
//! Each is idempotent: doing it again to a transaction already in that state changes
//! nothing.

use chrono::Utc;
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::transactions;
use crate::domain::customers;
use crate::domain::programs::Program;
use crate::domain::rewards::engine::{self, Event::Sale, VOID_ARCHIVED};
use crate::domain::rewards::voiding::{self, VOID_REFUNDED};
use crate::domain::rewards::{lookup, view};
use crate::domain::webhooks::{self, Event};
use crate::domain::{audit, Actor};
use crate::error::Error;

use super::{booking, Transaction, TransactionStatus};

fn lock(conn: &mut PgConnection, program_id: i64, key: &str) -> Result<Transaction, Error> {
    super::check_key_shape(key)?;
    Ok(transactions::table
        .filter(transactions::program_id.eq(program_id))
        .filter(transactions::key.eq(key))
        .select(Transaction::as_select())
        .for_update()
        .first(conn)?)
}

fn refunded_already() -> Error {
    Error::invalid(
        "key",
        "This transaction was refunded; it can no longer be archived or restored.",
    )
}

fn set_status(
    conn: &mut PgConnection,
    current: &Transaction,
    status: TransactionStatus,
) -> Result<Transaction, Error> {
    let now = Utc::now();
    Ok(diesel::update(transactions::table.find(current.id))
        .set((
            transactions::status.eq(status),
            transactions::archived_at.eq((status == TransactionStatus::Archived).then_some(now)),
            transactions::deleted_at.eq((status == TransactionStatus::Deleted).then_some(now)),
            transactions::updated_at.eq(now),
        ))
        .returning(Transaction::as_returning())
        .get_result(conn)?)
}

fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    before: &Transaction,
    after: &Transaction,
) -> Result<(), Error> {
    let action = match after.status {
        TransactionStatus::Deleted => "transaction.refund",
        TransactionStatus::Archived => "transaction.archive",
        TransactionStatus::Active => "transaction.revoke_archive",
    };
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(after.program_id),
            action,
            subject_type: "transaction",
            subject_id: Some(after.key.clone()),
            customer_id: Some(after.customer_id),
            before: Some(json!({"status": before.status})),
            after: Some(json!({"status": after.status})),
        },
    )
}

/// Emits `event` about `sale` (as `POST /v1/transactions` shows it, its customer as the
/// customer events carry it) when the program has a subscription.
pub(super) fn announce(conn: &mut PgConnection, event: Event, sale: &Transaction) -> Result<(), Error> {
    if !webhooks::has_subscriptions(conn, sale.program_id)? {
        return Ok(());
    }
    announce_to_listeners(conn, event, sale)
}

/// [`announce`] once the caller found, in this transaction, that the program has a
/// subscription.
pub(super) fn announce_to_listeners(
    conn: &mut PgConnection,
    event: Event,
    sale: &Transaction,
) -> Result<(), Error> {
    let customer = customers::find(conn, sale.program_id, sale.customer_id)?;
    let customer = webhooks::customer_data_read(conn, &customer)?;
    let rewards = lookup::of_transaction(conn, sale.id)?;
    let data = serde_json::to_value(view::transaction(sale, customer, &rewards))
        .map_err(|error| Error::Internal(error.into()))?;
    webhooks::emit(conn, sale.program_id, event, Some(sale.customer_id), &data)?;
    Ok(())
}

/// Refunds the transaction with `key`.
pub fn refund(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    key: &str,
) -> Result<Transaction, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program.id, key)?;
        if current.status == TransactionStatus::Deleted {
            return Ok(current);
        }
        let updated = set_status(conn, &current, TransactionStatus::Deleted)?;
        let now = Utc::now();
        voiding::void_unpaid_of_transaction(conn, updated.id, VOID_REFUNDED, now)?;
        voiding::reverse_credited_of_transaction(conn, actor, updated.id, now)?;
        record(conn, actor, &current, &updated)?;
        announce(conn, Event::TransactionDeleted, &updated)?;
        Ok(updated)
    })
}

/// Archives the transaction with `key`.
pub fn archive(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    key: &str,
) -> Result<Transaction, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program.id, key)?;
        match current.status {
            TransactionStatus::Archived => return Ok(current),
            TransactionStatus::Deleted => return Err(refunded_already()),
            TransactionStatus::Active => {}
        }
        let updated = set_status(conn, &current, TransactionStatus::Archived)?;
        voiding::void_unpaid_of_transaction(conn, updated.id, VOID_ARCHIVED, Utc::now())?;
        record(conn, actor, &current, &updated)?;
        announce(conn, Event::TransactionUpdated, &updated)?;
        Ok(updated)
    })
}

/// Makes an archived transaction count again and evaluates the sale rules anew.
pub fn revoke_archive(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    key: &str,
) -> Result<Transaction, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program.id, key)?;
        match current.status {
            TransactionStatus::Active => return Ok(current),
            TransactionStatus::Deleted => return Err(refunded_already()),
            TransactionStatus::Archived => {}
        }
        let updated = set_status(conn, &current, TransactionStatus::Active)?;
        let customer = customers::find(conn, program.id, updated.customer_id)?;
        let fired = engine::fire(
            conn,
            program.id,
            &customer,
            Sale(&updated),
            Utc::now(),
            engine::Known::default(),
        )?;
        let updated = booking::store_notes(conn, updated, &fired)?;
        record(conn, actor, &current, &updated)?;
        announce(conn, Event::TransactionUpdated, &updated)?;
        Ok(updated)
    })
}
