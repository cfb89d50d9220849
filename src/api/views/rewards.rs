//! The JSON shape of a reward (`GET /v1/rewards`, the review actions).

use serde::Serialize;

use crate::domain::rewards::credit::rule_name;
use crate::domain::rewards::queue::QueueRow;
use crate::domain::rewards::{BeneficiaryRole, Reversal, RewardStatus};

use super::{amount, timestamp, Amount};

/// The rule a reward came from, as it was when it fired.
#[derive(Debug, Serialize)]
pub struct RewardRuleRef {
    id: i64,
    name: String,
}

/// A reward. Fields in alphabetical order, as the wire format has them.
#[derive(Debug, Serialize)]
pub struct RewardView {
    amount: Amount,
    amount_units: String,
    created_at: String,
    credited_at: Option<String>,
    /// The beneficiary's key.
    customer: String,
    decided_at: Option<String>,
    deny_reason: Option<String>,
    flags: Vec<String>,
    hold_until: String,
    id: i64,
    is_currency: bool,
    needs_approval: bool,
    reversal: Option<Reversal>,
    reversal_owed: Option<Amount>,
    role: BeneficiaryRole,
    rule: RewardRuleRef,
    status: RewardStatus,
    /// The key of the transaction that fired it, if a sale did.
    transaction: Option<String>,
    void_reason: Option<String>,
}

pub fn reward(row: &QueueRow) -> RewardView {
    let reward = &row.reward;
    RewardView {
        amount: amount(&reward.amount),
        amount_units: reward.amount_units.clone(),
        created_at: timestamp(&reward.created_at),
        credited_at: reward.credited_at.as_ref().map(timestamp),
        customer: row.beneficiary_key.clone(),
        decided_at: reward.decided_at.as_ref().map(timestamp),
        deny_reason: reward.deny_reason.clone(),
        flags: reward.flags.clone(),
        hold_until: timestamp(&reward.hold_until),
        id: reward.id,
        is_currency: reward.is_currency,
        needs_approval: reward.needs_approval,
        reversal: reward.reversal,
        reversal_owed: reward.reversal_owed.as_ref().map(amount),
        role: reward.role,
        rule: RewardRuleRef {
            id: reward.rule_id,
            name: rule_name(reward),
        },
        status: reward.status,
        transaction: row.transaction_key.clone(),
        void_reason: reward.void_reason.clone(),
    }
}
