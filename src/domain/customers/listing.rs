//! Finding customers: the filtered, sorted, paginated list, the export's batches, and a
//! customer's referrals. Every query is scoped by program and shaped for the indexes of
//! the migrations, so it stays quick with a million customers.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use diesel::dsl::sql;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use super::fragments;
use super::{Customer, CustomerStatus};
use crate::db;
use crate::db::schema::{customers, referral_standings as standings};
use crate::error::Error;

mod customer_list;
mod email_samples;
mod page_marks;
pub use customer_list::{Cursor, CustomerList, ExportWalk, ListPage, ListRequest, ListedRow, PastEnd};
pub use email_samples::{EmailSamples, IndexPart};
pub use page_marks::{PageMarks, MARK_EVERY};

/// `referred` / `non_referred` (the API's `refer_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StatusFilter {
    #[default]
    Active,
    Deleted,
    All,
}

impl StatusFilter {
    pub fn parse(value: &str) -> Option<StatusFilter> {
        match value {
            "all" => Some(StatusFilter::All),
            status => CustomerStatus::parse(status).map(StatusFilter::only),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.status().map_or("all", CustomerStatus::as_str)
    }

    pub fn only(status: CustomerStatus) -> StatusFilter {
        match status {
            CustomerStatus::Active => StatusFilter::Active,
            CustomerStatus::Deleted => StatusFilter::Deleted,
        }
    }

    /// The one status kept, or `None` for all of them.
    pub fn status(self) -> Option<CustomerStatus> {
        match self {
            StatusFilter::Active => Some(CustomerStatus::Active),
            StatusFilter::Deleted => Some(CustomerStatus::Deleted),
            StatusFilter::All => None,
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

    /// Continuing the list after a customer, sorted by this column (see [`positions`]).
    fn keyset(self) -> fragments::Keyset {
        fragments::Keyset {
            table: "customers",
            id: "customers.id",
            expression: self.expression(),
        }
    }
}

/// Continuing the list sorted by referrals as read from `referral_standings`.
const STANDINGS_KEYSET: fragments::Keyset = fragments::Keyset {
    table: "referral_standings",
    id: "referral_standings.customer_id",
    expression: "referral_standings.referrals_count",
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
    /// How the search is run, not what it finds: the part of the term to look up in the
    /// email trigram index instead of the whole term (see [`EmailSamples`]; set by
    /// [`narrow_email_search`]). The whole term is still what every email must contain.
    pub email_index_part: Option<IndexPart>,
}

/// The expression the name trigram index is built on; search and sort use it verbatim.
const NAME_EXPRESSION: &str = "lower(coalesce(customers.name, '') || ' ' || coalesce(customers.surname, ''))";

/// Names whose characters are all ASCII letters, spaces, `'` and `-` are "plain"; the
/// partial index `customers_unusual_name_idx` lists the others. Must agree with it (and with
/// the SQL function it calls, written as the index's predicate is: see migration 000016).
const UNUSUAL_NAME: &str = "customer_name_is_unusual(customers.name, customers.surname) IS TRUE";
fn is_plain_name_char(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, ' ' | '\'' | '-')
}

/// Ids of ASCII letters, digits, `_` and `-` are "plain"; `customers_unusual_id_idx`
/// lists the others. Must agree with it (as [`UNUSUAL_NAME`]).
const UNUSUAL_ID: &str = "customer_id_is_unusual(customers.external_id) IS TRUE";
fn is_plain_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

/// `term` with `%`, `_` and `\` taken literally.
fn escape_like(term: &str) -> String {
    let pattern = contains_pattern(term);
    pattern[1..pattern.len() - 1].to_string()
}

/// How the search can find `term`, one arm per place it can be in. Reading a trigram
/// index costs more than a whole page's other work, so every arm that cannot match is left
/// out and cheaper indexes are used where the term's shape allows — always with the same
/// results as matching every field:
/// - keys only hold letters, digits, `-` and `_` (a CHECK constraint);
/// - emails hold no spaces and exactly one `@` (every email is validated before it is
///   stored), so a term with an `@` inside is found by the email's local part (reversed,
///   a prefix in a btree) and domain, and a term with two `@` in no email at all;
/// - a term with a character that plain names (or ids) never hold can only be in the few
///   rows a partial index lists (the planner still takes the trigram index when those
///   are many).
pub fn search_arms(term: &str, email_index_part: Option<&str>) -> Vec<fragments::SearchArm> {
    use fragments::SearchArm::{Contains, ContainsPart, ContainsWhere, EmailAround};
    let mut arms = Vec::with_capacity(4);
    if !term.chars().any(char::is_whitespace) {
        match term.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.contains('@') => {
                let reversed: String = local.chars().rev().collect();
                arms.push(EmailAround {
                    local_reversed_pattern: format!("{}%", escape_like(&reversed)),
                    local_reversed_upper: format!("{reversed}\u{10FFFF}"),
                    local_reversed: reversed,
                    domain: format!("{}%", escape_like(domain)),
                })
            }
            Some((_, domain)) if domain.contains('@') => {}
            _ => match email_index_part {
                Some(part) if term.contains(part) => arms.push(ContainsPart {
                    expression: "lower(customers.email)",
                    part_pattern: contains_pattern(part),
                    term: term.to_string(),
                }),
                _ => arms.push(Contains("lower(customers.email)")),
            },
        }
    }
    if term.len() <= 64
        && term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        arms.push(Contains("lower(customers.key)"));
    }
    if term.chars().all(is_plain_id_char) {
        arms.push(Contains("lower(customers.external_id)"));
    } else {
        arms.push(ContainsWhere(UNUSUAL_ID, "lower(customers.external_id)"));
    }
    if term.chars().all(is_plain_name_char) {
        arms.push(Contains(NAME_EXPRESSION));
    } else {
        arms.push(ContainsWhere(UNUSUAL_NAME, NAME_EXPRESSION));
    }
    arms
}

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

