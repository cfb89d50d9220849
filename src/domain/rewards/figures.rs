//! What staff see of rewards outside the review queue: a customer's rewards (as referrer
//! and as friend), the program's totals per status and unit, and the referral funnel over
//! a date range.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::dsl::sum;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz};

use super::{BeneficiaryRole, RewardStatus};
use crate::db::schema::{customers, reward_rules, rewards, transactions};
use crate::domain::ledger::format_amount;
use crate::error::Error;

/// A reward on the customer page.
#[derive(Clone, Debug)]
pub struct EarnedReward {
    pub id: i64,
    pub role: BeneficiaryRole,
    pub status: RewardStatus,
    pub amount: BigDecimal,
    pub amount_units: String,
    pub is_currency: bool,
    pub rule_name: String,
    /// The other side of the referral: the friend for a referrer's reward, else the referrer.
    pub other_key: String,
    pub transaction_key: Option<String>,
    pub hold_until: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl EarnedReward {
    pub fn amount_display(&self) -> String {
        format!(
            "{} {}",
            format_amount(&self.amount, self.is_currency),
            self.amount_units
        )
    }
}

/// A reward row as [`earned_by`] reads it: the reward, its rule's name, the other side's
/// key and the transaction's key.
#[derive(Queryable)]
struct Found {
    id: i64,
    status: RewardStatus,
    amount: BigDecimal,
    amount_units: String,
    is_currency: bool,
    rule_name: String,
    hold_until: DateTime<Utc>,
    created_at: DateTime<Utc>,
    other_key: Option<String>,
    transaction_key: Option<String>,
}

/// The customer page's reward counts stop here (a top referrer may have earned tens of
/// thousands); beyond, the page says "more than".
pub const EARNED_COUNT_CAP: i64 = 1_000;

/// The customer's latest rewards earned in `role`, newest first, and how many in all, up
/// to [`EARNED_COUNT_CAP`] + 1. One statement for a customer with fewer rewards than
/// `limit` (nearly all of them): the rows are the count; a second one counts past a full
/// page.
pub fn earned_by(
    conn: &mut PgConnection,
    customer_id: i64,
    role: BeneficiaryRole,
    limit: i64,
) -> Result<(Vec<EarnedReward>, i64), Error> {
    let limit = limit.clamp(1, 250);
    // The other side of the referral: the friend for a referrer's reward, else the
    // referrer. The two joins are two statement shapes, hence the macro.
    macro_rules! latest {
        ($other:expr) => {
            rewards::table
                .inner_join(reward_rules::table.on(reward_rules::id.eq(rewards::rule_id)))
                .left_join(customers::table.on(customers::id.eq($other)))
                .left_join(transactions::table.on(transactions::id.nullable().eq(rewards::transaction_id)))
                .filter(rewards::beneficiary_id.eq(customer_id))
                .filter(rewards::role.eq(role))
                .order((rewards::created_at.desc(), rewards::id.desc()))
                .limit(limit)
                .select((
                    rewards::id,
                    rewards::status,
                    rewards::amount,
                    rewards::amount_units,
                    rewards::is_currency,
                    reward_rules::name,
                    rewards::hold_until,
                    rewards::created_at,
                    customers::key.nullable(),
                    transactions::key.nullable(),
                ))
                .load::<Found>(conn)?
        };
    }
    let found: Vec<Found> = match role {
        BeneficiaryRole::Referrer => latest!(rewards::friend_id),
        BeneficiaryRole::Friend => latest!(rewards::referrer_id),
    };
    let total = if (found.len() as i64) < limit {
        found.len() as i64
    } else {
        rewards::table
            .filter(rewards::beneficiary_id.eq(customer_id))
            .filter(rewards::role.eq(role))
            .select(rewards::id)
            .limit(EARNED_COUNT_CAP + 1)
            .load::<i64>(conn)?
            .len() as i64
    };
    let rows = found
        .into_iter()
        .map(|row| EarnedReward {
            other_key: row.other_key.unwrap_or_default(),
            transaction_key: row.transaction_key,
            id: row.id,
            role,
            status: row.status,
            amount: row.amount,
            amount_units: row.amount_units,
            is_currency: row.is_currency,
            rule_name: row.rule_name,
            hold_until: row.hold_until,
            created_at: row.created_at,
        })
        .collect();
    Ok((rows, total))
}

/// The sum of a program's rewards in one status and unit.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusTotal {
    pub status: RewardStatus,
    pub amount: BigDecimal,
    pub amount_units: String,
    pub is_currency: bool,
    pub count: i64,
}

impl StatusTotal {
    pub fn amount_display(&self) -> String {
        format!(
            "{} {}",
            format_amount(&self.amount, self.is_currency),
            self.amount_units
        )
    }
}

/// Pending, approved and credited rewards of the program: count and sum per unit,
/// currencies first.
pub fn status_totals(conn: &mut PgConnection, program_id: i64) -> Result<Vec<StatusTotal>, Error> {
    let shown = [
        RewardStatus::Pending,
        RewardStatus::Approved,
        RewardStatus::Credited,
    ];
    let rows: Vec<(RewardStatus, String, bool, Option<BigDecimal>, i64)> = rewards::table
        .filter(rewards::program_id.eq(program_id))
        .filter(rewards::status.eq_any(shown))
        .group_by((rewards::status, rewards::amount_units, rewards::is_currency))
        .select((
            rewards::status,
            rewards::amount_units,
            rewards::is_currency,
            sum(rewards::amount),
            diesel::dsl::count_star(),
        ))
        .load(conn)?;
    let mut totals: Vec<StatusTotal> = rows
        .into_iter()
        .map(|(status, amount_units, is_currency, amount, count)| StatusTotal {
            status,
            amount: amount.unwrap_or_default(),
            amount_units,
            is_currency,
            count,
        })
        .collect();
    let rank = |status: RewardStatus| shown.iter().position(|s| *s == status).unwrap_or(shown.len());
    totals.sort_by(|a, b| {
        (rank(a.status), !a.is_currency, &a.amount_units).cmp(&(
            rank(b.status),
            !b.is_currency,
            &b.amount_units,
        ))
    });
    Ok(totals)
}

