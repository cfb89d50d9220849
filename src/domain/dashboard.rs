//! Figures for the dashboard of one program.
//!
//! # How the figures stay fast at a million customers
//!
//! Every figure is read from something that does not grow with the program, or only
//! with its recent part — no figure counts all customers on each view (a pass over the
//! whole table is far too slow at a million):
//!
//! - active and referred customers: `customer_tallies`, the exact counts kept by triggers
//!   in the same transaction as every change (spread over 16 slots so concurrent signups
//!   do not queue on one row);
//! - approved: active customers minus those awaiting approval, counted in the partial
//!   index `customers_unapproved_idx` of just them;
//! - new customers and referrals this week and month: one pass with `count(*) FILTER
//!   (...)` over the covering index `customers_list_idx (program_id, status, created_at
//!   DESC, id DESC) INCLUDE (referrer_id, approved)`, from the earlier of the two starts on;
//! - the 90-day chart: a range scan of the same index (a per-day tally would make it
//!   constant, at the price of an upsert on every signup);
//! - credits per unit: `balance_transactions_credits_idx (program_id, amount_units,
//!   is_currency) INCLUDE (amount) WHERE kind = 'credit'` — index-only, already grouped;
//! - invites sent: `invites_status_idx (program_id, status)`;
//! - top referrers: `referral_standings_order_idx (program_id, status, referrals_count
//!   DESC, customer_id DESC)`, read in order and stopped after ten rows.
//!
//! All of them are exact and live: nothing is cached between views.
//!
//! Counting rules: "customers" are active (not deleted) ones, as everywhere in the
//! dashboard; a "referral" is an active customer created with a referrer, counted on the
//! day that customer was created (the same rule as `referrals_count`). Weeks start on
//! Monday and months on the 1st, at midnight UTC; the chart's days are UTC days.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Timestamptz};

use crate::db::schema::{customers, invites};
use crate::domain::customers::listing::{self, ReferStatus, StatusFilter};
use crate::domain::customers::{Customer, CustomerStatus};
use crate::domain::invites::DeliveryStatus;
use crate::domain::ledger::{self, Balance};
use crate::error::Error;

/// How many days the referrals chart covers, today included.
pub const CHART_DAYS: i64 = 90;
pub const TOP_REFERRERS: i64 = 10;

/// Monday 00:00 UTC of the week containing `now`.
pub fn week_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive();
    let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    midnight(monday)
}

/// The 1st of the month containing `now`, 00:00 UTC.
pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive();
    midnight(today.with_day(1).unwrap_or(today))
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Active (not deleted) customers.
    pub customers: i64,
    /// Active customers that were referred by someone.
    pub referred: i64,
    /// Active customers that are approved.
    pub approved: i64,
    pub new_this_week: i64,
    pub new_this_month: i64,
    pub referrals_this_week: i64,
    pub referrals_this_month: i64,
    /// Sums of all credits booked, per (unit, is_currency).
    pub credits: Vec<Balance>,
    /// Invites delivered (status `sent`).
    pub invites_sent: i64,
}

impl Totals {
    pub fn referred_share(&self) -> String {
        share(self.referred, self.customers)
    }

    pub fn approved_share(&self) -> String {
        share(self.approved, self.customers)
    }
}

/// `part` of `whole` as a percentage with one decimal, computed in integers: "42.5%". A
/// share that is not zero never reads "0%" (`<0.1%`), nor one short of all "100%"
/// (`>99.9%`).
pub fn share(part: i64, whole: i64) -> String {
    if whole <= 0 || part <= 0 {
        return "0%".to_string();
    }
    // Tenths of a percent, rounded half up.
    let tenths = (part * 2000 + whole) / (2 * whole);
    if tenths == 0 {
        return "<0.1%".to_string();
    }
    if tenths >= 1000 && part < whole {
        return ">99.9%".to_string();
    }
    if tenths % 10 == 0 {
        format!("{}%", tenths / 10)
    } else {
        format!("{}.{}%", tenths / 10, tenths % 10)
    }
}

#[derive(QueryableByName)]
struct RecentCounts {
    #[diesel(sql_type = BigInt)]
    new_this_week: i64,
    #[diesel(sql_type = BigInt)]
    new_this_month: i64,
    #[diesel(sql_type = BigInt)]
    referrals_this_week: i64,
    #[diesel(sql_type = BigInt)]
    referrals_this_month: i64,
}

