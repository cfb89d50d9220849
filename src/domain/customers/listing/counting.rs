//! How many customers a list holds: exactly from the tallies, one by one up to
//! [`COUNT_LIMIT`], or the planner's estimate beyond.

use diesel::pg::Pg;
use diesel::prelude::*;

use super::filters::filtered;
use super::search::{normalize_search, search_arms};
use super::{CustomerFilter, ReferStatus, StatusFilter};
use crate::db;
use crate::db::schema::customers;
use crate::domain::customers::fragments;
use crate::error::Error;

/// How many customers a list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Total {
    Exact(i64),
    /// More than [`COUNT_LIMIT`]: counting them all would read every match on every page
    /// view, so this is PostgreSQL's estimate, rounded to two significant digits and never
    /// below `COUNT_LIMIT + 1`. Pages say "about".
    About(i64),
}

impl Total {
    pub fn value(self) -> i64 {
        match self {
            Total::Exact(count) | Total::About(count) => count,
        }
    }

    pub fn is_exact(self) -> bool {
        matches!(self, Total::Exact(_))
    }
}

/// Filtered lists are counted exactly up to this many matches, and estimated beyond.
const COUNT_LIMIT: i64 = 1000;

/// True when the list's total is one of the tallied ones (see `customer_tallies`): only
/// the status and referred filters narrow it.
fn is_tallied(filter: &CustomerFilter) -> bool {
    filter.search.as_deref().and_then(normalize_search).is_none()
        && filter.approved.is_none()
        && filter.created_from.is_none()
        && filter.created_to.is_none()
}

/// A tallied list (see `customer_tallies`): how many customers it holds, and how many
/// times a customer joined or left it so far (only ever goes up; page marks are valid
/// while it stays the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tally {
    pub customers: i64,
    pub changes: i64,
}

/// The program's customers with this status and refer status, from the tallies (exact,
/// and as cheap with a million customers as with ten).
pub(crate) fn tally(
    conn: &mut PgConnection,
    program_id: i64,
    status: StatusFilter,
    refer_status: Option<ReferStatus>,
) -> Result<Tally, Error> {
    use crate::db::schema::customer_tallies as tallies;
    use bigdecimal::{BigDecimal, ToPrimitive};
    let mut query = tallies::table
        .filter(tallies::program_id.eq(program_id))
        .select((
            diesel::dsl::sum(tallies::customers),
            diesel::dsl::sum(tallies::changes),
        ))
        .into_boxed();
    if let Some(status) = status.status() {
        query = query.filter(tallies::status.eq(status));
    }
    query = match refer_status {
        Some(ReferStatus::Referred) => query.filter(tallies::referred.eq(true)),
        Some(ReferStatus::NonReferred) => query.filter(tallies::referred.eq(false)),
        None => query,
    };
    let (customers, changes): (Option<BigDecimal>, Option<BigDecimal>) = query.first(conn)?;
    let number = |sum: Option<BigDecimal>| sum.and_then(|sum| sum.to_i64()).unwrap_or(0);
    Ok(Tally {
        customers: number(customers),
        changes: number(changes),
    })
}

/// What a filter matches: how many and, when they were few enough to be counted one by
/// one, which ones (internal ids) — pages then sort just those instead of searching again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Matches {
    pub(super) total: Total,
    pub(super) ids: Option<Vec<i64>>,
    /// The list's change count when it is a tallied one (see [`Tally`]).
    pub(super) changes: Option<i64>,
}

impl Matches {
    /// `total` customers, not known one by one.
    pub(super) fn counted(total: Total) -> Matches {
        Matches {
            total,
            ids: None,
            changes: None,
        }
    }
}

