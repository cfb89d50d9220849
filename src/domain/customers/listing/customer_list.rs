//! The customer list's one entry point: a program and a parsed request in, a page and its
//! total out. The dashboard's list, the API's list and the export all go through
//! [`CustomerList`], which keeps the two caches that make long lists quick (the page marks
//! and the sample of emails) so that no caller has to know about them.

use std::sync::Arc;

use diesel::PgConnection;

use super::paging::{page, page_customers};
use super::{
    count_up_to, exact_total, export_batch, matches, narrow_email_search, supports_keyset, Customer,
    CustomerFilter, CustomerRow, EmailSamples, ExportCursor, ExportRow, Matches, PageMarks, Position,
    SortColumn, Total,
};
use crate::error::Error;

/// Which page of which list, as the caller parsed it.
#[derive(Clone, Debug)]
pub struct ListRequest {
    pub filter: CustomerFilter,
    /// From 1; any number, however far past the end.
    pub page: i64,
    pub per_page: i64,
    /// Where the page the link was on ended or began, when the link carries it.
    pub cursor: Option<Cursor>,
    pub past_end: PastEnd,
}

/// What a page number past the end of the list shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PastEnd {
    /// The real last page: the dashboard follows old links and hand-edited addresses.
    #[default]
    LastPage,
    /// No rows, on the page asked for: the API answers exactly what was asked.
    Empty,
}

/// `After`: the link was on page `page`, whose last row is customer `id` (internal id);
/// `Before`: whose first row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    After { page: i64, id: i64 },
    Before { page: i64, id: i64 },
}

/// A bulk action's confirmation counts matches one by one up to this many.
pub const BULK_COUNT_LIMIT: i64 = 100_000;

/// A cursor continues at most this many pages away from the page it was made on.
const MAX_CURSOR_PAGES: i64 = 10;

impl Cursor {
    /// Where page `wanted` starts, continuing from this cursor — when the cursor fits that
    /// page and the sort can be continued at all.
    pub(super) fn position(self, wanted: i64, per_page: i64, sort: SortColumn) -> Option<Position> {
        if !supports_keyset(sort) {
            return None;
        }
        match self {
            Cursor::After { page, id } if wanted > page && wanted - page <= MAX_CURSOR_PAGES => {
                Some(Position::After {
                    id,
                    skip: (wanted - page - 1) * per_page,
                })
            }
            Cursor::Before { page, id } if wanted < page && page - wanted <= MAX_CURSOR_PAGES => {
                Some(Position::Before {
                    id,
                    skip: (page - wanted - 1) * per_page,
                })
            }
            _ => None,
        }
    }
}

/// The page [`ListedRow::read`] reads: where it is in which filtered list. Only
/// [`CustomerList`] makes one.
pub struct PageRead<'a> {
    pub(super) program_id: i64,
    pub(super) filter: &'a CustomerFilter,
    pub(super) position: Position,
    pub(super) per_page: i64,
    pub(super) matches: &'a Matches,
}

/// How a page's rows are read: the dashboard's with their referrers ([`CustomerRow`]), the
/// API's without (it loads referrers together with the referral links).
pub trait ListedRow: Sized {
    fn read(conn: &mut PgConnection, at: &PageRead<'_>) -> Result<Vec<Self>, Error>;

    /// The customer's internal id.
    fn id(&self) -> i64;
}

impl ListedRow for CustomerRow {
    fn read(conn: &mut PgConnection, at: &PageRead<'_>) -> Result<Vec<Self>, Error> {
        page(conn, at)
    }

    fn id(&self) -> i64 {
        self.customer.id
    }
}

impl ListedRow for Customer {
    fn read(conn: &mut PgConnection, at: &PageRead<'_>) -> Result<Vec<Self>, Error> {
        page_customers(conn, at)
    }

