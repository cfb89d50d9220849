//! Crediting rewards into the balance ledger, and the hold release that does it when a
//! reward falls due.
//!
//! A credit is `ledger::book` with the idempotency key `reward:<id>`, the status change to
//! `credited` and its audit event, all in the caller's database transaction with the
//! reward row locked: a reward is booked once whoever (a reviewer, several release
//! processes) gets to it first.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt};
use serde_json::json;

use crate::db::schema::{customers, rewards};
use crate::domain::customers::CustomerStatus;
use crate::domain::ledger::{self, Kind, NewCredit, NewEntry};
use crate::domain::webhooks::Event;
use crate::domain::{audit, Actor};
use crate::error::Error;

use super::{events, Reward, RewardStatus};

/// Rewards claimed per database transaction by [`release_due`].
pub const RELEASE_BATCH: i64 = 500;

/// Why a reward was voided when its beneficiary was deleted before it fell due.
const BENEFICIARY_DELETED: &str = "The beneficiary was deleted before the reward was credited.";

/// The name of the rule a reward came from, as it was when it fired.
pub fn rule_name(reward: &Reward) -> String {
    reward
        .rule_snapshot
        .get("name")
        .and_then(|name| name.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("rule #{}", reward.rule_id))
}

/// Books `reward` (its row locked by the caller, inside a transaction) and marks it
/// credited. Returns the reward as stored now.
pub(super) fn credit_locked(
    conn: &mut PgConnection,
    reward: &Reward,
    actor: &Actor,
) -> Result<Reward, Error> {
    let (booked, _) = ledger::book(
        conn,
        reward.program_id,
        reward.beneficiary_id,
        actor,
        entry_of(reward),
    )?;
    let credited: Reward = diesel::update(rewards::table.find(reward.id))
        .set((
            rewards::status.eq(RewardStatus::Credited),
            rewards::credit_entry_id.eq(booked.id),
            rewards::credited_at.eq(diesel::dsl::now),
            rewards::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Reward::as_returning())
        .get_result(conn)?;
    audit::record(conn, actor, credited_change(reward, booked.id))?;
    events::announce(conn, Event::RewardPaid, std::slice::from_ref(&credited))?;
    Ok(credited)
}

/// The ledger entry that credits `reward`.
fn entry_of(reward: &Reward) -> NewEntry {
    NewEntry {
        kind: Kind::Credit,
        amount: reward.amount.clone(),
        units: reward.amount_units.clone(),
        is_currency: reward.is_currency,
        note: Some(format!("Reward #{} ({})", reward.id, rule_name(reward))),
        idempotency_key: Some(format!("reward:{}", reward.id)),
    }
}

/// The audit event of `reward` (as it was before) credited by the ledger entry `entry_id`.
fn credited_change(reward: &Reward, entry_id: i64) -> audit::Change<'static> {
    audit::Change {
        program_id: Some(reward.program_id),
        action: "reward.credit",
        subject_type: "reward",
        subject_id: Some(reward.id.to_string()),
        customer_id: Some(reward.beneficiary_id),
        before: Some(json!({ "status": reward.status })),
        after: Some(json!({
            "status": RewardStatus::Credited,
            "amount": ledger::format_amount(&reward.amount, reward.is_currency),
            "amount_units": reward.amount_units,
            "balance_transaction": entry_id,
        })),
    }
}

/// [`credit_locked`] for many rewards (their rows locked by the caller) in a handful of
/// statements: the credits through `ledger::book_credits`, the status changes and their
/// audit events set-based.
pub(super) fn credit_many(conn: &mut PgConnection, due: &[Reward], actor: &Actor) -> Result<usize, Error> {
    if due.is_empty() {
        return Ok(0);
    }
    let credits: Vec<NewCredit> = due
        .iter()
        .map(|reward| NewCredit {
            program_id: reward.program_id,
            customer_id: reward.beneficiary_id,
            entry: entry_of(reward),
        })
        .collect();
    let booked = ledger::book_credits(conn, actor, &credits)?;
    let by_key: std::collections::HashMap<&str, i64> = booked
        .iter()
        .filter_map(|entry| entry.idempotency_key.as_deref().map(|key| (key, entry.id)))
        .collect();
    let entry_of_key = |key: &str| by_key.get(key).copied();
    let mut reward_ids = Vec::with_capacity(due.len());
    let mut entry_ids = Vec::with_capacity(due.len());
    for reward in due {
        let entry = entry_of_key(&format!("reward:{}", reward.id))
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("reward {} was not booked", reward.id)))?;
        reward_ids.push(reward.id);
        entry_ids.push(entry);
    }
    diesel::sql_query(
        "UPDATE rewards SET status = 'credited', credit_entry_id = m.entry, credited_at = now(), \
         updated_at = now() FROM unnest($1, $2) AS m(reward, entry) WHERE rewards.id = m.reward",
    )
    .bind::<Array<BigInt>, _>(&reward_ids)
    .bind::<Array<BigInt>, _>(&entry_ids)
    .execute(conn)?;
    let changes = due
        .iter()
        .zip(&entry_ids)
        .map(|(reward, entry)| credited_change(reward, *entry))
        .collect();
    audit::record_many(conn, actor, changes)?;
    events::announce(conn, Event::RewardPaid, due)?;
    Ok(due.len())
}