/// The customers the filter matches: exactly from the tallies when only status and refer
/// status narrow the list; one by one when there are at most [`COUNT_LIMIT`]; estimated
/// beyond that.
pub(super) fn matches(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
) -> Result<Matches, Error> {
    if is_tallied(filter) {
        let tally = tally(conn, program_id, filter.status, filter.refer_status)?;
        return Ok(Matches {
            total: Total::Exact(tally.customers),
            ids: None,
            changes: Some(tally.changes),
        });
    }
    let matching = |conn: &mut PgConnection| -> Result<Vec<i64>, Error> {
        Ok(fragments::Limited {
            query: filtered(program_id, filter).select(customers::id),
            limit: COUNT_LIMIT + 1,
            offset: 0,
        }
        .load::<i64>(conn)?)
    };
    let ids = if reusable_plan_fits(filter) {
        db::with_generic_plans(conn, matching)?
    } else {
        matching(conn)?
    };
    if ids.len() as i64 <= COUNT_LIMIT {
        return Ok(Matches {
            total: Total::Exact(ids.len() as i64),
            ids: Some(ids),
            changes: None,
        });
    }
    // Estimated for the whole term: PostgreSQL has statistics for a `LIKE`, and none for
    // the check that follows a narrowed search's lookup (see `EmailSamples`).
    let whole_term = CustomerFilter {
        email_index_part: None,
        ..filter.clone()
    };
    let estimate = estimated_rows(conn, filtered(program_id, &whole_term).select(customers::id))?;
    Ok(Matches::counted(Total::About(round_estimate(
        estimate.max(COUNT_LIMIT + 1),
    ))))
}

/// The number of matches when it is at most `limit`, counted one by one; `None` beyond
/// (a bulk action's confirmation counts further than a page does).
pub(super) fn count_up_to(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    limit: i64,
) -> Result<Option<i64>, Error> {
    let ids: Vec<i64> = fragments::Limited {
        query: filtered(program_id, filter).select(customers::id),
        limit: limit + 1,
        offset: 0,
    }
    .load(conn)?;
    Ok((ids.len() as i64 <= limit).then_some(ids.len() as i64))
}

/// Whether the search's statement can run on its reusable plan instead of being planned
/// for its values (planning is a large share of a partial email search's database time).
/// The term decides the plan only where an arm's best index depends on how
/// many rows hold the text: not for a part the sample found rare (the email trigram index
/// is the way to find a handful of rows), nor for arms on a partial index of unusual ids
/// or names, whose size the reusable plan weighs as any plan does. A common part, or an
/// arm on the key, id or name trigram indexes, keeps the plan made for its values (one
/// that can stop at the 1,001st match instead of reading every holder).
fn reusable_plan_fits(filter: &CustomerFilter) -> bool {
    use fragments::SearchArm::{ContainsPart, ContainsWhere};
    let (Some(term), Some(index_part)) = (
        filter.search.as_deref().and_then(normalize_search),
        filter.email_index_part.as_ref(),
    ) else {
        return false;
    };
    index_part.rare
        && search_arms(&term, Some(&index_part.part))
            .iter()
            .all(|arm| matches!(arm, ContainsPart { .. } | ContainsWhere(..)))
}

/// The exact number of matches, however many (for the rare page past the end of an
/// estimated list).
pub(super) fn exact_total(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
) -> Result<i64, Error> {
    if is_tallied(filter) {
        return Ok(tally(conn, program_id, filter.status, filter.refer_status)?.customers);
    }
    Ok(filtered(program_id, filter).count().get_result(conn)?)
}

/// `n` to two significant digits: an estimate should not look more precise than it is.
fn round_estimate(n: i64) -> i64 {
    let mut unit = 1;
    while n / unit >= 100 {
        unit *= 10;
    }
    (n + unit / 2) / unit * unit
}

/// `EXPLAIN (FORMAT JSON) <query>`, with the query's bound parameters.
#[derive(diesel::query_builder::QueryId)]
struct Explain<Q>(Q);

impl<Q: diesel::query_builder::QueryFragment<Pg>> diesel::query_builder::QueryFragment<Pg> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("EXPLAIN (FORMAT JSON) ");
        self.0.walk_ast(out.reborrow())
    }
}

impl<Q> diesel::query_builder::Query for Explain<Q> {
    type SqlType = diesel::sql_types::Json;
}

impl<Q> RunQueryDsl<PgConnection> for Explain<Q> {}

/// The planner's estimate of the rows `query` returns (from the statistics, reading no
/// rows).
fn estimated_rows<Q>(conn: &mut PgConnection, query: Q) -> Result<i64, Error>
where
    Q: diesel::query_builder::QueryFragment<Pg> + diesel::query_builder::QueryId,
{
    let plan: serde_json::Value = Explain(query).get_result(conn)?;
    Ok(plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_keep_two_significant_digits() {
        assert_eq!(round_estimate(7), 7);
        assert_eq!(round_estimate(1_001), 1_000);
        assert_eq!(round_estimate(1_049), 1_000);
        assert_eq!(round_estimate(1_051), 1_100);
        assert_eq!(round_estimate(124_873), 120_000);
        assert_eq!(round_estimate(998_765), 1_000_000);
    }
}