/// Sets the filter's [`CustomerFilter::email_index_part`] for its search term, from the
/// server's sample of emails (terms with an `@` are found without the trigram index). A
/// sample that cannot be taken only costs speed: the whole term is looked up. Run it
/// outside a transaction (a failed sample would abort one).
pub fn narrow_email_search(conn: &mut PgConnection, samples: &EmailSamples, filter: &mut CustomerFilter) {
    filter.email_index_part = match filter.search.as_deref().and_then(normalize_search) {
        Some(term) if !term.contains('@') => samples.index_part(conn, &term).unwrap_or_else(|error| {
            tracing::warn!("searching by the whole term: no sample of emails ({error})");
            None
        }),
        _ => None,
    };
}

type BoxedCustomers<'a> = customers::BoxedQuery<'a, Pg>;

/// The filtered rows of one program, unordered.
fn filtered(program_id: i64, filter: &CustomerFilter) -> BoxedCustomers<'static> {
    let mut query = customers::table
        .filter(customers::program_id.eq(program_id))
        .into_boxed();
    if let Some(status) = filter.status.status() {
        query = query.filter(customers::status.eq(status));
    }
    if let Some(term) = filter.search.as_deref().and_then(normalize_search) {
        // Each arm is served by its own trigram index (a BitmapOr), and every arm spells
        // out the indexed expression exactly.
        query = query.filter(fragments::SearchMatch {
            arms: search_arms(
                &term,
                filter.email_index_part.as_ref().map(|index| index.part.as_str()),
            ),
            pattern: contains_pattern(&term),
        });
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

/// The filtered customers of one program as rows of `referral_standings`, which carries
/// the list's referral order (see the migration that made it). Status, refer status and
/// approval are checked on the standings themselves; a search or a creation-date range,
/// which only `customers` can answer, narrows them to the customers it matches.
fn standings_filtered(program_id: i64, filter: &CustomerFilter) -> standings::BoxedQuery<'static, Pg> {
    let mut query = standings::table
        .filter(standings::program_id.eq(program_id))
        .into_boxed();
    if let Some(status) = filter.status.status() {
        query = query.filter(standings::status.eq(status));
    }
    query = match filter.refer_status {
        Some(ReferStatus::Referred) => query.filter(standings::referrer_id.is_not_null()),
        Some(ReferStatus::NonReferred) => query.filter(standings::referrer_id.is_null()),
        None => query,
    };
    if let Some(approved) = filter.approved {
        query = query.filter(standings::approved.eq(approved));
    }
    let searched = filter.search.as_deref().and_then(normalize_search).is_some();
    if searched || filter.created_from.is_some() || filter.created_to.is_some() {
        query =
            query.filter(standings::customer_id.eq_any(filtered(program_id, filter).select(customers::id)));
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
    /// The summary of a customer already loaded.
    pub fn of(customer: &Customer) -> ReferrerSummary {
        ReferrerSummary {
            id: customer.id,
            key: customer.key.clone(),
            external_id: customer.external_id.clone(),
            email: customer.email.clone(),
            name: customer.name.clone(),
            surname: customer.surname.clone(),
        }
    }

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
pub const COUNT_LIMIT: i64 = 1000;

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
pub struct Tally {
    pub customers: i64,
    pub changes: i64,
}

/// The program's customers with this status and refer status, from the tallies (exact,
/// and as cheap with a million customers as with ten).
pub fn tally(
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

/// The program's customers with this status and refer status (see [`tally`]).
pub fn tallied_total(
    conn: &mut PgConnection,
    program_id: i64,
    status: StatusFilter,
    refer_status: Option<ReferStatus>,
) -> Result<i64, Error> {
    Ok(tally(conn, program_id, status, refer_status)?.customers)
}

/// What a filter matches: how many and, when they were few enough to be counted one by
/// one, which ones (internal ids) — pages then sort just those instead of searching again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matches {
    pub total: Total,
    ids: Option<Vec<i64>>,
    /// The list's change count when it is a tallied one (see [`Tally`]).
    pub changes: Option<i64>,
}

impl Matches {
    /// `total` customers, not known one by one.
    pub fn counted(total: Total) -> Matches {
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
pub fn matches(conn: &mut PgConnection, program_id: i64, filter: &CustomerFilter) -> Result<Matches, Error> {
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

/// The number of customers the filter matches (see [`matches`]).
pub fn total(conn: &mut PgConnection, program_id: i64, filter: &CustomerFilter) -> Result<Total, Error> {
    Ok(matches(conn, program_id, filter)?.total)
}

/// The exact number of matches, however many (for the rare page past the end of an
/// estimated list).
pub fn exact_total(conn: &mut PgConnection, program_id: i64, filter: &CustomerFilter) -> Result<i64, Error> {
    if is_tallied(filter) {
        return tallied_total(conn, program_id, filter.status, filter.refer_status);
    }
    Ok(filtered(program_id, filter).count().get_result(conn)?)
}

/// `n` to two significant digits: an estimate should not look more precise than it is.
pub fn round_estimate(n: i64) -> i64 {
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

/// Sorts whose ORDER BY expression is never NULL, so that a row comparison can continue
/// a list after a given customer (keyset pagination). Email, which may be empty, cannot.
pub fn supports_keyset(sort: SortColumn) -> bool {
    !matches!(sort, SortColumn::Email)
}

/// Where a page of the list starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// The page with this number (from 1), counted from the start of the list — or, when
    /// the total is exact and the page is in the second half, from its end.
    Page(i64),
    /// `skip` rows after the customer with this internal id (keyset pagination: as quick
    /// on page 50,000 as on page 2).
    After { id: i64, skip: i64 },
    /// `skip` rows before the customer with this internal id, read backwards.
    Before { id: i64, skip: i64 },
}

/// `ORDER BY` for the filter's sort, or its reverse (fixed text: see `fragments`).
fn order_by(filter: &CustomerFilter, reverse: bool) -> &'static str {
    let direction = if reverse {
        filter.direction.reversed()
    } else {
        filter.direction
    };
    match (filter.sort, direction) {
        (SortColumn::Created, SortDirection::Asc) => "customers.created_at ASC, customers.id ASC",
        (SortColumn::Created, SortDirection::Desc) => "customers.created_at DESC, customers.id DESC",
        (SortColumn::Email, SortDirection::Asc) => "lower(customers.email) ASC, customers.id ASC",
        (SortColumn::Email, SortDirection::Desc) => "lower(customers.email) DESC, customers.id DESC",
        (SortColumn::Name, SortDirection::Asc) => {
            "lower(coalesce(customers.name, '') || ' ' || coalesce(customers.surname, '')) ASC, customers.id ASC"
        }
        (SortColumn::Name, SortDirection::Desc) => {
            "lower(coalesce(customers.name, '') || ' ' || coalesce(customers.surname, '')) DESC, customers.id DESC"
        }
        (SortColumn::Referrals, SortDirection::Asc) => "customers.referrals_count ASC, customers.id ASC",
        (SortColumn::Referrals, SortDirection::Desc) => "customers.referrals_count DESC, customers.id DESC",
    }
}

/// [`order_by`] for the list sorted by referrals as read from `referral_standings`.
fn standings_order_by(filter: &CustomerFilter, reverse: bool) -> &'static str {
    let direction = if reverse {
        filter.direction.reversed()
    } else {
        filter.direction
    };
    match direction {
        SortDirection::Asc => "referral_standings.referrals_count ASC, referral_standings.customer_id ASC",
        SortDirection::Desc => "referral_standings.referrals_count DESC, referral_standings.customer_id DESC",
    }
}

/// [`page`] without the referrers.
pub fn page_customers(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    position: Position,
    per_page: i64,
    matches: &Matches,
) -> Result<Vec<Customer>, Error> {
    let (positions, reverse) = positions(conn, program_id, filter, position, per_page, matches)?;
    let ids: Vec<i64> = positions.iter().map(|(id, _)| *id).collect();
    let mut rows = load_in_order(conn, &ids)?;
    if reverse {
        rows.reverse();
    }
    Ok(rows)
}

/// One page of the filtered list, with each customer's referrer; `per_page` is clamped to
/// 1..=250; past the end: empty. A deferred join in two prepared statements: the page's
/// positions (internal ids and referrer ids) are read from an index alone where a covering
/// one serves the sort, then the rows of the customers and their referrers at once.
pub fn page(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    position: Position,
    per_page: i64,
    matches: &Matches,
) -> Result<Vec<CustomerRow>, Error> {
    if matches.ids.is_some() {
        // A few matches known by id (a search): both statements look rows up by id, and
        // with a list that short PostgreSQL would otherwise plan them on every call.
        crate::db::with_generic_plans(conn, |conn| {
            page_rows(conn, program_id, filter, position, per_page, matches)
        })
    } else {
        page_rows(conn, program_id, filter, position, per_page, matches)
    }
}

fn page_rows(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    position: Position,
    per_page: i64,
    matches: &Matches,
) -> Result<Vec<CustomerRow>, Error> {
    let (positions, reverse) = positions(conn, program_id, filter, position, per_page, matches)?;
    let mut wanted: Vec<i64> = positions
        .iter()
        .flat_map(|(id, referrer)| std::iter::once(*id).chain(*referrer))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut loaded: HashMap<i64, Customer> = load_rows(conn, &wanted)?
        .into_iter()
        .map(|customer| (customer.id, customer))
        .collect();
    let referrers: HashMap<i64, ReferrerSummary> = positions
        .iter()
        .filter_map(|(_, referrer)| *referrer)
        .filter_map(|id| {
            loaded
                .get(&id)
                .map(|customer| (id, ReferrerSummary::of(customer)))
        })
        .collect();
    let mut rows: Vec<CustomerRow> = positions
        .iter()
        .filter_map(|(id, _)| loaded.remove(id))
        .map(|customer| CustomerRow {
            referrer: customer.referrer_id.and_then(|id| referrers.get(&id).cloned()),
            customer,
        })
        .collect();
    if reverse {
        rows.reverse();
    }
    Ok(rows)
}

fn load_rows(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<Customer>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(customers::table
        .filter(customers::id.eq_any(ids))
        .select(Customer::as_select())
        .load(conn)?)
}

/// The customers with these internal ids, in this order.
fn load_in_order(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<Customer>, Error> {
    let mut loaded: HashMap<i64, Customer> = load_rows(conn, ids)?
        .into_iter()
        .map(|customer| (customer.id, customer))
        .collect();
    Ok(ids.iter().filter_map(|id| loaded.remove(id)).collect())
}

/// A page's customers as (id, referrer id), and whether they were read from the far end.
type PagePositions = (Vec<(i64, Option<i64>)>, bool);

/// Which customers are on the page, in the order read (reversed when `true` is returned:
/// the page was read from its far end), with each one's referrer. Read from the index
/// alone where a covering index serves the sort (a deferred join: the rows follow).
fn positions(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    position: Position,
    per_page: i64,
    matches: &Matches,
) -> Result<PagePositions, Error> {
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let (reverse, offset, limit, cursor) = match position {
        Position::Page(page) => {
            let offset = (page.max(1) - 1).saturating_mul(per_page);
            match matches.total {
                // In the second half of an exactly counted list, counting from the end
                // reads fewer index entries (the last page reads a single page's worth).
                Total::Exact(total) if offset >= total => return Ok((Vec::new(), false)),
                Total::Exact(total) if offset > total / 2 => {
                    let end = offset.saturating_add(per_page).min(total);
                    (true, total - end, end - offset, None)
                }
                _ => (false, offset, per_page, None),
            }
        }
        Position::After { id, skip } => (false, skip.max(0), per_page, Some(id)),
        Position::Before { id, skip } => (true, skip.max(0), per_page, Some(id)),
    };
    if cursor.is_some() && !supports_keyset(filter.sort) {
        return Err(Error::BadRequest(
            "This sort cannot continue from a customer.".into(),
        ));
    }
    // A short skip (a page near the start, or after a mark or one of the pager's far
    // links) is read and dropped here rather than sent as `OFFSET $n`: with the offset a
    // parameter PostgreSQL cannot cost the statement's reusable plan (it guesses that a
    // tenth of the rows are skipped) and plans every call anew, which costs more than
    // running the query. The window read is a
    // power of two of pages, so the statement texts (the limit is literal) stay few: at
    // most eight per page size, each reading at most about twice what `OFFSET` read.
    let wanted = limit;
    let (offset, limit, dropped) = if 0 < offset && offset < MARK_EVERY {
        let pages = (offset + limit - 1) / limit + 1;
        let pages = (pages as u64).next_power_of_two() as i64;
        (0, pages * limit, offset)
    } else {
        (offset, limit, 0)
    };
    // The row comparison follows the ORDER BY: "after" in a descending list is "less".
    let greater = (filter.direction == SortDirection::Asc) != reverse;
    let continuing = |keyset| {
        cursor.map(|customer_id| fragments::Continue {
            keyset,
            greater,
            customer_id,
            program_id,
        })
    };
    let positions = match &matches.ids {
        // Sorted by referrals, the order is read from `referral_standings` (no index on
        // `customers` holds the count).
        None if filter.sort == SortColumn::Referrals => {
            let mut query = standings_filtered(program_id, filter)
                .select((standings::customer_id, standings::referrer_id))
                .order(fragments::fixed::<Text>(standings_order_by(filter, reverse)));
            if let Some(after) = continuing(STANDINGS_KEYSET) {
                query = query.filter(after);
            }
            fragments::Limited { query, limit, offset }.load::<(i64, Option<i64>)>(conn)?
        }
        ids => {
            // Few matches, known one by one: sort just those. (Left to itself, PostgreSQL
            // may walk the list's index in order hoping to meet 15 matches soon, and read
            // every row.)
            let rows = match ids {
                Some(ids) => customers::table
                    .filter(customers::id.eq_any(ids.clone()))
                    .into_boxed(),
                None => filtered(program_id, filter),
            };
            let mut query = rows
                .select((customers::id, customers::referrer_id))
                .order(fragments::fixed::<Text>(order_by(filter, reverse)));
            if let Some(after) = continuing(filter.sort.keyset()) {
                query = query.filter(after);
            }
            fragments::Limited { query, limit, offset }.load::<(i64, Option<i64>)>(conn)?
        }
    };
    let page = positions
        .into_iter()
        .skip(dropped as usize)
        .take(wanted as usize)
        .collect();
    Ok((page, reverse))
}

/// One page of the filtered list by number (without referrers), with the number of
/// matching customers. `per_page` is clamped to 1..=250 and `page` to >= 1; a page past
/// the end is empty. Deep pages start from `marks` where they can.
pub fn list(
    conn: &mut PgConnection,
    marks: &PageMarks,
    program_id: i64,
    filter: &CustomerFilter,
    page_number: i64,
    per_page: i64,
) -> Result<(Vec<Customer>, Total), Error> {
    let matches = matches(conn, program_id, filter)?;
    let position = marks.position(conn, program_id, filter, page_number, per_page, &matches)?;
    let rows = page_customers(conn, program_id, filter, position, per_page, &matches)?;
    let total = matches.total;
    Ok((rows, total))
}

/// Where the export has got to: the last customer it wrote.
#[derive(Clone, Copy, Debug)]
pub struct ExportCursor {
    pub created_at: chrono::DateTime<Utc>,
    pub id: i64,
}

/// One customer as the CSV export writes it: only the columns it shows, with the date of
/// birth taken out of the metadata and the referrer's key looked up by PostgreSQL (so no
/// JSON is parsed and no second query is needed per batch).
#[derive(Debug, Queryable)]
pub struct ExportRow {
    pub id: i64,
    pub external_id: String,
    pub key: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub status: CustomerStatus,
    pub approved: bool,
    pub referrals_count: i32,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
    /// `metadata.date_of_birth` as stored (text); the export checks it is a date.
    pub date_of_birth: Option<String>,
    pub referrer_key: Option<String>,
}

/// Up to `limit` filtered customers after `after`, in creation order (oldest first): the
/// export walks the list with this. Keyset pagination: each batch is one range of an
/// index (`(created_at, id)` within the status for active or deleted customers, the
/// primary key for all of them), however far in the export is and whatever the filters.
pub fn export_batch(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    after: Option<ExportCursor>,
    limit: i64,
) -> Result<Vec<ExportRow>, Error> {
    use diesel::sql_types::Nullable;
    let mut query = filtered(program_id, filter);
    if filter.status == StatusFilter::All {
        // No index orders both statuses by time; the id is creation order too.
        if let Some(after) = after {
            query = query.filter(customers::id.gt(after.id));
        }
        query = query.order(customers::id.asc());
    } else {
        if let Some(after) = after {
            query = query.filter(fragments::CreatedAfter {
                created_at: after.created_at,
                id: after.id,
            });
        }
        query = query.order((customers::created_at.asc(), customers::id.asc()));
    }
    let columns = (
        customers::id,
        customers::external_id,
        customers::key,
        customers::email,
        customers::name,
        customers::surname,
        customers::status,
        customers::approved,
        customers::referrals_count,
        customers::created_at,
        customers::updated_at,
        fragments::fixed::<Nullable<Text>>("customers.metadata ->> 'date_of_birth'"),
        fragments::fixed::<Nullable<Text>>(
            "(SELECT referrer.key FROM customers referrer WHERE referrer.id = customers.referrer_id)",
        ),
    );
    Ok(fragments::Limited {
        query: query.select(columns),
        limit,
        offset: 0,
    }
    .load(conn)?)
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
        .filter(customers::status.eq(CustomerStatus::Active))
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
    fn search_arms_follow_the_shape_of_the_term() {
        use fragments::SearchArm::{Contains, ContainsWhere, EmailAround};
        assert_eq!(
            search_arms("ada", None),
            vec![
                Contains("lower(customers.email)"),
                Contains("lower(customers.key)"),
                Contains("lower(customers.external_id)"),
                Contains(NAME_EXPRESSION),
            ]
        );
        // A whole address: the email by its parts; ids and names only if unusual.
        assert_eq!(
            search_arms("Ada_1@acme.io", None),
            vec![
                EmailAround {
                    local_reversed: "1_adA".into(),
                    local_reversed_upper: "1_adA\u{10FFFF}".into(),
                    local_reversed_pattern: "1\\_adA%".into(),
                    domain: "acme.io%".into()
                },
                ContainsWhere(UNUSUAL_ID, "lower(customers.external_id)"),
                ContainsWhere(UNUSUAL_NAME, NAME_EXPRESSION),
            ]
        );
        // "@acme": any local part, so the trigram index; two @: no email at all.
        assert_eq!(search_arms("@acme", None)[0], Contains("lower(customers.email)"));
        assert!(!search_arms("a@b@c", None)
            .iter()
            .any(|arm| matches!(arm, EmailAround { .. })));
        assert_eq!(search_arms("a@b@c", None).len(), 2);
        // Spaces: never in an email, key or plain id.
        assert_eq!(
            search_arms("ada love", None),
            vec![
                ContainsWhere(UNUSUAL_ID, "lower(customers.external_id)"),
                Contains(NAME_EXPRESSION)
            ]
        );
        assert_eq!(
            search_arms("Zoë", None)[2],
            ContainsWhere(UNUSUAL_NAME, NAME_EXPRESSION)
        );
    }

    #[test]
    fn an_email_index_part_looks_up_the_part_and_checks_the_whole_term() {
        use fragments::SearchArm::{ContainsPart, ContainsWhere};
        assert_eq!(
            search_arms("Linus_x.25000", Some("25000")),
            vec![
                ContainsPart {
                    expression: "lower(customers.email)",
                    part_pattern: "%25000%".into(),
                    term: "Linus_x.25000".into(),
                },
                ContainsWhere(UNUSUAL_ID, "lower(customers.external_id)"),
                ContainsWhere(UNUSUAL_NAME, NAME_EXPRESSION),
            ]
        );
        // A part that is not in the term (a filter reused for another term) is ignored.
        assert_eq!(
            search_arms("ada.7", Some("25000"))[0],
            fragments::SearchArm::Contains("lower(customers.email)")
        );
        // Terms with an `@` do not use the trigram index at all.
        assert!(matches!(
            search_arms("linus.25000@acme.io", Some("25000"))[0],
            fragments::SearchArm::EmailAround { .. }
        ));
    }

    #[test]
    fn estimates_keep_two_significant_digits() {
        assert_eq!(round_estimate(7), 7);
        assert_eq!(round_estimate(1_001), 1_000);
        assert_eq!(round_estimate(1_049), 1_000);
        assert_eq!(round_estimate(1_051), 1_100);
        assert_eq!(round_estimate(124_873), 120_000);
        assert_eq!(round_estimate(998_765), 1_000_000);
    }

    #[test]
    fn every_sort_but_email_can_continue_after_a_customer() {
        assert!(supports_keyset(SortColumn::Created));
        assert!(supports_keyset(SortColumn::Referrals));
        assert!(supports_keyset(SortColumn::Name));
        assert!(!supports_keyset(SortColumn::Email));
    }

    #[test]
    fn search_terms_are_trimmed_lowercased_and_cleaned() {
        assert_eq!(normalize_search("  ADA\u{0} "), Some("ADA".to_string()));
        assert_eq!(normalize_search("   "), None);
        assert_eq!(normalize_search(&"x".repeat(500)).map(|t| t.len()), Some(200));
    }
}