pub fn totals(conn: &mut PgConnection, program_id: i64, now: DateTime<Utc>) -> Result<Totals, Error> {
    // Every figure from something that does not grow with the program: the tallies for
    // the customers and the referred, the index of those awaiting approval, and the
    // list's index from the start of the week or month on (counting all customers would
    // read the whole table on each view).
    let customers = listing::tally(conn, program_id, StatusFilter::Active, None)?.customers;
    let referred = listing::tally(
        conn,
        program_id,
        StatusFilter::Active,
        Some(ReferStatus::Referred),
    )?
    .customers;
    let unapproved: i64 = customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::approved.eq(false))
        .filter(customers::status.eq(CustomerStatus::Active))
        .count()
        .get_result(conn)?;
    // `FILTER` is beyond the query builder, so this is SQL text with bound parameters. A
    // week can start in the month before.
    let recent: RecentCounts = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE created_at >= $2) AS new_this_week, \
                count(*) FILTER (WHERE created_at >= $3) AS new_this_month, \
                count(*) FILTER (WHERE referrer_id IS NOT NULL AND created_at >= $2) AS referrals_this_week, \
                count(*) FILTER (WHERE referrer_id IS NOT NULL AND created_at >= $3) AS referrals_this_month \
         FROM customers WHERE program_id = $1 AND status = 'active' AND created_at >= least($2, $3)",
    )
    .bind::<BigInt, _>(program_id)
    .bind::<Timestamptz, _>(week_start(now))
    .bind::<Timestamptz, _>(month_start(now))
    .get_result(conn)?;
    let credits = ledger::credits_issued(conn, program_id)?;
    let invites_sent: i64 = invites::table
        .filter(invites::program_id.eq(program_id))
        .filter(invites::status.eq(DeliveryStatus::Sent))
        .count()
        .get_result(conn)?;
    Ok(Totals {
        customers,
        referred,
        approved: customers - unapproved,
        new_this_week: recent.new_this_week,
        new_this_month: recent.new_this_month,
        referrals_this_week: recent.referrals_this_week,
        referrals_this_month: recent.referrals_this_month,
        credits,
        invites_sent,
    })
}

/// Referrals on one UTC day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayCount {
    pub day: NaiveDate,
    pub referrals: i64,
}

#[derive(QueryableByName)]
struct DayRow {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    referrals: i64,
}

/// Referrals per day for the [`CHART_DAYS`] days ending with `now`'s day, zeros included,
/// oldest first.
pub fn referrals_per_day(
    conn: &mut PgConnection,
    program_id: i64,
    now: DateTime<Utc>,
) -> Result<Vec<DayCount>, Error> {
    let today = now.date_naive();
    let first = today - Duration::days(CHART_DAYS - 1);
    let from = midnight(first);
    let until = midnight(today + Duration::days(1));
    // Grouping by the UTC day is the one thing the query builder cannot say; the values
    // are bound parameters.
    let rows: Vec<DayRow> = diesel::sql_query(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS referrals \
         FROM customers \
         WHERE program_id = $1 AND status = 'active' AND referrer_id IS NOT NULL \
           AND created_at >= $2 AND created_at < $3 \
         GROUP BY 1 ORDER BY 1",
    )
    .bind::<BigInt, _>(program_id)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(until)
    .load(conn)?;
    let mut days: Vec<DayCount> = (0..CHART_DAYS)
        .map(|offset| DayCount {
            day: first + Duration::days(offset),
            referrals: 0,
        })
        .collect();
    for row in rows {
        let index = (row.day - first).num_days();
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| days.get_mut(i)) {
            slot.referrals = row.referrals;
        }
    }
    Ok(days)
}

/// The active customers with the most referrals, best first.
pub fn top_referrers(conn: &mut PgConnection, program_id: i64) -> Result<Vec<Customer>, Error> {
    use crate::db::schema::referral_standings as standings;
    Ok(standings::table
        .inner_join(customers::table.on(customers::id.eq(standings::customer_id)))
        .filter(standings::program_id.eq(program_id))
        .filter(standings::status.eq(CustomerStatus::Active))
        .filter(standings::referrals_count.gt(0))
        .order((standings::referrals_count.desc(), standings::customer_id.desc()))
        .limit(TOP_REFERRERS)
        .select(Customer::as_select())
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let thursday = Utc.with_ymd_and_hms(2026, 11, 26, 15, 30, 0).unwrap();
        assert_eq!(
            week_start(thursday),
            Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap()
        );
        assert_eq!(
            month_start(thursday),
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
        );
        let monday = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        assert_eq!(week_start(monday), monday);
    }

    #[test]
    fn shares_are_rounded_to_a_tenth() {
        assert_eq!(share(0, 0), "0%");
        assert_eq!(share(1, 3), "33.3%");
        assert_eq!(share(2, 3), "66.7%");
        assert_eq!(share(1, 2), "50%");
        assert_eq!(share(5, 5), "100%");
        assert_eq!(share(1, 100_000), "<0.1%");
        assert_eq!(share(99_999, 100_000), ">99.9%");
    }
}
