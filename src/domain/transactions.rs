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
