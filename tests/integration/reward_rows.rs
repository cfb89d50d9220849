//! Transactions, rules and rewards written straight into the database for the pages that
//! show them (a fixture: the pages only read these rows, whoever books them).

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use referdesk::db::schema::{referral_clicks, referral_links, rewards, transactions};
use referdesk::domain::ledger::{self, Kind, NewEntry};
use referdesk::domain::rewards::rules::{self, RuleFields, RuleInput};
use referdesk::domain::rewards::RewardRule;
use referdesk::domain::Actor;
use std::str::FromStr;

use crate::helpers::TestApp;

/// A rule through the domain, as an admin would create it: a fixed referrer reward.
pub fn insert_rule(app: &TestApp, program_id: i64, name: &str, referrer_amount: &str) -> RewardRule {
    let fields = RuleFields {
        name: name.into(),
        referrer_amount: referrer_amount.into(),
        ..RuleFields::fresh()
    };
    let input = RuleInput::parse(&fields).expect("valid rule");
    rules::create(&mut app.conn(), &Actor::system(), program_id, input).expect("rule created")
}

pub struct Sale<'a> {
    pub key: &'a str,
    pub customer_id: i64,
    pub amount: &'a str,
    pub status: &'a str,
    pub created_at: DateTime<Utc>,
}

pub fn insert_transaction(app: &TestApp, program_id: i64, sale: Sale<'_>) -> i64 {
    let now = Utc::now();
    diesel::insert_into(transactions::table)
        .values((
            transactions::program_id.eq(program_id),
            transactions::customer_id.eq(sale.customer_id),
            transactions::key.eq(sale.key),
            transactions::amount.eq(BigDecimal::from_str(sale.amount).unwrap()),
            transactions::amount_units.eq("USD"),
            transactions::status.eq(sale.status),
            transactions::rewardable.eq(true),
            transactions::request_hash.eq("fixture"),
            transactions::archived_at.eq((sale.status == "archived").then_some(now)),
            transactions::deleted_at.eq((sale.status == "deleted").then_some(now)),
            transactions::created_at.eq(sale.created_at),
        ))
        .returning(transactions::id)
        .get_result(&mut app.conn())
        .unwrap()
}

/// Sets why rules created no reward for a transaction.
pub fn set_reward_notes(app: &TestApp, transaction_id: i64, notes: serde_json::Value) {
    diesel::update(transactions::table.find(transaction_id))
        .set(transactions::reward_notes.eq(notes))
        .execute(&mut app.conn())
        .unwrap();
}

pub struct Earned<'a> {
    pub rule: &'a RewardRule,
    pub referrer_id: i64,
    pub friend_id: i64,
    /// `referrer` or `friend`.
    pub role: &'a str,
    pub transaction_id: Option<i64>,
    pub amount: &'a str,
    pub units: &'a str,
    pub is_currency: bool,
    /// `pending`, `approved` or `credited` (credited rows get `credited_at` = `at`).
    pub status: &'a str,
    pub at: DateTime<Utc>,
}

/// A reward row. A credited one needs a ledger entry: one is booked for it directly.
pub fn insert_reward(app: &TestApp, reward: Earned<'_>) -> i64 {
    let mut conn = app.conn();
    let beneficiary = if reward.role == "referrer" {
        reward.referrer_id
    } else {
        reward.friend_id
    };
    let event = match reward.transaction_id {
        Some(id) => format!("transaction:{id}"),
        None => format!("customer_created:{}", reward.friend_id),
    };
    let amount = BigDecimal::from_str(reward.amount).unwrap();
    // A credited reward's entry, booked the way crediting books it (key `reward:<n>`).
    let credit_entry: Option<i64> = (reward.status == "credited").then(|| {
        let entry = NewEntry {
            kind: Kind::Credit,
            amount: amount.clone(),
            units: reward.units.to_string(),
            is_currency: reward.is_currency,
            note: None,
            idempotency_key: Some(format!("reward:{event}:{}", reward.role)),
        };
        ledger::book(
            &mut conn,
            reward.rule.program_id,
            beneficiary,
            &Actor::system(),
            entry,
        )
        .expect("credit booked")
        .0
        .id
    });
    diesel::insert_into(rewards::table)
        .values((
            rewards::program_id.eq(reward.rule.program_id),
            rewards::rule_id.eq(reward.rule.id),
            rewards::rule_snapshot.eq(serde_json::to_value(reward.rule).unwrap()),
            rewards::beneficiary_id.eq(beneficiary),
            rewards::role.eq(reward.role),
            rewards::referrer_id.eq(reward.referrer_id),
            rewards::friend_id.eq(reward.friend_id),
            rewards::transaction_id.eq(reward.transaction_id),
            rewards::event_key.eq(event),
            rewards::amount.eq(amount),
            rewards::amount_units.eq(reward.units),
            rewards::is_currency.eq(reward.is_currency),
            rewards::status.eq(reward.status),
            rewards::hold_until.eq(reward.at),
            rewards::needs_approval.eq(true),
            rewards::credit_entry_id.eq(credit_entry),
            rewards::credited_at.eq(credit_entry.map(|_| reward.at)),
            rewards::created_at.eq(reward.at),
        ))
        .returning(rewards::id)
        .get_result(&mut conn)
        .unwrap()
}

/// `count` clicks on the customer's first link at `at`.
pub fn insert_clicks(app: &TestApp, program_id: i64, customer_id: i64, count: usize, at: DateTime<Utc>) {
    let mut conn = app.conn();
    let link_id: i64 = match referral_links::table
        .filter(referral_links::customer_id.eq(customer_id))
        .select(referral_links::id)
        .first(&mut conn)
        .optional()
        .unwrap()
    {
        Some(id) => id,
        None => diesel::insert_into(referral_links::table)
            .values((
                referral_links::program_id.eq(program_id),
                referral_links::customer_id.eq(customer_id),
                referral_links::code.eq(format!("code{customer_id}")),
            ))
            .returning(referral_links::id)
            .get_result(&mut conn)
            .unwrap(),
    };
    let rows: Vec<_> = (0..count)
        .map(|_| {
            (
                referral_clicks::link_id.eq(link_id),
                referral_clicks::created_at.eq(at),
            )
        })
        .collect();
    diesel::insert_into(referral_clicks::table)
        .values(rows)
        .execute(&mut conn)
        .unwrap();
}
