//! Taking rewards back: a refunded or archived transaction, a deleted friend.
//!
//! Unpaid rewards (`pending`, `approved`) are voided with a reason. A credited reward of a
//! refunded transaction gets a reversing debit through the ledger (idempotency key
//! `reward-reversal:<id>`) when the beneficiary's balance covers it; when it does not, the
//! reward is marked `reversal = 'owed'` with the whole amount owed, for an admin to book
//! what the balance holds later or write it off. Nothing is taken below zero.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::db::schema::rewards;
use crate::domain::ledger::{self, Kind, NewEntry};
use crate::domain::webhooks::Event;
use crate::domain::Actor;
use crate::error::Error;

use super::{events, Reversal, Reward, RewardStatus};

pub use super::engine::VOID_ARCHIVED;

pub const VOID_REFUNDED: &str = "The transaction was refunded.";
pub const VOID_FRIEND_DELETED: &str = "The referred customer was deleted.";

const UNPAID: [RewardStatus; 2] = [RewardStatus::Pending, RewardStatus::Approved];

/// Voids the unpaid rewards of a transaction; returns how many.
pub fn void_unpaid_of_transaction(
    conn: &mut PgConnection,
    transaction_id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let voided: Vec<(i64, i64)> = diesel::update(
        rewards::table
            .filter(rewards::transaction_id.eq(transaction_id))
            .filter(rewards::status.eq_any(UNPAID)),
    )
    .set((
        rewards::status.eq(RewardStatus::Voided),
        rewards::void_reason.eq(reason),
        rewards::updated_at.eq(now),
    ))
    .returning((rewards::program_id, rewards::id))
    .get_results(conn)?;
    events::announce_ids(conn, Event::RewardVoided, voided.iter().copied())?;
    Ok(voided.len())
}

/// Voids the unpaid rewards a referred friend brought (as friend or for their referrer).
pub fn void_unpaid_of_friend(
    conn: &mut PgConnection,
    friend_id: i64,
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let voided: Vec<(i64, i64)> = diesel::update(
        rewards::table
            .filter(rewards::friend_id.eq(friend_id))
            .filter(rewards::status.eq_any(UNPAID)),
    )
    .set((
        rewards::status.eq(RewardStatus::Voided),
        rewards::void_reason.eq(VOID_FRIEND_DELETED),
        rewards::updated_at.eq(now),
    ))
    .returning((rewards::program_id, rewards::id))
    .get_results(conn)?;
    events::announce_ids(conn, Event::RewardVoided, voided.iter().copied())?;
    Ok(voided.len())
}

/// Reverses the credited rewards of a refunded transaction (see the module documentation).
pub fn reverse_credited_of_transaction(
    conn: &mut PgConnection,
    actor: &Actor,
    transaction_id: i64,
    now: DateTime<Utc>,
) -> Result<Vec<Reward>, Error> {
    let credited: Vec<Reward> = rewards::table
        .filter(rewards::transaction_id.eq(transaction_id))
        .filter(rewards::status.eq(RewardStatus::Credited))
        .filter(rewards::reversal.is_null())
        .order(rewards::id)
        .select(Reward::as_select())
        .for_update()
        .load(conn)?;
    credited
        .into_iter()
        .map(|reward| reverse(conn, actor, reward, now))
        .collect()
}

fn reverse(
    conn: &mut PgConnection,
    actor: &Actor,
    reward: Reward,
    now: DateTime<Utc>,
) -> Result<Reward, Error> {
    let entry = NewEntry {
        kind: Kind::Debit,
        amount: reward.amount.clone(),
        units: reward.amount_units.clone(),
        is_currency: reward.is_currency,
        note: Some(format!(
            "Reversal of reward #{}: its transaction was refunded.",
            reward.id
        )),
        idempotency_key: Some(format!("reward-reversal:{}", reward.id)),
    };
    // `book` locks the customer and refuses a debit the balance cannot cover (in its own
    // savepoint, so a refusal leaves this transaction usable).
    let (reversal, owed) = match ledger::book(conn, reward.program_id, reward.beneficiary_id, actor, entry) {
        Ok(_) => (Reversal::Reversed, None),
        Err(Error::Invalid { .. }) => (Reversal::Owed, Some(reward.amount.clone())),
        Err(other) => return Err(other),
    };
    Ok(diesel::update(rewards::table.find(reward.id))
        .set((
            rewards::reversal.eq(reversal),
            rewards::reversal_owed.eq(owed),
            rewards::updated_at.eq(now),
        ))
        .returning(Reward::as_returning())
        .get_result(conn)?)
}
