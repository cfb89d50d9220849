//! Finding customers: the filtered, sorted, paginated list, the export's batches, and a
//! customer's referrals. Every query is scoped by program and shaped for the indexes of
//! the migrations, so it stays quick with a million customers.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use diesel::dsl::sql;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use super::Customer;
use crate::db::schema::customers;
use crate::error::Error;

/// `referred` / `non_referred` (the API's `refer_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferStatus {
    Referred,
    NonReferred,
}

impl ReferStatus {
    pub fn parse(value: &str) -> Option<ReferStatus> {
        match value {
            "referred" => Some(ReferStatus::Referred),
            "non_referred" => Some(ReferStatus::NonReferred),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReferStatus::Referred => "referred",
            ReferStatus::NonReferred => "non_referred",
        }
    }
}

/// Which customers by status; active by default (deleted ones leave the default list).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    Active,
    Deleted,
    All,
}

impl StatusFilter {
    pub fn parse(value: &str) -> Option<StatusFilter> {
        match value {
            "active" => Some(StatusFilter::Active),
            "deleted" => Some(StatusFilter::Deleted),
            "all" => Some(StatusFilter::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Active => "active",
            StatusFilter::Deleted => "deleted",
            StatusFilter::All => "all",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortColumn {
    #[default]
    Created,
    Email,
    Name,
    Referrals,
}

impl SortColumn {
    pub const ALL: [SortColumn; 4] = [
        SortColumn::Created,
        SortColumn::Email,
        SortColumn::Name,
        SortColumn::Referrals,
    ];

    pub fn parse(value: &str) -> Option<SortColumn> {
        SortColumn::ALL
            .into_iter()
            .find(|column| column.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SortColumn::Created => "created",
            SortColumn::Email => "email",
            SortColumn::Name => "name",
            SortColumn::Referrals => "referrals",
        }
    }

    /// The direction a first click on the column sorts by: text A→Z, numbers and dates
    /// biggest/newest first.
    pub fn natural_direction(self) -> SortDirection {
        match self {
            SortColumn::Email | SortColumn::Name => SortDirection::Asc,
            SortColumn::Created | SortColumn::Referrals => SortDirection::Desc,
        }
    }

    /// The ORDER BY expression; it matches an index expression of the migrations.
    fn expression(self) -> &'static str {
        match self {
            SortColumn::Created => "customers.created_at",
            SortColumn::Email => "lower(customers.email)",
            SortColumn::Name => NAME_EXPRESSION,
            SortColumn::Referrals => "customers.referrals_count",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortDirection {
    Asc,
    #[default]
    Desc,
}

impl SortDirection {
    pub fn parse(value: &str) -> Option<SortDirection> {
        match value {
            "asc" => Some(SortDirection::Asc),
            "desc" => Some(SortDirection::Desc),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SortDirection::Asc => "asc",
            SortDirection::Desc => "desc",
        }
    }

    pub fn reversed(self) -> SortDirection {
        match self {
            SortDirection::Asc => SortDirection::Desc,
            SortDirection::Desc => SortDirection::Asc,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            SortDirection::Asc => "ASC",
            SortDirection::Desc => "DESC",
        }
    }
}

/// What the list shows. Parsed leniently at the edge: an unknown value is the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomerFilter {
    /// Matches email, key, id, and "name surname", case-insensitively and partially.
    pub search: Option<String>,
    pub refer_status: Option<ReferStatus>,
    pub status: StatusFilter,
    pub approved: Option<bool>,
    /// Created on or after this day (UTC).
    pub created_from: Option<NaiveDate>,
    /// Created on or before this day (UTC).
    pub created_to: Option<NaiveDate>,
    pub sort: SortColumn,
    pub direction: SortDirection,
}

/// The expression the name trigram index is built on; search and sort use it verbatim.
const NAME_EXPRESSION: &str = "lower(coalesce(customers.name, '') || ' ' || coalesce(customers.surname, ''))";

/// The longest search term used; longer input is cut (nobody types more to find someone).
const MAX_SEARCH_CHARS: usize = 200;

/// A `LIKE` pattern matching `term` anywhere, with `%`, `_` and `\` taken literally.
pub fn contains_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The search term as matched: trimmed, without control characters (which PostgreSQL
/// text cannot hold anyway), at most `MAX_SEARCH_CHARS` long. The database lower-cases it
/// with the same `lower()` as the indexed columns, so both sides always agree.
pub fn normalize_search(raw: &str) -> Option<String> {
    let term: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_SEARCH_CHARS)
        .collect::<String>()
        .trim()
        .to_string();
    (!term.is_empty()).then_some(term)
}

type BoxedCustomers<'a> = customers::BoxedQuery<'a, Pg>;

/// The filtered rows of one program, unordered.
fn filtered(program_id: i64, filter: &CustomerFilter) -> BoxedCustomers<'static> {
    let mut query = customers::table
        .filter(customers::program_id.eq(program_id))
        .into_boxed();
    query = match filter.status {
        StatusFilter::Active => query.filter(customers::status.eq("active")),
        StatusFilter::Deleted => query.filter(customers::status.eq("deleted")),
        StatusFilter::All => query,
    };
    if let Some(term) = filter.search.as_deref().and_then(normalize_search) {
        // Each arm is served by its own trigram index (a BitmapOr), and every arm spells
        // out the indexed expression exactly.
        let pattern = contains_pattern(&term);
        query = query.filter(
            sql::<Bool>("(lower(customers.email) LIKE lower(")
                .bind::<Text, _>(pattern.clone())
                .sql(") OR lower(customers.key) LIKE lower(")
                .bind::<Text, _>(pattern.clone())
                .sql(") OR lower(customers.external_id) LIKE lower(")
                .bind::<Text, _>(pattern.clone())
                .sql(&format!(") OR {NAME_EXPRESSION} LIKE lower("))
                .bind::<Text, _>(pattern)
                .sql("))"),
        );
    }
    query = match filter.refer_status {
        Some(ReferStatus::Referred) => query.filter(customers::referrer_id.is_not_null()),
        Some(ReferStatus::NonReferred) => query.filter(customers::referrer_id.is_null()),
        None => query,
    };
    if let Some(approved) = filter.approved {
        query = query.filter(customers::approved.eq(approved));
    }
    if let Some(from) = filter.created_from {
        query = query.filter(customers::created_at.ge(Utc.from_utc_datetime(&from.and_time(NaiveTime::MIN))));
    }
    if let Some(to) = filter.created_to.and_then(|to| to.succ_opt()) {
        query = query.filter(customers::created_at.lt(Utc.from_utc_datetime(&to.and_time(NaiveTime::MIN))));
    }
    query
}

/// A customer in a list, with who referred them (loaded for the whole page at once).
#[derive(Clone, Debug)]
pub struct CustomerRow {
    pub customer: Customer,
    pub referrer: Option<ReferrerSummary>,
}

#[derive(Clone, Debug, Queryable)]
pub struct ReferrerSummary {
    pub id: i64,
    pub key: String,
    pub external_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
}

impl ReferrerSummary {
    pub fn display_name(&self) -> String {
        let full = [self.name.as_deref(), self.surname.as_deref()]
            .into_iter()
            .flatten()
            .filter(|part| !part.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !full.is_empty() {
            full
        } else {
            self.email.clone().unwrap_or_else(|| self.key.clone())
        }
    }
}

/// The referrers of `rows`, by internal id, in one query.
pub fn referrer_summaries(
    conn: &mut PgConnection,
    rows: &[Customer],
) -> Result<HashMap<i64, ReferrerSummary>, Error> {
    let mut ids: Vec<i64> = rows.iter().filter_map(|row| row.referrer_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(customers::table
        .filter(customers::id.eq_any(&ids))
        .select((
            customers::id,
            customers::key,
            customers::external_id,
            customers::email,
            customers::name,
            customers::surname,
        ))
        .load::<ReferrerSummary>(conn)?
        .into_iter()
        .map(|summary| (summary.id, summary))
        .collect())
}

/// `rows` with their referrers (loaded for all rows at once).
pub fn with_referrers(conn: &mut PgConnection, rows: Vec<Customer>) -> Result<Vec<CustomerRow>, Error> {
    let referrers = referrer_summaries(conn, &rows)?;
    Ok(rows
        .into_iter()
        .map(|customer| CustomerRow {
            referrer: customer.referrer_id.and_then(|id| referrers.get(&id).cloned()),
            customer,
        })
        .collect())
}

/// Exact lookups for the API's `customers:search`: every given criterion must match.
#[derive(Clone, Debug, Default)]
pub struct ExactMatch {
    pub key: Option<String>,
    pub external_id: Option<String>,
    /// Compared case-insensitively, like the unique index.
    pub email: Option<String>,
}

/// Customers matching `criteria` (deleted ones included: a search by identifier should
/// find them, and their `status` says what they are), with the number of matches.
pub fn exact_matches(
    conn: &mut PgConnection,
    program_id: i64,
    criteria: &ExactMatch,
    page: i64,
    per_page: i64,
) -> Result<(Vec<Customer>, i64), Error> {
    // A value no customer can hold (PostgreSQL text refuses NUL) matches nobody.
    let given = [&criteria.key, &criteria.external_id, &criteria.email];
    if given
        .iter()
        .any(|value| value.as_deref().is_some_and(|value| !super::is_storable(value)))
    {
        return Ok((Vec::new(), 0));
    }
    let query = || {
        let mut query = customers::table
            .filter(customers::program_id.eq(program_id))
            .into_boxed();
        if let Some(key) = &criteria.key {
            query = query.filter(customers::key.eq(key.clone()));
        }
        if let Some(id) = &criteria.external_id {
            query = query.filter(customers::external_id.eq(id.clone()));
        }
        if let Some(email) = &criteria.email {
            query =
                query.filter(sql::<Bool>("lower(customers.email) = ").bind::<Text, _>(email.to_lowercase()));
        }
        query
    };
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let total: i64 = query().count().get_result(conn)?;
    let rows = query()
        .order(customers::id.asc())
        .limit(per_page)
        .offset((page.max(1) - 1).saturating_mul(per_page))
        .select(Customer::as_select())
        .load(conn)?;
    Ok((rows, total))
}

pub const MAX_PER_PAGE: i64 = 250;

/// One page of the filtered list and the number of matching customers. `per_page` is
/// clamped to 1..=250 and `page` to >= 1; a page past the end is empty.
pub fn list(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    page: i64,
    per_page: i64,
) -> Result<(Vec<CustomerRow>, i64), Error> {
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let page = page.max(1);
    let total: i64 = filtered(program_id, filter).count().get_result(conn)?;
    let offset = (page - 1).saturating_mul(per_page);
    if offset >= total {
        return Ok((Vec::new(), total));
    }
    let direction = filter.direction.sql();
    let order = format!(
        "{} {direction}, customers.id {direction}",
        filter.sort.expression()
    );
    let rows = filtered(program_id, filter)
        .order(sql::<Text>(&order))
        .limit(per_page)
        .offset(offset)
        .select(Customer::as_select())
        .load(conn)?;
    Ok((with_referrers(conn, rows)?, total))
}

/// Up to `limit` filtered customers with an internal id above `after_id`, oldest first:
/// the export walks the list with this (keyset pagination: each batch is an index range,
/// however far in the export is).
pub fn export_batch(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    after_id: i64,
    limit: i64,
) -> Result<Vec<CustomerRow>, Error> {
    let rows = filtered(program_id, filter)
        .filter(customers::id.gt(after_id))
        .order(customers::id.asc())
        .limit(limit)
        .select(Customer::as_select())
        .load(conn)?;
    with_referrers(conn, rows)
}

/// The active customers `referrer_id` referred, newest first.
pub fn referrals(
    conn: &mut PgConnection,
    program_id: i64,
    referrer_id: i64,
    page: i64,
    per_page: i64,
) -> Result<Vec<Customer>, Error> {
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let offset = (page.max(1) - 1).saturating_mul(per_page);
    Ok(customers::table
        .filter(customers::referrer_id.eq(referrer_id))
        .filter(customers::program_id.eq(program_id))
        .filter(customers::status.eq("active"))
        .order((customers::created_at.desc(), customers::id.desc()))
        .limit(per_page)
        .offset(offset)
        .select(Customer::as_select())
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_in_search_terms_are_literal() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(contains_pattern("@acme"), "%@acme%");
    }

    #[test]
    fn search_terms_are_trimmed_lowercased_and_cleaned() {
        assert_eq!(normalize_search("  ADA\u{0} "), Some("ADA".to_string()));
        assert_eq!(normalize_search("   "), None);
        assert_eq!(normalize_search(&"x".repeat(500)).map(|t| t.len()), Some(200));
    }
}
