//! Reading one page of the list: where it starts (a page number, or after or before a
//! customer), which customers are on it, then their rows.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::filters::{filtered, standings_filtered, STANDINGS_KEYSET};
use super::{
    CustomerFilter, CustomerRow, Matches, PageRead, ReferrerSummary, SortColumn, SortDirection, Total,
};
use crate::db::schema::{customers, referral_standings as standings};
use crate::domain::customers::fragments;
use crate::domain::customers::Customer;
use crate::error::Error;

pub const MAX_PER_PAGE: i64 = 250;

/// Sorts whose ORDER BY expression is never NULL, so that a row comparison can continue
/// a list after a given customer (keyset pagination). Email, which may be empty, cannot.
pub(super) fn supports_keyset(sort: SortColumn) -> bool {
    !matches!(sort, SortColumn::Email)
}

/// Where a page of the list starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Position {
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
pub(super) fn order_by(filter: &CustomerFilter, reverse: bool) -> &'static str {
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
pub(super) fn page_customers(conn: &mut PgConnection, at: &PageRead<'_>) -> Result<Vec<Customer>, Error> {
    let (positions, reverse) = positions(conn, at)?;
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
pub(super) fn page(conn: &mut PgConnection, at: &PageRead<'_>) -> Result<Vec<CustomerRow>, Error> {
    if at.matches.ids.is_some() {
        // A few matches known by id (a search): both statements look rows up by id, and
        // with a list that short PostgreSQL would otherwise plan them on every call.
        crate::db::with_generic_plans(conn, |conn| page_rows(conn, at))
    } else {
        page_rows(conn, at)
    }
}

fn page_rows(conn: &mut PgConnection, at: &PageRead<'_>) -> Result<Vec<CustomerRow>, Error> {
    let (positions, reverse) = positions(conn, at)?;
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

/// The stretch of the list a page's statement reads.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// Read from the far end (the rows come in reverse).
    reverse: bool,
    offset: i64,
    limit: i64,
    /// Continue after (or, reversed, before) this customer.
    cursor: Option<i64>,
}

/// The window of `position`; `None` when it is past the end of an exactly counted list.
fn window(position: Position, per_page: i64, matches: &Matches) -> Option<Window> {
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let (reverse, offset, limit, cursor) = match position {
        Position::Page(page) => {
            let offset = (page.max(1) - 1).saturating_mul(per_page);
            match matches.total {
                // In the second half of an exactly counted list, counting from the end
                // reads fewer index entries (the last page reads a single page's worth).
                Total::Exact(total) if offset >= total => return None,
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
    Some(Window {
        reverse,
        offset,
        limit,
        cursor,
    })
}

/// Which customers are on the page, in the order read (reversed when `true` is returned:
/// the page was read from its far end), with each one's referrer. Read from the index
/// alone where a covering index serves the sort (a deferred join: the rows follow).
fn positions(conn: &mut PgConnection, at: &PageRead<'_>) -> Result<PagePositions, Error> {
    let PageRead {
        program_id,
        filter,
        position,
        per_page,
        matches,
    } = *at;
    let Some(window) = window(position, per_page, matches) else {
        return Ok((Vec::new(), false));
    };
    if window.cursor.is_some() && !supports_keyset(filter.sort) {
        return Err(Error::BadRequest(
            "This sort cannot continue from a customer.".into(),
        ));
    }
    let page = read_window(conn, program_id, filter, &window, matches)?;
    Ok((page, window.reverse))
}

/// The (id, referrer id) of the customers in `window`, in the order read.
fn read_window(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    window: &Window,
    matches: &Matches,
) -> Result<Vec<(i64, Option<i64>)>, Error> {
    let Window {
        reverse,
        offset,
        limit,
        cursor,
    } = *window;
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
    Ok(match &matches.ids {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sort_but_email_can_continue_after_a_customer() {
        assert!(supports_keyset(SortColumn::Created));
        assert!(supports_keyset(SortColumn::Referrals));
        assert!(supports_keyset(SortColumn::Name));
        assert!(!supports_keyset(SortColumn::Email));
    }
}
