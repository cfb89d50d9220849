//! The review queue: rewards of a program, filtered, oldest first, with counts per status.
//!
//! Pages read the queue in `(created_at, id)` order along the indexes
//! `rewards_queue_idx` (one status) and `rewards_program_created_idx` (all); far pages
//! continue from a row of the page before (keyset) instead of skipping rows, and counts
//! stop at [`COUNT_CAP`], so a page costs the same at any depth of a long queue. Counts by
//! status, rule, flag and reversal owed read `reward_tallies` (kept by triggers) instead.

use bigdecimal::BigDecimal;
use bigdecimal::ToPrimitive;
use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use diesel::dsl::{sql, sum};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Timestamptz};

use crate::db::schema::{customers, reward_rules, reward_tallies, rewards, transactions};
use crate::domain::customers as customer_lookup;
use crate::error::{Error, FieldErrors};

use super::credit::totals_per_unit;
use super::review::MAX_BULK;
use super::{Reward, RewardStatus};

/// Counts stop here: the page says "more than" beyond. Each count reads at most this many
/// index entries, and the queue page shows eight of them.
pub const COUNT_CAP: i64 = 1_000;

/// The queue's filters as typed (query string or form), parsed by [`QueueFilter::parse`].
#[derive(Clone, Debug, Default)]
pub struct RawFilter {
    /// A status, or `all` / empty for every status.
    pub status: String,
    /// A rule id.
    pub rule: String,
    /// Fraud-flagged rewards only.
    pub flagged: bool,
    /// Rewards with a reversal owed only.
    pub owed: bool,
    /// The beneficiary's id, key or email.
    pub beneficiary: String,
    /// Created on or after this day (`YYYY-MM-DD`, UTC).
    pub from: String,
    /// Created on or before this day.
    pub to: String,
}

/// A validated filter of the queue.
#[derive(Clone, Debug, Default)]
pub struct QueueFilter {
    pub status: Option<RewardStatus>,
    pub rule_id: Option<i64>,
    pub flagged: bool,
    pub owed: bool,
    /// `Some(None)`: a beneficiary was asked for and no customer matches (nothing does).
    pub beneficiary: Option<Option<i64>>,
    pub from: Option<DateTime<Utc>>,
    /// Exclusive: the start of the day after the `to` day.
    pub until: Option<DateTime<Utc>>,
}

fn parse_day(fields: &mut FieldErrors, name: &str, raw: &str) -> Option<NaiveDate> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    match NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        Ok(day) => Some(day),
        Err(_) => {
            fields.insert(name.to_string(), vec!["Enter a date as YYYY-MM-DD.".to_string()]);
            None
        }
    }
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

impl QueueFilter {
    /// Parses the typed filter; each bad value is reported under its own name.
    pub fn parse(conn: &mut PgConnection, program_id: i64, raw: &RawFilter) -> Result<QueueFilter, Error> {
        let mut fields = FieldErrors::new();
        let status = match raw.status.trim() {
            "" | "all" => None,
            other => match RewardStatus::parse(other) {
                Some(status) => Some(status),
                None => {
                    fields.insert(
                        "status".to_string(),
                        vec!["Choose pending, approved, credited, denied, voided or all.".to_string()],
                    );
                    None
                }
            },
        };
        let rule_id = match raw.rule.trim() {
            "" => None,
            other => match other.parse::<i64>() {
                Ok(id) if id > 0 => Some(id),
                _ => {
                    fields.insert(
                        "rule".to_string(),
                        vec!["Choose a rule of this program.".to_string()],
                    );
                    None
                }
            },
        };
        let from = parse_day(&mut fields, "from", &raw.from);
        let to = parse_day(&mut fields, "to", &raw.to);
        if let (Some(from), Some(to)) = (from, to) {
            if to < from {
                fields.insert(
                    "to".to_string(),
                    vec!["The end date is before the start date.".to_string()],
                );
            }
        }
        if !fields.is_empty() {
            return Err(Error::invalid_fields(fields));
        }
        let beneficiary = match raw.beneficiary.trim() {
            "" => None,
            ident => Some(match customer_lookup::find_by_ident(conn, program_id, ident) {
                Ok(customer) => Some(customer.id),
                Err(Error::NotFound) => None,
                Err(other) => return Err(other),
            }),
        };
        Ok(QueueFilter {
            status,
            rule_id,
            flagged: raw.flagged,
            owed: raw.owed,
            beneficiary,
            from: from.map(start_of),
            until: to
                .and_then(|day| day.checked_add_days(Days::new(1)))
                .map(start_of),
        })
    }

