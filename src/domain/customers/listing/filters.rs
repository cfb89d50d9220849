//! What the list shows: the filters and sorts a request names, and the rows of one
//! program they select (from `customers`, or from `referral_standings` when sorted by
//! referrals).

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;

use super::search::{contains_pattern, normalize_search, search_arms};
use super::IndexPart;
use crate::db::schema::{customers, referral_standings as standings};
use crate::domain::customers::fragments;
use crate::domain::customers::CustomerStatus;

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

    /// Continuing the list after a customer, sorted by this column (see `paging::positions`).
    pub(super) fn keyset(self) -> fragments::Keyset {
        fragments::Keyset {
            table: "customers",
            id: "customers.id",
            expression: self.expression(),
        }
    }
}

/// Continuing the list sorted by referrals as read from `referral_standings`.
pub(super) const STANDINGS_KEYSET: fragments::Keyset = fragments::Keyset {
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
    /// email trigram index instead of the whole term (see `EmailSamples`; set by
    /// `narrow_email_search`). The whole term is still what every email must contain.
    pub email_index_part: Option<IndexPart>,
}

/// The expression the name trigram index is built on; search and sort use it verbatim.
pub(super) const NAME_EXPRESSION: &str =
    "lower(coalesce(customers.name, '') || ' ' || coalesce(customers.surname, ''))";

type BoxedCustomers<'a> = customers::BoxedQuery<'a, Pg>;

/// The filtered rows of one program, unordered.
pub(super) fn filtered(program_id: i64, filter: &CustomerFilter) -> BoxedCustomers<'static> {
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
/// the list's referral order (kept by triggers on `customers`). Status, refer status and
/// approval are checked on the standings themselves; a search or a creation-date range,
/// which only `customers` can answer, narrows them to the customers it matches.
pub(super) fn standings_filtered(
    program_id: i64,
    filter: &CustomerFilter,
) -> standings::BoxedQuery<'static, Pg> {
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