    fn id(&self) -> i64 {
        self.id
    }
}

/// A page of the list: its rows, the list's total, and the page number the rows are on.
#[derive(Debug)]
pub struct ListPage<R> {
    pub rows: Vec<R>,
    pub total: Total,
    pub number: i64,
    /// Whether the list's sort can continue after a row (see [`Cursor`]).
    continuable: bool,
}

impl<R: ListedRow> ListPage<R> {
    /// The internal ids of the first and last rows, for links that continue from them;
    /// `None` when the page is empty or its sort cannot be continued.
    pub fn cursor_ids(&self) -> Option<(i64, i64)> {
        let (first, last) = (self.rows.first()?, self.rows.last()?);
        self.continuable.then(|| (first.id(), last.id()))
    }
}

/// The number of pages of `total` rows (at least one, even when empty).
fn last_page(total: i64, per_page: i64) -> i64 {
    ((total + per_page - 1) / per_page).max(1)
}

/// The customer list of every program, with its caches; one per server, cheap to clone.
#[derive(Clone, Default)]
pub struct CustomerList {
    marks: Arc<PageMarks>,
    samples: Arc<EmailSamples>,
}

impl CustomerList {
    /// The page asked for: by the link's cursor when it has one (keyset: constant time
    /// however deep), else by number (deep pages start from a page mark). With
    /// [`PastEnd::LastPage`] a number past the end is clamped to the last page when the
    /// total is exact, and a page past the end of an estimated list is the real last page.
    pub fn page<R: ListedRow>(
        &self,
        conn: &mut PgConnection,
        program_id: i64,
        request: &ListRequest,
    ) -> Result<ListPage<R>, Error> {
        let (wanted, per_page) = (request.page, request.per_page);
        let mut filter = request.filter.clone();
        narrow_email_search(conn, &self.samples, &mut filter);
        let filter = &filter;
        let matches = matches(conn, program_id, filter)?;
        let total = matches.total;
        let clamps = request.past_end == PastEnd::LastPage;
        let number = if clamps && total.is_exact() {
            wanted.min(last_page(total.value(), per_page))
        } else {
            wanted
        };
        let read = |conn: &mut PgConnection, position, matches| {
            R::read(
                conn,
                &PageRead {
                    program_id,
                    filter,
                    position,
                    per_page,
                    matches,
                },
            )
        };
        let found = |rows, total, number| ListPage {
            rows,
            total,
            number,
            continuable: supports_keyset(filter.sort),
        };
        let continued = request
            .cursor
            .and_then(|cursor| cursor.position(wanted, per_page, filter.sort));
        if let Some(position) = continued {
            let rows = read(conn, position, &matches)?;
            if !rows.is_empty() {
                return Ok(found(rows, total, number));
            }
        }
        let by_number = self
            .marks
            .position(conn, program_id, filter, number, per_page, &matches)?;
        let rows = read(conn, by_number, &matches)?;
        if rows.is_empty() && clamps && number > 1 && !total.is_exact() {
            let exact = Matches::counted(Total::Exact(exact_total(conn, program_id, filter)?));
            let last = last_page(exact.total.value(), per_page);
            let rows = read(conn, Position::Page(last), &exact)?;
            return Ok(found(rows, exact.total, last));
        }
        Ok(found(rows, total, number))
    }

    /// A walk through the filtered list for the export (see [`ExportWalk`]).
    pub fn export(&self, program_id: i64, filter: CustomerFilter) -> ExportWalk {
        self.walk_from(program_id, filter, None)
    }

    /// The export's walk, continuing after the customer `after` (`(created_at, id)`, as
    /// [`ExportWalk::reached`] gave it): how a bulk job resumes.
    pub fn walk_from(
        &self,
        program_id: i64,
        filter: CustomerFilter,
        after: Option<(chrono::DateTime<chrono::Utc>, i64)>,
    ) -> ExportWalk {
        ExportWalk {
            samples: self.samples.clone(),
            program_id,
            filter,
            after: after.map(|(created_at, id)| ExportCursor { created_at, id }),
            narrowed: false,
        }
    }

    /// How many customers match `filter`, for a bulk action's confirmation: exact up to
    /// [`BULK_COUNT_LIMIT`] (or from the tallies, however many), estimated beyond.
    pub fn total(
        &self,
        conn: &mut PgConnection,
        program_id: i64,
        filter: &CustomerFilter,
    ) -> Result<Total, Error> {
        let mut filter = filter.clone();
        narrow_email_search(conn, &self.samples, &mut filter);
        let listed = matches(conn, program_id, &filter)?.total;
        if listed.is_exact() {
            return Ok(listed);
        }
        Ok(match count_up_to(conn, program_id, &filter, BULK_COUNT_LIMIT)? {
            Some(counted) => Total::Exact(counted),
            None => Total::About(listed.value().max(BULK_COUNT_LIMIT + 1)),
        })
    }
}

/// The export's walk: the filtered customers in batches, in creation order (oldest
/// first), each batch continuing after the last customer of the one before.
pub struct ExportWalk {
    samples: Arc<EmailSamples>,
    program_id: i64,
    filter: CustomerFilter,
    after: Option<ExportCursor>,
    narrowed: bool,
}

impl ExportWalk {
    /// The next batch of at most `limit` customers; empty once the walk is through. Each
    /// batch may come on another connection (the export takes one per batch).
    pub fn next_batch(&mut self, conn: &mut PgConnection, limit: i64) -> Result<Vec<ExportRow>, Error> {
        if !self.narrowed {
            narrow_email_search(conn, &self.samples, &mut self.filter);
            self.narrowed = true;
        }
        let rows = export_batch(conn, self.program_id, &self.filter, self.after, limit)?;
        if let Some(last) = rows.last() {
            self.after = Some(ExportCursor {
                created_at: last.created_at,
                id: last.id,
            });
        }
        Ok(rows)
    }

    /// The last customer the walk has given (`(created_at, id)`), to continue after it.
    pub fn reached(&self) -> Option<(chrono::DateTime<chrono::Utc>, i64)> {
        self.after.map(|after| (after.created_at, after.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_continue_only_where_they_fit() {
        let after = Cursor::After { page: 5000, id: 77 };
        assert_eq!(
            after.position(5001, 15, SortColumn::Created),
            Some(Position::After { id: 77, skip: 0 })
        );
        assert_eq!(
            after.position(5003, 15, SortColumn::Created),
            Some(Position::After { id: 77, skip: 30 })
        );
        // Backwards, too far, or a sort that cannot continue: counted by number instead.
        assert_eq!(after.position(4999, 15, SortColumn::Created), None);
        assert_eq!(after.position(6000, 15, SortColumn::Created), None);
        assert_eq!(after.position(5001, 15, SortColumn::Email), None);
        let before = Cursor::Before { page: 5000, id: 9 };
        assert_eq!(
            before.position(4998, 50, SortColumn::Referrals),
            Some(Position::Before { id: 9, skip: 50 })
        );
    }
}
