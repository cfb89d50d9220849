//! Reading rewards with what their JSON names them by: the beneficiary's key and the
//! transaction's key.

use bigdecimal::BigDecimal;
use diesel::dsl::sum;
use diesel::prelude::*;

use crate::db::schema::{customers, rewards, transactions};
use crate::error::Error;

use super::{Reward, RewardStatus};

/// A reward with the keys that name its beneficiary and its transaction.
#[derive(Clone, Debug)]
pub struct RewardLine {
    pub reward: Reward,
    pub customer_key: String,
    pub transaction_key: Option<String>,
}

type Row = (Reward, String, Option<String>);

fn line((reward, customer_key, transaction_key): Row) -> RewardLine {
    RewardLine {
        reward,
        customer_key,
        transaction_key,
    }
}

/// The rewards of a customer as beneficiary, newest first, one page; and their count.
pub fn of_beneficiary(
    conn: &mut PgConnection,
    customer_id: i64,
    page: i64,
    per_page: i64,
) -> Result<(Vec<RewardLine>, i64), Error> {
    let rows: Vec<Row> = rewards::table
        .inner_join(customers::table.on(customers::id.eq(rewards::beneficiary_id)))
        .left_join(transactions::table.on(transactions::id.nullable().eq(rewards::transaction_id)))
        .filter(rewards::beneficiary_id.eq(customer_id))
        .order((rewards::created_at.desc(), rewards::id.desc()))
        .select((Reward::as_select(), customers::key, transactions::key.nullable()))
        .limit(per_page)
        .offset(page.saturating_sub(1).saturating_mul(per_page))
        .load(conn)?;
    let total = rewards::table
        .filter(rewards::beneficiary_id.eq(customer_id))
        .count()
        .get_result(conn)?;
    Ok((rows.into_iter().map(line).collect(), total))
}

/// The rewards one transaction fired, oldest first (its own statement: one with `IN` is
/// planned anew on every call, this one stays prepared).
pub fn of_transaction(conn: &mut PgConnection, transaction_id: i64) -> Result<Vec<RewardLine>, Error> {
    let rows: Vec<Row> = rewards::table
        .inner_join(customers::table.on(customers::id.eq(rewards::beneficiary_id)))
        .left_join(transactions::table.on(transactions::id.nullable().eq(rewards::transaction_id)))
        .filter(rewards::transaction_id.eq(transaction_id))
        .order(rewards::id)
        .select((Reward::as_select(), customers::key, transactions::key.nullable()))
        .load(conn)?;
    Ok(rows.into_iter().map(line).collect())
}

/// The given rewards as stored now, in id order.
pub fn of_ids(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<RewardLine>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Row> = rewards::table
        .inner_join(customers::table.on(customers::id.eq(rewards::beneficiary_id)))
        .left_join(transactions::table.on(transactions::id.nullable().eq(rewards::transaction_id)))
        .filter(rewards::id.eq_any(ids))
        .order(rewards::id)
        .select((Reward::as_select(), customers::key, transactions::key.nullable()))
        .load(conn)?;
    Ok(rows.into_iter().map(line).collect())
}

/// The rewards the given transactions fired, oldest first.
pub fn of_transactions(conn: &mut PgConnection, transaction_ids: &[i64]) -> Result<Vec<RewardLine>, Error> {
    if transaction_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Row> = rewards::table
        .inner_join(customers::table.on(customers::id.eq(rewards::beneficiary_id)))
        .left_join(transactions::table.on(transactions::id.nullable().eq(rewards::transaction_id)))
        .filter(rewards::transaction_id.eq_any(transaction_ids))
        .order(rewards::id)
        .select((Reward::as_select(), customers::key, transactions::key.nullable()))
        .load(conn)?;
    Ok(rows.into_iter().map(line).collect())
}

/// A customer's rewards summed per unit and status.
#[derive(Clone, Debug)]
pub struct RewardTotal {
    pub amount_units: String,
    pub is_currency: bool,
    pub status: RewardStatus,
    pub count: i64,
    pub amount: BigDecimal,
}

pub fn totals_of_beneficiary(conn: &mut PgConnection, customer_id: i64) -> Result<Vec<RewardTotal>, Error> {
    let rows: Vec<(String, bool, RewardStatus, i64, Option<BigDecimal>)> = rewards::table
        .filter(rewards::beneficiary_id.eq(customer_id))
        .group_by((rewards::amount_units, rewards::is_currency, rewards::status))
        .select((
            rewards::amount_units,
            rewards::is_currency,
            rewards::status,
            diesel::dsl::count_star(),
            sum(rewards::amount),
        ))
        .order((rewards::amount_units, rewards::is_currency, rewards::status))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(amount_units, is_currency, status, count, amount)| RewardTotal {
            amount_units,
            is_currency,
            status,
            count,
            amount: amount.unwrap_or_default(),
        })
        .collect())
}