/// The referral funnel over `[from, until)`.
#[derive(Clone, Debug, PartialEq, Eq, QueryableByName)]
pub struct Funnel {
    /// Clicks on the program's referral links in the range.
    #[diesel(sql_type = BigInt)]
    pub clicks: i64,
    /// Referred customers who signed up in the range.
    #[diesel(sql_type = BigInt)]
    pub signups: i64,
    /// Of those, how many made a sale (not refunded or archived) by the end of the range.
    #[diesel(sql_type = BigInt)]
    pub with_sale: i64,
    /// Rewards credited in the range.
    #[diesel(sql_type = BigInt)]
    pub credited: i64,
}

/// Counts each step of the funnel in one round trip (SQL text with bound parameters: the
/// correlated `EXISTS` is beyond the query builder). Each sub-select reads an index on its
/// table's time column (for clicks and credited rewards: `referral_clicks_created_idx`,
/// `rewards_credited_idx`).
pub fn funnel(
    conn: &mut PgConnection,
    program_id: i64,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Funnel, Error> {
    Ok(diesel::sql_query(
        "SELECT \
           (SELECT count(*) FROM referral_clicks c JOIN referral_links l ON l.id = c.link_id \
             WHERE l.program_id = $1 AND c.created_at >= $2 AND c.created_at < $3) AS clicks, \
           (SELECT count(*) FROM customers \
             WHERE program_id = $1 AND status = 'active' AND referrer_id IS NOT NULL \
               AND created_at >= $2 AND created_at < $3) AS signups, \
           (SELECT count(*) FROM customers f \
             WHERE f.program_id = $1 AND f.status = 'active' AND f.referrer_id IS NOT NULL \
               AND f.created_at >= $2 AND f.created_at < $3 \
               AND EXISTS (SELECT 1 FROM transactions t WHERE t.customer_id = f.id \
                             AND t.status = 'active' AND t.created_at < $3)) AS with_sale, \
           (SELECT count(*) FROM rewards \
             WHERE program_id = $1 AND status = 'credited' \
               AND credited_at >= $2 AND credited_at < $3) AS credited",
    )
    .bind::<BigInt, _>(program_id)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(until)
    .get_result(conn)?)
}

impl Funnel {
    /// Each step as (label, count, share of the step before).
    pub fn steps(&self) -> Vec<(&'static str, i64, String)> {
        let share = |part: i64, whole: i64| crate::domain::dashboard::share(part, whole);
        vec![
            ("Link clicks", self.clicks, String::new()),
            ("Referred signups", self.signups, share(self.signups, self.clicks)),
            (
                "Referred customers with a sale",
                self.with_sale,
                share(self.with_sale, self.signups),
            ),
            ("Rewards credited", self.credited, String::new()),
        ]
    }
}

/// The days the funnel may look back over; a custom range is given by first and last day.
pub const FUNNEL_PRESETS: [i64; 3] = [7, 30, 90];
/// The longest custom range, in days: longer ones would read years of clicks per view.
pub const MAX_FUNNEL_DAYS: i64 = 3660;

/// The funnel's range: `7`, `30` or `90` (the last so many days up to `now`), or `custom`
/// with `from` and `to` as `YYYY-MM-DD` (inclusive, UTC). Returns `[from, until)`.
pub fn funnel_range(
    range: &str,
    from: &str,
    to: &str,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    let custom = range.trim() == "custom" || !from.trim().is_empty() || !to.trim().is_empty();
    if !custom {
        let days = match range.trim() {
            "" => 30,
            raw => match raw.parse::<i64>() {
                Ok(days) if FUNNEL_PRESETS.contains(&days) => days,
                _ => {
                    return Err(Error::invalid(
                        "range",
                        "Choose 7, 30 or 90 days, or a custom range.",
                    ))
                }
            },
        };
        return Ok((now - chrono::Duration::days(days), now));
    }
    let (first, until) = crate::domain::transactions::browse::parse_days(from, to)?;
    let Some(first) = first else {
        return Err(Error::invalid("from", "Enter the first day of the range."));
    };
    let until = until.unwrap_or(now);
    if until - first > chrono::Duration::days(MAX_FUNNEL_DAYS) {
        return Err(Error::invalid("to", "Choose a range of at most 10 years."));
    }
    Ok((first, until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ranges_are_presets_or_custom_days() {
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        assert_eq!(
            funnel_range("", "", "", now).unwrap().0,
            now - chrono::Duration::days(30)
        );
        assert_eq!(
            funnel_range("7", "", "", now).unwrap().0,
            now - chrono::Duration::days(7)
        );
        assert!(funnel_range("8", "", "", now).is_err());
        let (first, until) = funnel_range("custom", "2026-11-01", "2026-11-30", now).unwrap();
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        assert_eq!(until, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        let error = funnel_range("custom", "", "2026-11-30", now).unwrap_err();
        assert!(error.field_errors().unwrap().contains_key("from"));
        let error = funnel_range("custom", "2026-11-30", "2026-11-01", now).unwrap_err();
        assert!(error.field_errors().unwrap()["to"][0].contains("before the start"));
    }
}
