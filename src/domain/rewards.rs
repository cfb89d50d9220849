//! Rewards: reward rules turn referral events (a referred friend signs up, is approved, or
//! buys) into rewards for the referrer and/or the friend; rewards wait out a hold, are
//! approved or denied, and are credited into the balance ledger.
//!
//! Life of a reward: `pending` (in hold or waiting for approval) → `approved` → `credited`
//! (booked by `ledger::book` with the idempotency key `reward:<id>`, in the same database
//! transaction as the status change); or `denied` (reason and who); or `voided` (its
//! transaction was refunded or archived, or the friend deleted, before it was credited).
//! A rule fires at most once per (rule, beneficiary, event): the constraint
//! `rewards_once_per_event` guarantees it whatever code path tries.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::{reward_rules, rewards};
use crate::db::text_enum;

pub mod credit;
pub mod events;
pub mod figures;
pub mod queue;
pub mod reversal;
pub mod review;
pub mod rules;
pub mod settings;
pub mod view;

text_enum! {
    /// The event that fires a rule (`reward_rules.trigger`).
    pub enum Trigger {
        CustomerCreated = "customer_created",
        CustomerApproved = "customer_approved",
        Sale = "sale",
    }
}

text_enum! {
    /// Which of the friend's sales a sale rule rewards (`reward_rules.sale_scope`).
    pub enum SaleScope {
        First = "first",
        Every = "every",
        FirstN = "first_n",
    }
}

text_enum! {
    /// How a rule's amounts read (`reward_rules.amount_kind`).
    pub enum AmountKind {
        Fixed = "fixed",
        Percent = "percent",
    }
}

text_enum! {
    /// Where a reward stands (`rewards.status`).
    pub enum RewardStatus {
        Pending = "pending",
        Approved = "approved",
        Credited = "credited",
        Denied = "denied",
        Voided = "voided",
    }
}

text_enum! {
    /// Which side of the referral earns a reward (`rewards.role`).
    pub enum BeneficiaryRole {
        Referrer = "referrer",
        Friend = "friend",
    }
}

text_enum! {
    /// A credited reward whose transaction was refunded (`rewards.reversal`).
    pub enum Reversal {
        /// The balance could not cover the reversing debit; `reversal_owed` is what is left.
        Owed = "owed",
        Reversed = "reversed",
        WrittenOff = "written_off",
    }
}

/// Fraud signals that hold a reward for review whatever its rule says (`rewards.flags`).
pub mod flags {
    /// Referrer and friend share an email once normalised (case, `+tag`, Gmail dots).
    pub const SAME_EMAIL: &str = "same_email";
    /// The friend's email domain is a disposable-mail domain.
    pub const DISPOSABLE_EMAIL: &str = "disposable_email";
    /// The referrer gained more referrals in the last hour than the program allows.
    pub const REFERRAL_VELOCITY: &str = "referral_velocity";
}

/// A program's reward rule as stored.
#[derive(Clone, Debug, Queryable, Selectable, Serialize)]
#[diesel(table_name = reward_rules)]
pub struct RewardRule {
    pub id: i64,
    pub program_id: i64,
    pub name: String,
    pub trigger: Trigger,
    pub sale_scope: Option<SaleScope>,
    pub sale_count: Option<i32>,
    pub within_days: Option<i32>,
    pub min_sale_amount: Option<BigDecimal>,
    pub product_type: Option<String>,
    pub amount_kind: AmountKind,
    pub referrer_amount: Option<BigDecimal>,
    pub friend_amount: Option<BigDecimal>,
    pub amount_units: String,
    pub is_currency: bool,
    pub max_reward: Option<BigDecimal>,
    pub limit_per_referrer: Option<i32>,
    pub limit_per_referrer_month: Option<i32>,
    pub budget: Option<BigDecimal>,
    pub hold_days: i32,
    pub needs_approval: bool,
    pub enabled: bool,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One reward as stored.
#[derive(Clone, Debug, Queryable, Selectable, Serialize)]
#[diesel(table_name = rewards)]
pub struct Reward {
    pub id: i64,
    pub program_id: i64,
    pub rule_id: i64,
    /// The rule as it was when it fired (its fields as JSON).
    pub rule_snapshot: serde_json::Value,
    pub beneficiary_id: i64,
    pub role: BeneficiaryRole,
    pub referrer_id: i64,
    pub friend_id: i64,
    pub transaction_id: Option<i64>,
    /// `customer_created:<friend id>`, `customer_approved:<friend id>` or
    /// `transaction:<transaction id>`.
    pub event_key: String,
    pub amount: BigDecimal,
    pub amount_units: String,
    pub is_currency: bool,
    pub status: RewardStatus,
    pub hold_until: DateTime<Utc>,
    pub needs_approval: bool,
    pub flags: Vec<String>,
    pub credit_entry_id: Option<i64>,
    pub credited_at: Option<DateTime<Utc>>,
    pub decided_by_member_id: Option<i64>,
    pub decided_by_token_id: Option<i64>,
    pub decided_at: Option<DateTime<Utc>>,
    pub deny_reason: Option<String>,
    pub void_reason: Option<String>,
    pub reversal: Option<Reversal>,
    pub reversal_owed: Option<BigDecimal>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub mod engine;
pub mod fraud;
pub mod lookup;
pub mod voiding;
