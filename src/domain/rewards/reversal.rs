//! What admins do about a reversal owed: a credited reward whose transaction was refunded
//! when the beneficiary's balance could not cover the reversing debit (`reversal = 'owed'`,
//! `reversal_owed` the amount still owed). Nothing is lost silently: an admin either books
//! what the balance holds now, or writes the rest off; both leave an audit event.

use bigdecimal::{BigDecimal, Zero};
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::rewards;
use crate::domain::ledger::{self, format_amount, Kind, NewEntry};
use crate::domain::{audit, Actor};
use crate::error::Error;

use super::{Reversal, Reward};

/// Locks a reward of the program that owes a reversal.
fn lock_owed(conn: &mut PgConnection, program_id: i64, id: i64) -> Result<Reward, Error> {
    let reward: Reward = rewards::table
        .filter(rewards::program_id.eq(program_id))
        .filter(rewards::id.eq(id))
        .select(Reward::as_select())
        .for_update()
        .first(conn)?;
    if reward.reversal != Some(Reversal::Owed) {
        return Err(Error::invalid(
            "reward",
            format!("Reward #{} owes no reversal.", reward.id),
        ));
    }
    Ok(reward)
}

fn owed(reward: &Reward) -> BigDecimal {
    reward.reversal_owed.clone().unwrap_or_else(BigDecimal::zero)
}

/// Books a debit of what the beneficiary's balance holds, up to what is owed. The reward
/// stays `owed` with the rest, or becomes `reversed` when nothing is left.
pub fn collect(conn: &mut PgConnection, program_id: i64, actor: &Actor, id: i64) -> Result<Reward, Error> {
    conn.transaction(|conn| {
        let reward = lock_owed(conn, program_id, id)?;
        let owed = owed(&reward);
        let balance = ledger::balance_of(
            conn,
            reward.beneficiary_id,
            &reward.amount_units,
            reward.is_currency,
        )?;
        let take = if balance < owed { balance } else { owed.clone() };
        if take <= BigDecimal::zero() {
            return Err(Error::invalid(
                "reward",
                format!(
                    "The beneficiary's {} balance is empty: nothing to collect yet.",
                    reward.amount_units
                ),
            ));
        }
        // One key per step: what was owed before it only ever goes down.
        let key = format!(
            "reward-reversal:{}:{}",
            reward.id,
            format_amount(&owed, reward.is_currency)
        );
        let entry = NewEntry {
            kind: Kind::Debit,
            amount: take.clone(),
            units: reward.amount_units.clone(),
            is_currency: reward.is_currency,
            note: Some(format!("Reversal of reward #{} (refunded)", reward.id)),
            idempotency_key: Some(key),
        };
        let (booked, _) = ledger::book(conn, program_id, reward.beneficiary_id, actor, entry)?;
        let rest = &owed - &take;
        let (reversal, rest_owed) = if rest > BigDecimal::zero() {
            (Reversal::Owed, Some(rest))
        } else {
            (Reversal::Reversed, None)
        };
        settle(
            conn,
            actor,
            &reward,
            reversal,
            rest_owed,
            json!({
                "collected": format_amount(&take, reward.is_currency),
                "balance_transaction": booked.id,
            }),
        )
    })
}

/// Gives up what is still owed (admins only: the route and the handler check the role).
pub fn write_off(conn: &mut PgConnection, program_id: i64, actor: &Actor, id: i64) -> Result<Reward, Error> {
    conn.transaction(|conn| {
        let reward = lock_owed(conn, program_id, id)?;
        let owed = owed(&reward);
        settle(
            conn,
            actor,
            &reward,
            Reversal::WrittenOff,
            None,
            json!({
                "written_off": format_amount(&owed, reward.is_currency),
            }),
        )
    })
}

fn settle(
    conn: &mut PgConnection,
    actor: &Actor,
    reward: &Reward,
    reversal: Reversal,
    rest_owed: Option<BigDecimal>,
    details: serde_json::Value,
) -> Result<Reward, Error> {
    let updated: Reward = diesel::update(rewards::table.find(reward.id))
        .set((
            rewards::reversal.eq(reversal),
            rewards::reversal_owed.eq(&rest_owed),
            rewards::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Reward::as_returning())
        .get_result(conn)?;
    let mut after = json!({
        "reversal": reversal,
        "reversal_owed": rest_owed.as_ref().map(|rest| format_amount(rest, reward.is_currency)),
        "amount_units": reward.amount_units,
    });
    if let (Some(after), Some(details)) = (after.as_object_mut(), details.as_object()) {
        after.extend(details.clone());
    }
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(reward.program_id),
            action: match reversal {
                Reversal::WrittenOff => "reward.reversal_write_off",
                _ => "reward.reversal_collect",
            },
            subject_type: "reward",
            subject_id: Some(reward.id.to_string()),
            customer_id: Some(reward.beneficiary_id),
            before: Some(json!({
                "reversal": reward.reversal,
                "reversal_owed": format_amount(&owed(reward), reward.is_currency),
            })),
            after: Some(after),
        },
    )?;
    Ok(updated)
}
