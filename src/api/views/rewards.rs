//! The JSON of rewards and transactions: the objects live in `domain::rewards::view` (the
//! webhooks carry them too); the per-customer totals here.
//! Fields in alphabetical order, like every view (see `views`).

use bigdecimal::BigDecimal;
use serde::Serialize;

use crate::domain::rewards::lookup::RewardTotal;
use crate::domain::rewards::RewardStatus;

use super::{amount, Amount, CustomerJson};

pub use crate::domain::rewards::view::{reward, reward_line, transaction, RewardView};

/// A transaction as the API shows it, with the customer's full JSON.
pub type TransactionView = crate::domain::rewards::view::TransactionView<CustomerJson>;

/// A customer's counted sales in one unit.
#[derive(Debug, Serialize)]
pub struct SalesView {
    amount: Amount,
    amount_units: String,
    count: i64,
}

pub fn sales(rows: &[(String, i64, BigDecimal)]) -> Vec<SalesView> {
    rows.iter()
        .map(|(units, count, total)| SalesView {
            amount: amount(total),
            amount_units: units.clone(),
            count: *count,
        })
        .collect()
}

/// A customer's rewards in one unit and status.
#[derive(Debug, Serialize)]
pub struct RewardTotalView {
    amount: Amount,
    amount_units: String,
    count: i64,
    is_currency: bool,
    status: RewardStatus,
}

pub fn reward_totals(rows: &[RewardTotal]) -> Vec<RewardTotalView> {
    rows.iter()
        .map(|row| RewardTotalView {
            amount: amount(&row.amount),
            amount_units: row.amount_units.clone(),
            count: row.count,
            is_currency: row.is_currency,
            status: row.status,
        })
        .collect()
}
