//! Reward rules and rewards written straight into the database, for the review queue's
//! tests: the engine that fires rules lives apart, and these tests start where a reward
//! exists.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use bigdecimal::BigDecimal;
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Numeric, Text, Timestamptz};
use referdesk::db::schema::{reward_rules, rewards};
use referdesk::domain::rewards::{BeneficiaryRole, RewardStatus};
use serde_json::json;

use crate::helpers::TestApp;
use crate::ledger::insert_customer;

/// Makes each inserted reward's event key unique.
static EVENTS: AtomicUsize = AtomicUsize::new(0);

/// A fixed-amount rule of the default program ("<name>", USD), returns its id.
pub fn insert_rule(app: &TestApp, name: &str) -> i64 {
    let program_id = app.default_program().id;
    diesel::insert_into(reward_rules::table)
        .values((
            reward_rules::program_id.eq(program_id),
            reward_rules::name.eq(name),
            reward_rules::trigger.eq("customer_created"),
            reward_rules::amount_kind.eq("fixed"),
            reward_rules::referrer_amount.eq(BigDecimal::from(10)),
            reward_rules::amount_units.eq("USD"),
            reward_rules::is_currency.eq(true),
        ))
        .returning(reward_rules::id)
        .get_result(&mut app.conn())
        .expect("rule inserted")
}

/// A referrer and a friend of the default program (customers `<prefix>-ref`,
/// `<prefix>-friend`); returns their ids.
pub fn insert_pair(app: &TestApp, prefix: &str) -> (i64, i64) {
    let referrer = insert_customer(app, &format!("{prefix}-ref"), &format!("{prefix} Referrer"));
    let friend = insert_customer(app, &format!("{prefix}-friend"), &format!("{prefix} Friend"));
    (referrer, friend)
}

/// One reward as a test wants it.
pub struct RewardSeed {
    pub amount: &'static str,
    pub status: RewardStatus,
    pub hold_until: DateTime<Utc>,
    pub needs_approval: bool,
    pub flags: Vec<&'static str>,
    pub created_at: DateTime<Utc>,
}

/// A pending USD reward, out of hold, waiting for approval.
pub fn pending(amount: &'static str) -> RewardSeed {
    RewardSeed {
        amount,
        status: RewardStatus::Pending,
        hold_until: Utc::now() - Duration::hours(1),
        needs_approval: true,
        flags: Vec::new(),
        created_at: Utc::now(),
    }
}

/// Inserts a reward of `rule` for the referrer of the pair; returns its id.
pub fn insert_reward(app: &TestApp, rule_id: i64, (referrer, friend): (i64, i64), seed: RewardSeed) -> i64 {
    let program_id = app.default_program().id;
    let event = EVENTS.fetch_add(1, Ordering::SeqCst);
    diesel::insert_into(rewards::table)
        .values((
            rewards::program_id.eq(program_id),
            rewards::rule_id.eq(rule_id),
            rewards::rule_snapshot.eq(rule_snapshot(app, rule_id)),
            rewards::beneficiary_id.eq(referrer),
            rewards::role.eq(BeneficiaryRole::Referrer),
            rewards::referrer_id.eq(referrer),
            rewards::friend_id.eq(friend),
            rewards::event_key.eq(format!("customer_created:{friend}:{event}")),
            rewards::amount.eq(BigDecimal::from_str(seed.amount).unwrap()),
            rewards::amount_units.eq("USD"),
            rewards::is_currency.eq(true),
            rewards::status.eq(seed.status),
            rewards::hold_until.eq(seed.hold_until),
            rewards::needs_approval.eq(seed.needs_approval),
            rewards::flags.eq(seed.flags.iter().map(|flag| flag.to_string()).collect::<Vec<_>>()),
            rewards::created_at.eq(seed.created_at),
        ))
        .returning(rewards::id)
        .get_result(&mut app.conn())
        .expect("reward inserted")
}

fn rule_snapshot(app: &TestApp, rule_id: i64) -> serde_json::Value {
    let name: String = reward_rules::table
        .find(rule_id)
        .select(reward_rules::name)
        .first(&mut app.conn())
        .expect("rule");
    json!({ "id": rule_id, "name": name, "version": 1 })
}

/// `count` pending rewards of `rule` for the referrer of the pair, set-based (one
/// statement), created a second apart from `first_created` on; returns how many.
#[allow(clippy::too_many_arguments)]
pub fn insert_many(
    app: &TestApp,
    rule_id: i64,
    (referrer, friend): (i64, i64),
    count: i32,
    amount: &str,
    hold_until: DateTime<Utc>,
    needs_approval: bool,
    first_created: DateTime<Utc>,
) -> usize {
    let program_id = app.default_program().id;
    diesel::sql_query(
        "INSERT INTO rewards (program_id, rule_id, rule_snapshot, beneficiary_id, role, referrer_id, \
         friend_id, event_key, amount, amount_units, is_currency, status, hold_until, needs_approval, created_at) \
         SELECT $1, $2, jsonb_build_object('id', $2, 'name', r.name, 'version', 1), $3, 'referrer', $3, $4, \
                'bulk:' || $4 || ':' || n, $5, 'USD', true, 'pending', $6, $7, \
                $8 + n * interval '1 second' \
         FROM generate_series(1, $9) AS n, reward_rules r WHERE r.id = $2",
    )
    .bind::<BigInt, _>(program_id)
    .bind::<BigInt, _>(rule_id)
    .bind::<BigInt, _>(referrer)
    .bind::<BigInt, _>(friend)
    .bind::<Numeric, _>(BigDecimal::from_str(amount).unwrap())
    .bind::<Timestamptz, _>(hold_until)
    .bind::<Bool, _>(needs_approval)
    .bind::<Timestamptz, _>(first_created)
    .bind::<Integer, _>(count)
    .execute(&mut app.conn())
    .expect("rewards inserted")
}

/// A reward's status and, once credited, its ledger entry.
pub fn status_of(app: &TestApp, id: i64) -> (RewardStatus, Option<i64>) {
    rewards::table
        .find(id)
        .select((rewards::status, rewards::credit_entry_id))
        .first(&mut app.conn())
        .expect("reward")
}

/// Marks a credited reward as owing `owed` after a refund, as the engine does when the
/// balance cannot cover the reversing debit.
pub fn owe(app: &TestApp, id: i64, owed: &str) {
    diesel::sql_query("UPDATE rewards SET reversal = 'owed', reversal_owed = $2::numeric WHERE id = $1")
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(owed)
        .execute(&mut app.conn())
        .expect("reversal owed");
}