    /// The program's rewards this filter keeps.
    fn query(&self, program_id: i64) -> rewards::BoxedQuery<'static, Pg> {
        let mut query = rewards::table
            .filter(rewards::program_id.eq(program_id))
            .into_boxed();
        if let Some(status) = self.status {
            query = query.filter(rewards::status.eq(status));
        }
        if let Some(rule_id) = self.rule_id {
            query = query.filter(rewards::rule_id.eq(rule_id));
        }
        if self.flagged {
            // Written as the partial index `rewards_flagged_idx` states it.
            query = query.filter(sql::<Bool>("rewards.flags <> '{}'"));
        }
        if self.owed {
            query = query.filter(sql::<Bool>("rewards.reversal = 'owed'"));
        }
        match self.beneficiary {
            Some(Some(id)) => query = query.filter(rewards::beneficiary_id.eq(id)),
            Some(None) => query = query.filter(sql::<Bool>("false")),
            None => {}
        }
        if let Some(from) = self.from {
            query = query.filter(rewards::created_at.ge(from));
        }
        if let Some(until) = self.until {
            query = query.filter(rewards::created_at.lt(until));
        }
        query
    }
}

/// One row of the queue: the reward, its beneficiary and its transaction.
#[derive(Clone, Debug)]
pub struct QueueRow {
    pub reward: Reward,
    pub beneficiary_key: String,
    /// Name, else email, else key.
    pub beneficiary_name: String,
    pub transaction_key: Option<String>,
}

/// Where a page starts: from its number, or continuing from a row of a neighbouring page.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    Page(i64),
    After(i64),
    Before(i64),
}

/// One page of the queue.
pub struct QueuePage {
    pub rows: Vec<QueueRow>,
    /// Exact up to [`COUNT_CAP`]; `COUNT_CAP + 1` means more.
    pub total: i64,
    pub has_next: bool,
}

impl QueuePage {
    pub fn total_is_exact(&self) -> bool {
        self.total <= COUNT_CAP
    }
}

