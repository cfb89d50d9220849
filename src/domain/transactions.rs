//! Transactions: purchases (and other rewardable actions) the program's backend reports,
//! `POST /v1/transactions` in Partnero's API. A transaction of a referred customer is what
//! sale-triggered reward rules look at (`domain::rewards`).
//!
//! A transaction's `key` books at most once per program: the same request again answers the
//! existing row; another body under the same key is refused. A refund (`DELETE`) marks it
//! `deleted`, archiving stops it counting; both void or reverse the rewards it fired.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::transactions;
use crate::db::text_enum;
use crate::error::Error;

mod booking;
mod input;
mod lifecycle;

pub use booking::{book, Booked};
pub use input::{parse_amount, CustomerRef, NewTransaction, TransactionInput, DEFAULT_UNITS, MAX_AMOUNT};
pub use lifecycle::{archive, refund, revoke_archive};

pub mod browse;

text_enum! {
    /// Where a transaction stands (`transactions.status`).
    pub enum TransactionStatus {
        Active = "active",
        Archived = "archived",
        Deleted = "deleted",
    }
}

text_enum! {
    /// What the customer did (`transactions.action`); every action counts as a sale for
    /// reward rules.
    pub enum Action {
        Sale = "sale",
        Subscription = "subscription",
        Renewal = "renewal",
        Upgrade = "upgrade",
    }
}

/// One stored transaction.
#[derive(Clone, Debug, Queryable, Selectable, Serialize)]
#[diesel(table_name = transactions)]
pub struct Transaction {
    pub id: i64,
    pub program_id: i64,
    pub customer_id: i64,
    pub key: String,
    pub amount: BigDecimal,
    pub amount_units: String,
    pub action: Action,
    pub status: TransactionStatus,
    pub product_id: Option<String>,
    pub product_type: Option<String>,
    /// The customer had a referrer when it was booked.
    pub rewardable: bool,
    /// Why rules that looked at it created no reward: `[{"rule_id", "rule", "reason"}]`.
    pub reward_notes: serde_json::Value,
    /// SHA-256 of the request as booked, to tell a retry from a different body.
    pub request_hash: String,
    pub actor_member_id: Option<i64>,
    pub actor_token_id: Option<i64>,
    pub archived_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A key no transaction can have (control characters, too long) finds nothing.
fn check_key_shape(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.chars().count() > input::MAX_TEXT_CHARS || crate::domain::has_control_chars(key)
    {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// The transaction of a program with `key`.
pub fn find_by_key(conn: &mut PgConnection, program_id: i64, key: &str) -> Result<Transaction, Error> {
    check_key_shape(key)?;
    Ok(transactions::table
        .filter(transactions::program_id.eq(program_id))
        .filter(transactions::key.eq(key))
        .select(Transaction::as_select())
        .first(conn)?)
}

/// A program's transactions, newest first, one page; and how many there are. `customer_id`
/// narrows them to one customer's.
pub fn list(
    conn: &mut PgConnection,
    program_id: i64,
    customer_id: Option<i64>,
    page: i64,
    per_page: i64,
) -> Result<(Vec<Transaction>, i64), Error> {
    let filtered = || {
        let mut query = transactions::table
            .filter(transactions::program_id.eq(program_id))
            .into_boxed();
        if let Some(customer_id) = customer_id {
            query = query.filter(transactions::customer_id.eq(customer_id));
        }
        query
    };
    let rows = filtered()
        .order((transactions::created_at.desc(), transactions::id.desc()))
        .select(Transaction::as_select())
        .limit(per_page)
        .offset(page.saturating_sub(1).saturating_mul(per_page))
        .load(conn)?;
    let total = filtered().count().get_result(conn)?;
    Ok((rows, total))
}

/// A customer's sales that count (active transactions) per unit: (units, count, amount).
pub fn sales_of(conn: &mut PgConnection, customer_id: i64) -> Result<Vec<(String, i64, BigDecimal)>, Error> {
    let rows: Vec<(String, i64, Option<BigDecimal>)> = transactions::table
        .filter(transactions::customer_id.eq(customer_id))
        .filter(transactions::status.eq(TransactionStatus::Active))
        .group_by(transactions::amount_units)
        .select((
            transactions::amount_units,
            diesel::dsl::count_star(),
            diesel::dsl::sum(transactions::amount),
        ))
        .order(transactions::amount_units)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(units, count, amount)| (units, count, amount.unwrap_or_default()))
        .collect())
}
