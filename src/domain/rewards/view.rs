//! The JSON of transactions (Partnero's `POST /v1/transactions` object) and of rewards
//! (`GET /v1/rewards`, the review actions, a transaction's rewards), built in the domain so
//! that the API's answers and the webhooks' `data` are one shape (`api::views` re-exports
//! them). Fields in alphabetical order, like every view.

use serde::Serialize;

use crate::domain::json::{amount, timestamp, Amount};
use crate::domain::transactions::{Action, Transaction, TransactionStatus};

use super::engine::Note;
use super::lookup::RewardLine;
use super::{BeneficiaryRole, Reversal, Reward, RewardStatus};

/// The rule a reward came from, as it was when it fired.
#[derive(Debug, Serialize)]
pub struct RewardRuleRef {
    id: i64,
    name: String,
}

/// A reward: who earns what, where it stands, why it is held.
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
    updated_at: String,
    void_reason: Option<String>,
}

/// A reward, its beneficiary's key and the key of the transaction that fired it.
pub fn reward(reward: &Reward, customer_key: &str, transaction_key: Option<&str>) -> RewardView {
    RewardView {
        amount: amount(&reward.amount),
        amount_units: reward.amount_units.clone(),
        created_at: timestamp(&reward.created_at),
        credited_at: reward.credited_at.as_ref().map(timestamp),
        customer: customer_key.to_string(),
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
            name: super::credit::rule_name(reward),
        },
        status: reward.status,
        transaction: transaction_key.map(str::to_string),
        updated_at: timestamp(&reward.updated_at),
        void_reason: reward.void_reason.clone(),
    }
}

/// [`reward`] for a reward read with its keys.
pub fn reward_line(line: &RewardLine) -> RewardView {
    reward(&line.reward, &line.customer_key, line.transaction_key.as_deref())
}

/// Why a rule created no reward for a transaction.
#[derive(Debug, Serialize)]
pub struct RewardNoteView {
    reason: String,
    rule: String,
    rule_id: i64,
}

/// A transaction with its customer and the rewards it fired. The API shows the customer
/// as `api::views::CustomerJson`; a webhook as `webhooks::customer_data`.
#[derive(Debug, Serialize)]
pub struct TransactionView<C> {
    action: Action,
    amount: Amount,
    amount_units: String,
    created_at: String,
    customer: C,
    key: String,
    product_id: Option<String>,
    product_type: Option<String>,
    reward_notes: Vec<RewardNoteView>,
    rewardable: bool,
    /// Whether a reward that still stands (not denied or voided) came of it.
    rewarded: bool,
    rewards: Vec<RewardView>,
    status: TransactionStatus,
    updated_at: String,
}

pub fn transaction<C: Serialize>(
    row: &Transaction,
    customer: C,
    rewards: &[RewardLine],
) -> TransactionView<C> {
    let notes: Vec<Note> = serde_json::from_value(row.reward_notes.clone()).unwrap_or_default();
    TransactionView {
        action: row.action,
        amount: amount(&row.amount),
        amount_units: row.amount_units.clone(),
        created_at: timestamp(&row.created_at),
        customer,
        key: row.key.clone(),
        product_id: row.product_id.clone(),
        product_type: row.product_type.clone(),
        reward_notes: notes
            .into_iter()
            .map(|note| RewardNoteView {
                reason: note.reason,
                rule: note.rule,
                rule_id: note.rule_id,
            })
            .collect(),
        rewardable: row.rewardable,
        rewarded: rewards
            .iter()
            .any(|line| !matches!(line.reward.status, RewardStatus::Denied | RewardStatus::Voided)),
        rewards: rewards.iter().map(reward_line).collect(),
        status: row.status,
        updated_at: timestamp(&row.updated_at),
    }
}