type RowTuple = (
    Reward,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A page of rewards matching `filter`, oldest first.
pub fn page(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &QueueFilter,
    start: Start,
    per_page: i64,
) -> Result<QueuePage, Error> {
    let per_page = per_page.clamp(1, 250);
    let total = count(conn, program_id, filter)?;
    // A page past the end of an exactly counted list shows its last page.
    let start = match start {
        Start::Page(number) if total <= COUNT_CAP => {
            Start::Page(number.clamp(1, ((total + per_page - 1) / per_page).max(1)))
        }
        other => other,
    };
    let anchor = match start {
        Start::After(id) | Start::Before(id) => rewards::table
            .filter(rewards::program_id.eq(program_id))
            .filter(rewards::id.eq(id))
            .select(rewards::created_at)
            .first::<DateTime<Utc>>(conn)
            .optional()?
            .map(|created_at| (created_at, id)),
        Start::Page(_) => None,
    };
    let backwards = matches!((start, anchor), (Start::Before(_), Some(_)));
    let base = match (start, anchor) {
        (Start::After(_), Some((at, id))) => beyond(filter.query(program_id), ">", at, id),
        (Start::Before(_), Some((at, id))) => beyond(filter.query(program_id), "<", at, id),
        _ => filter.query(program_id),
    };
    let base = match (start, backwards) {
        (_, true) => base.order((rewards::created_at.desc(), rewards::id.desc())),
        (Start::Page(page), _) => base
            .order((rewards::created_at.asc(), rewards::id.asc()))
            .offset((page.max(1) - 1).saturating_mul(per_page)),
        // After a row, or from the start when the cursor's row is gone.
        _ => base.order((rewards::created_at.asc(), rewards::id.asc())),
    };
    let mut rows = load_rows(conn, filter, base, per_page + 1)?;
    let more = rows.len() as i64 > per_page;
    rows.truncate(per_page as usize);
    if backwards {
        rows.reverse();
    }
    Ok(QueuePage {
        rows,
        total,
        has_next: more || backwards,
    })
}

/// The rows of `base` (`filter`'s rewards, ordered) with their beneficiary and transaction.
///
/// Their plan is the same index walk whatever the values, except with a date range (how
/// much of the queue it spans decides between walking in order and sorting), so the others
/// use their reusable plan instead of being planned on every view.
fn load_rows(
    conn: &mut PgConnection,
    filter: &QueueFilter,
    base: rewards::BoxedQuery<'static, Pg>,
    limit: i64,
) -> Result<Vec<QueueRow>, Error> {
    if filter.from.is_none() && filter.until.is_none() {
        crate::db::with_generic_plans(conn, |conn| rows_of(conn, base, limit))
    } else {
        rows_of(conn, base, limit)
    }
}

fn rows_of(
    conn: &mut PgConnection,
    base: rewards::BoxedQuery<'static, Pg>,
    limit: i64,
) -> Result<Vec<QueueRow>, Error> {
    let loaded: Vec<RowTuple> = base
        .left_join(customers::table.on(customers::id.eq(rewards::beneficiary_id)))
        .left_join(transactions::table.on(transactions::id.nullable().eq(rewards::transaction_id)))
        .select((
            Reward::as_select(),
            customers::key.nullable().assume_not_null(),
            customers::name.nullable(),
            customers::surname.nullable(),
            customers::email.nullable(),
            transactions::key.nullable(),
        ))
        .limit(limit)
        .load(conn)?;
    Ok(loaded.into_iter().map(queue_row).collect())
}

fn queue_row((reward, key, name, surname, email, transaction_key): RowTuple) -> QueueRow {
    let full_name = [name, surname]
        .into_iter()
        .flatten()
        .filter(|part| !part.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let beneficiary_name = if full_name.is_empty() {
        email.unwrap_or_else(|| key.clone())
    } else {
        full_name
    };
    QueueRow {
        reward,
        beneficiary_key: key,
        beneficiary_name,
        transaction_key,
    }
}

/// One reward of the program as a queue row.
pub fn row(conn: &mut PgConnection, program_id: i64, id: i64) -> Result<QueueRow, Error> {
    let base = rewards::table
        .filter(rewards::program_id.eq(program_id))
        .filter(rewards::id.eq(id))
        .into_boxed();
    rows_of(conn, base, 1)?.pop().ok_or(Error::NotFound)
}

/// A page by number with the exact number of matches, for the API's list envelope.
pub fn list(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &QueueFilter,
    page: i64,
    per_page: i64,
) -> Result<(Vec<QueueRow>, i64), Error> {
    let total = match tallied(conn, program_id, filter)? {
        Some(total) => total,
        None => filter.query(program_id).count().get_result(conn)?,
    };
    let base = filter
        .query(program_id)
        .order((rewards::created_at.asc(), rewards::id.asc()))
        .offset((page.max(1) - 1).saturating_mul(per_page));
    Ok((load_rows(conn, filter, base, per_page)?, total))
}

/// Rows beyond `(at, id)` in the queue's order: `(rewards.created_at, rewards.id) <op>
/// (at, id)`, a row comparison the indexes serve.
fn beyond(
    query: rewards::BoxedQuery<'static, Pg>,
    op: &'static str,
    at: DateTime<Utc>,
    id: i64,
) -> rewards::BoxedQuery<'static, Pg> {
    query.filter(
        sql::<Bool>("(rewards.created_at, rewards.id) ")
            .sql(op)
            .sql(" (")
            .bind::<Timestamptz, _>(at)
            .sql(", ")
            .bind::<BigInt, _>(id)
            .sql(")"),
    )
}

/// How many rewards match, up to [`COUNT_CAP`] + 1.
pub fn count(conn: &mut PgConnection, program_id: i64, filter: &QueueFilter) -> Result<i64, Error> {
    if let Some(total) = tallied(conn, program_id, filter)? {
        return Ok(total.min(COUNT_CAP + 1));
    }
    let ids: Vec<i64> = filter
        .query(program_id)
        .select(rewards::id)
        .limit(COUNT_CAP + 1)
        .load(conn)?;
    Ok(ids.len() as i64)
}

/// The exact number of rewards matching a filter of status, rule, flagged and owed only,
/// from the tallies the triggers on `rewards` keep; `None` for a filter they cannot answer
/// (a beneficiary or a date range).
fn tallied(conn: &mut PgConnection, program_id: i64, filter: &QueueFilter) -> Result<Option<i64>, Error> {
    if filter.beneficiary.is_some() || filter.from.is_some() || filter.until.is_some() {
        return Ok(None);
    }
    let mut query = reward_tallies::table
        .filter(reward_tallies::program_id.eq(program_id))
        .into_boxed();
    if let Some(status) = filter.status {
        query = query.filter(reward_tallies::status.eq(status));
    }
    if let Some(rule_id) = filter.rule_id {
        query = query.filter(reward_tallies::rule_id.eq(rule_id));
    }
    if filter.flagged {
        query = query.filter(reward_tallies::flagged);
    }
    if filter.owed {
        query = query.filter(reward_tallies::owed);
    }
    let total: Option<BigDecimal> = query.select(sum(reward_tallies::rewards)).first(conn)?;
    Ok(Some(total.and_then(|total| total.to_i64()).unwrap_or(0)))
}

/// Rewards per status (each up to [`COUNT_CAP`] + 1), plus fraud-flagged and reversal-owed
/// ones, for the queue's header.
#[derive(Clone, Debug, Default)]
pub struct StatusCounts {
    pub by_status: Vec<(RewardStatus, i64)>,
    pub flagged_pending: i64,
    pub owed: i64,
}

/// One read of the program's tallies, grouped, instead of one query per count.
pub fn status_counts(conn: &mut PgConnection, program_id: i64) -> Result<StatusCounts, Error> {
    let groups: Vec<(String, bool, bool, Option<BigDecimal>)> = reward_tallies::table
        .filter(reward_tallies::program_id.eq(program_id))
        .group_by((
            reward_tallies::status,
            reward_tallies::flagged,
            reward_tallies::owed,
        ))
        .select((
            reward_tallies::status,
            reward_tallies::flagged,
            reward_tallies::owed,
            sum(reward_tallies::rewards),
        ))
        .load(conn)?;
    let groups: Vec<(Option<RewardStatus>, bool, bool, i64)> = groups
        .into_iter()
        .map(|(status, flagged, owed, rewards)| {
            let rewards = rewards.and_then(|total| total.to_i64()).unwrap_or(0);
            (RewardStatus::parse(&status), flagged, owed, rewards)
        })
        .collect();
    let sum_of = |wanted: &dyn Fn(Option<RewardStatus>, bool, bool) -> bool| -> i64 {
        groups
            .iter()
            .filter(|(status, flagged, owed, _)| wanted(*status, *flagged, *owed))
            .map(|(.., rewards)| rewards)
            .sum::<i64>()
            .min(COUNT_CAP + 1)
    };
    let mut counts = StatusCounts::default();
    for status in [
        RewardStatus::Pending,
        RewardStatus::Approved,
        RewardStatus::Credited,
        RewardStatus::Denied,
        RewardStatus::Voided,
    ] {
        counts
            .by_status
            .push((status, sum_of(&|of, _, _| of == Some(status))));
    }
    counts.flagged_pending = sum_of(&|of, flagged, _| of == Some(RewardStatus::Pending) && flagged);
    counts.owed = sum_of(&|_, _, owed| owed);
    Ok(counts)
}

/// A selection about to be decided in bulk: its rewards' ids and the total per unit.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub ids: Vec<i64>,
    pub totals: Vec<(String, bool, BigDecimal)>,
}

