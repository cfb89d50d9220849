//! Many credits at once, for the hold release: the same rules as [`super::book`] for a
//! credit (customers locked, deleted ones refused, one audit event per entry), in a few
//! statements instead of several per entry. The caller's transaction holds it all.

use std::collections::HashMap;

use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::{balance_transactions, customers};
use crate::domain::customers::CustomerStatus;
use crate::domain::webhooks::{self, Emitted, Event};
use crate::domain::{audit, Actor};
use crate::error::Error;

use super::{Kind, NewEntry, Transaction};

/// One credit of a batch.
pub struct NewCredit {
    pub program_id: i64,
    pub customer_id: i64,
    pub entry: NewEntry,
}

/// Books every credit of `credits` or none. Call inside a transaction; customers are
/// locked in id order (as every batch does, so two batches cannot deadlock).
pub fn book_credits(
    conn: &mut PgConnection,
    actor: &Actor,
    credits: &[NewCredit],
) -> Result<Vec<Transaction>, Error> {
    if credits.is_empty() {
        return Ok(Vec::new());
    }
    for credit in credits {
        credit.entry.check()?;
        if credit.entry.kind != Kind::Credit {
            return Err(Error::invalid("kind", "A batch books credits only."));
        }
    }
    let locked = lock_customers(conn, credits)?;
    let rows: Vec<_> = credits
        .iter()
        .map(|credit| {
            (
                balance_transactions::program_id.eq(credit.program_id),
                balance_transactions::customer_id.eq(credit.customer_id),
                balance_transactions::kind.eq(Kind::Credit),
                balance_transactions::amount.eq(&credit.entry.amount),
                balance_transactions::amount_units.eq(&credit.entry.units),
                balance_transactions::is_currency.eq(credit.entry.is_currency),
                balance_transactions::note.eq(&credit.entry.note),
                balance_transactions::actor_member_id.eq(actor.member_id),
                balance_transactions::actor_token_id.eq(actor.token_id),
                balance_transactions::idempotency_key.eq(&credit.entry.idempotency_key),
            )
        })
        .collect();
    let mut booked = Vec::with_capacity(rows.len());
    // Ten parameters a row: a thousand rows stay far below PostgreSQL's 65,535.
    for chunk in rows.chunks(1000) {
        let inserted: Vec<Transaction> = diesel::insert_into(balance_transactions::table)
            .values(chunk)
            .returning(Transaction::as_returning())
            .get_results(conn)?;
        booked.extend(inserted);
    }
    let changes = booked
        .iter()
        .map(|entry| audit::Change {
            program_id: Some(entry.program_id),
            action: "ledger.credit",
            subject_type: "balance_transaction",
            subject_id: Some(entry.id.to_string()),
            customer_id: Some(entry.customer_id),
            before: None,
            after: Some(json!({
                "kind": entry.kind,
                "amount": entry.amount_display(),
                "amount_units": entry.amount_units,
                "is_currency": entry.is_currency,
                "note": entry.note,
            })),
        })
        .collect();
    audit::record_many(conn, actor, changes)?;
    announce(conn, &booked, &locked)?;
    Ok(booked)
}

/// Locks the batch's customers in id order, refusing the batch when one is deleted;
/// returns each with its status, external id and key (for `balance.credited`).
fn lock_customers(
    conn: &mut PgConnection,
    credits: &[NewCredit],
) -> Result<Vec<(i64, CustomerStatus, String, String)>, Error> {
    let mut ids: Vec<i64> = credits.iter().map(|credit| credit.customer_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let locked: Vec<(i64, CustomerStatus, String, String)> = customers::table
        .filter(customers::id.eq_any(&ids))
        .order(customers::id.asc())
        .select((
            customers::id,
            customers::status,
            customers::external_id,
            customers::key,
        ))
        .for_update()
        .load(conn)?;
    if locked.len() != ids.len()
        || locked
            .iter()
            .any(|(_, status, _, _)| *status == CustomerStatus::Deleted)
    {
        return Err(Error::invalid(
            "customer",
            "A customer of this batch is deleted; restore them before booking credits.",
        ));
    }
    Ok(locked)
}

/// `balance.credited` for each booked entry, as [`super::book`] emits it, for the
/// programs that have a subscription.
fn announce(
    conn: &mut PgConnection,
    booked: &[Transaction],
    customers: &[(i64, CustomerStatus, String, String)],
) -> Result<(), Error> {
    let mut programs: Vec<i64> = booked.iter().map(|entry| entry.program_id).collect();
    programs.sort_unstable();
    programs.dedup();
    let listening = webhooks::listening_programs(conn, &programs)?;
    if listening.is_empty() {
        return Ok(());
    }
    let names: HashMap<i64, (&str, &str)> = customers
        .iter()
        .map(|(id, _, external_id, key)| (*id, (external_id.as_str(), key.as_str())))
        .collect();
    let items: Vec<Emitted> = booked
        .iter()
        .filter(|entry| listening.contains(&entry.program_id))
        .filter_map(|entry| {
            let (external_id, key) = names.get(&entry.customer_id)?;
            Some(Emitted {
                program_id: entry.program_id,
                customer_id: Some(entry.customer_id),
                data: super::booking::credited_data(entry, external_id, key),
            })
        })
        .collect();
    webhooks::emit_many(conn, Event::BalanceCredited, &items)
}
