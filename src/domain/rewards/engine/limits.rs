//! A rule's limits: rewarded events per referrer (in all and per calendar month) and the
//! rule's budget, checked under locks so that concurrent events cannot both pass.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use diesel::dsl::{count, sum};
use diesel::prelude::*;

use super::{Candidate, Context};
use crate::db::schema::{reward_rules, reward_tallies, rewards};
use crate::domain::ledger::format_amount;
use crate::domain::rewards::{RewardRule, RewardStatus};
use crate::error::Error;

/// The statuses of rewards that do not count against a rule's limits and budget.
const NOT_COUNTED: [RewardStatus; 2] = [RewardStatus::Denied, RewardStatus::Voided];

/// Rewards of a rule that count against its limits: all but denied and voided ones.
fn counting(rule_id: i64) -> rewards::BoxedQuery<'static, diesel::pg::Pg> {
    rewards::table
        .filter(rewards::rule_id.eq(rule_id))
        .filter(rewards::status.ne_all(NOT_COUNTED))
        .into_boxed()
}

/// The candidates the rule's limits leave, and why the others were dropped.
pub(super) fn within_limits(
    conn: &mut PgConnection,
    rule: &RewardRule,
    context: &Context<'_>,
    candidates: Vec<Candidate>,
) -> Result<(Vec<Candidate>, Vec<String>), Error> {
    let referrer_id = context.referrer.id;
    if rule.limit_per_referrer.is_some() || rule.limit_per_referrer_month.is_some() {
        lock_rule_referrer(conn, rule.id, referrer_id)?;
        // Limits count rewarded events (a rule paying both sides rewards one referral).
        let events = |query: rewards::BoxedQuery<'static, diesel::pg::Pg>, conn: &mut PgConnection| {
            query
                .filter(rewards::referrer_id.eq(referrer_id))
                .filter(rewards::event_key.ne(&context.event_key))
                .select(count(rewards::event_key).aggregate_distinct())
                .get_result::<i64>(conn)
        };
        if let Some(limit) = rule.limit_per_referrer {
            if events(counting(rule.id), conn)? >= i64::from(limit) {
                return Ok((
                    Vec::new(),
                    vec![format!(
                        "The referrer reached this rule's limit of {limit} rewards."
                    )],
                ));
            }
        }
        if let Some(limit) = rule.limit_per_referrer_month {
            let month = month_start(context.now);
            if events(counting(rule.id).filter(rewards::created_at.ge(month)), conn)? >= i64::from(limit) {
                return Ok((
                    Vec::new(),
                    vec![format!(
                        "The referrer reached this rule's limit of {limit} rewards this month."
                    )],
                ));
            }
        }
    }
    let Some(budget) = &rule.budget else {
        return Ok((candidates, Vec::new()));
    };
    // The rule's row lock serialises the budget checks of concurrent events; the running
    // total (`reward_tallies.amount`, kept by the rewards' triggers in each writer's
    // transaction) then holds every reward committed before, and a denial or void already
    // taken out. Only the sums over the tally's slots mean anything.
    reward_rules::table
        .find(rule.id)
        .select(reward_rules::id)
        .for_no_key_update()
        .first::<i64>(conn)?;
    let mut spent: BigDecimal = reward_tallies::table
        .filter(reward_tallies::program_id.eq(rule.program_id))
        .filter(reward_tallies::rule_id.eq(rule.id))
        .filter(reward_tallies::status.ne_all(NOT_COUNTED))
        .select(sum(reward_tallies::amount))
        .get_result::<Option<BigDecimal>>(conn)?
        .unwrap_or_default();
    let mut allowed = Vec::new();
    let mut reasons = Vec::new();
    for candidate in candidates {
        if &(&spent + &candidate.amount) > budget {
            reasons.push(format!(
                "The rule's budget of {} is spent; no reward for the {}.",
                format_amount(budget, rule.is_currency),
                candidate.role
            ));
        } else {
            spent += &candidate.amount;
            allowed.push(candidate);
        }
    }
    Ok((allowed, reasons))
}

/// The first instant of `now`'s calendar month, in UTC.
fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// Serialises the limit checks of one rule for one referrer until the transaction ends.
fn lock_rule_referrer(conn: &mut PgConnection, rule_id: i64, referrer_id: i64) -> Result<(), Error> {
    diesel::define_sql_function!(fn pg_advisory_xact_lock(key: diesel::sql_types::BigInt));
    // One 64-bit key from both ids; a collision only serialises two unrelated checks.
    let key = rule_id.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64) ^ referrer_id;
    diesel::select(pg_advisory_xact_lock(key)).execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_starts_on_its_first_day_at_midnight_utc() {
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 15, 4, 5).unwrap();
        assert_eq!(
            month_start(now),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
    }
}