fn selection_of(rows: Vec<(i64, BigDecimal, String, bool)>) -> Selection {
    let totals = totals_per_unit(
        rows.iter()
            .map(|(_, amount, units, is_currency)| (amount, units.as_str(), *is_currency)),
    );
    Selection {
        ids: rows.into_iter().map(|(id, ..)| id).collect(),
        totals,
    }
}

/// Every reward matching `filter` ("all N matching"); more than [`MAX_BULK`] is refused.
pub fn matching(conn: &mut PgConnection, program_id: i64, filter: &QueueFilter) -> Result<Selection, Error> {
    let rows: Vec<(i64, BigDecimal, String, bool)> = filter
        .query(program_id)
        .order((rewards::created_at.asc(), rewards::id.asc()))
        .limit(MAX_BULK as i64 + 1)
        .select((
            rewards::id,
            rewards::amount,
            rewards::amount_units,
            rewards::is_currency,
        ))
        .load(conn)?;
    if rows.len() > MAX_BULK {
        return Err(Error::invalid(
            "rewards",
            format!("More than {MAX_BULK} rewards match: narrow the filter to decide them in bulk."),
        ));
    }
    Ok(selection_of(rows))
}

/// The rewards of the program among `ids`, with their total per unit.
pub fn selected(conn: &mut PgConnection, program_id: i64, ids: &[i64]) -> Result<Selection, Error> {
    let rows: Vec<(i64, BigDecimal, String, bool)> = rewards::table
        .filter(rewards::program_id.eq(program_id))
        .filter(rewards::id.eq_any(ids))
        .order(rewards::id.asc())
        .select((
            rewards::id,
            rewards::amount,
            rewards::amount_units,
            rewards::is_currency,
        ))
        .load(conn)?;
    Ok(selection_of(rows))
}

/// The program's rules, for the rule filter: id and name.
pub fn rule_names(conn: &mut PgConnection, program_id: i64) -> Result<Vec<(i64, String)>, Error> {
    Ok(reward_rules::table
        .filter(reward_rules::program_id.eq(program_id))
        .order(reward_rules::name.asc())
        .select((reward_rules::id, reward_rules::name))
        .load(conn)?)
}