/// Voids a reward that can no longer be credited (its row locked by the caller).
fn void_locked(conn: &mut PgConnection, reward: &Reward, actor: &Actor, reason: &str) -> Result<(), Error> {
    diesel::update(rewards::table.find(reward.id))
        .set((
            rewards::status.eq(RewardStatus::Voided),
            rewards::void_reason.eq(reason),
            rewards::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(reward.program_id),
            action: "reward.void",
            subject_type: "reward",
            subject_id: Some(reward.id.to_string()),
            customer_id: Some(reward.beneficiary_id),
            before: Some(json!({ "status": reward.status })),
            after: Some(json!({ "status": RewardStatus::Voided, "void_reason": reason })),
        },
    )?;
    events::announce(conn, Event::RewardVoided, std::slice::from_ref(reward))
}

/// What one [`release_due`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    pub credited: usize,
    /// Due rewards whose beneficiary was deleted meanwhile.
    pub voided: usize,
}

/// Credits every reward due at `now`: approved ones whose hold is over, and pending ones
/// that need no manual approval. Pending rewards that need a reviewer stay pending (the
/// queue shows them as ready for review).
///
/// Batches of [`RELEASE_BATCH`] are claimed with `FOR UPDATE SKIP LOCKED`, so several
/// server processes share the work and each reward is credited exactly once. `now` is a
/// parameter so that tests can release the future without waiting.
pub fn release_due(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<Released, Error> {
    let mut total = Released::default();
    loop {
        let (claimed, released) = conn.transaction(|conn| release_batch(conn, now, RELEASE_BATCH))?;
        total.credited += released.credited;
        total.voided += released.voided;
        if claimed < RELEASE_BATCH as usize {
            return Ok(total);
        }
    }
}

/// When the next hold of a reward that [`release_due`] would credit ends (along
/// `rewards_release_idx`; it may be over already, for a reward another process holds).
pub fn next_due(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(rewards::table
        .filter(
            rewards::status.eq(RewardStatus::Approved).or(rewards::status
                .eq(RewardStatus::Pending)
                .and(rewards::needs_approval.eq(false))),
        )
        .select(diesel::dsl::min(rewards::hold_until))
        .first(conn)?)
}

fn release_batch(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<(usize, Released), Error> {
    let mut due: Vec<Reward> = rewards::table
        .filter(rewards::hold_until.le(now))
        .filter(
            rewards::status.eq(RewardStatus::Approved).or(rewards::status
                .eq(RewardStatus::Pending)
                .and(rewards::needs_approval.eq(false))),
        )
        .order((rewards::hold_until.asc(), rewards::id.asc()))
        .limit(limit)
        .select(Reward::as_select())
        .for_update()
        .skip_locked()
        .load(conn)?;
    // Crediting locks each beneficiary; taking them in one order everywhere keeps two
    // releasing processes from waiting on each other.
    due.sort_by_key(|reward| (reward.beneficiary_id, reward.id));
    let deleted: Vec<i64> = customers::table
        .filter(customers::id.eq_any(due.iter().map(|reward| reward.beneficiary_id)))
        .filter(customers::status.eq(CustomerStatus::Deleted))
        .select(customers::id)
        .load(conn)?;
    let actor = Actor::system();
    let (gone, live): (Vec<Reward>, Vec<Reward>) = due
        .iter()
        .cloned()
        .partition(|reward| deleted.contains(&reward.beneficiary_id));
    for reward in &gone {
        void_locked(conn, reward, &actor, BENEFICIARY_DELETED)?;
    }
    let released = Released {
        credited: credit_many(conn, &live, &actor)?,
        voided: gone.len(),
    };
    Ok((due.len(), released))
}

/// The sum of `amounts` per unit, in the order the units first appear.
pub fn totals_per_unit<'a>(
    amounts: impl IntoIterator<Item = (&'a BigDecimal, &'a str, bool)>,
) -> Vec<(String, bool, BigDecimal)> {
    let mut totals: Vec<(String, bool, BigDecimal)> = Vec::new();
    for (amount, units, is_currency) in amounts {
        match totals
            .iter_mut()
            .find(|(known, currency, _)| known == units && *currency == is_currency)
        {
            Some((_, _, sum)) => *sum += amount,
            None => totals.push((units.to_string(), is_currency, amount.clone())),
        }
    }
    totals
}
