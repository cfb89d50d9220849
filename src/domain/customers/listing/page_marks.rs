//! Page numbers that stay quick deep into a long list: keyset pagination behind page
//! numbers.
//!
//! Page 5,000 of the list by creation date starts after 74,985 customers, and reading past
//! them in the list's index on every view costs a hundred times a page's own work. Instead
//! the server remembers which customer is at every [`MARK_EVERY`]-th place of the list (a
//! *mark*) and reads a deep page as "skip fewer than `MARK_EVERY` after the nearest mark",
//! as cheap as a Next link.
//!
//! Marks are exact, never approximate: each list's marks are kept with the list's change
//! count from `customer_tallies` (raised in the same transaction as every insert, delete,
//! status or referrer change, and by any change of a creation time), and are dropped as
//! soon as the count has moved. Only tallied lists (no search, approval or date filter) in
//! creation order are marked: their order changes only when someone joins or leaves them,
//! whereas referral counts and names change all day. Marks are taken lazily, up to the
//! deepest page asked for, in one walk along the covering index — what reading that page
//! by number cost once anyway. Pages in the second half of a list are counted from its end,
//! as when read by number, so the walk there is never longer than half the list either.
//! A list whose customers change every second gains nothing and loses nothing: every deep
//! page is then read by skipping from the start.

use std::collections::HashMap;
use std::sync::Mutex;

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::{filtered, order_by, Matches, Position, ReferStatus, SortColumn, SortDirection, StatusFilter};
use super::{CustomerFilter, MAX_PER_PAGE};
use crate::db::schema::customers;
use crate::domain::customers::fragments;
use crate::error::Error;

/// One mark per this many customers: a deep page then reads fewer than this many index
/// entries before its own, and the marks of even a long list take little memory.
const MARK_EVERY: i64 = 250;

/// Which list the marks belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct MarkedList {
    program_id: i64,
    status: StatusFilter,
    refer_status: Option<ReferStatus>,
    direction: SortDirection,
}

/// `ids[i]` is the customer at place `(i + 1) * MARK_EVERY` (counted from 1) of the list
/// as it was when its change count was `changes`.
#[derive(Debug, Default)]
struct Marks {
    changes: i64,
    ids: Vec<i64>,
}

/// Where a page starts from a mark: `skip` customers after the `mark`-th mark (counted
/// from 1) of the list, or of the list in the other direction when `from_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MarkPlace {
    from_end: bool,
    mark: usize,
    skip: i64,
}

impl MarkPlace {
    /// Where page `page_number` of a list of `total` starts; `None` when the page is read
    /// by its number (near either end, or past the end).
    fn of(page_number: i64, per_page: i64, total: i64) -> Option<MarkPlace> {
        let per_page = per_page.clamp(1, MAX_PER_PAGE);
        let offset = (page_number.max(1) - 1).saturating_mul(per_page);
        if offset >= total {
            return None;
        }
        // Like a page read by number, a page in the second half is found from the end of
        // the list: with the marks of the list in the other direction (which are also
        // that list's own marks).
        let from_end = offset > total / 2;
        let place = if from_end {
            total - offset - per_page
        } else {
            offset
        };
        // Near either end the page is read cheaply by number.
        if place < MARK_EVERY {
            return None;
        }
        let mark = place / MARK_EVERY;
        Some(MarkPlace {
            from_end,
            mark: mark as usize,
            skip: place - mark * MARK_EVERY,
        })
    }
}

/// What [`PageMarks::lookup`] found.
enum Known {
    Mark(i64),
    Fewer(Vec<i64>),
}

/// The marks of every list looked at, shared by the server's workers.
#[derive(Debug, Default)]
pub(super) struct PageMarks {
    lists: Mutex<HashMap<MarkedList, Marks>>,
}

impl PageMarks {
    /// Where page `page_number` (of `per_page` customers) of the filtered list starts:
    /// after a mark when the page is deep in a marked list, else by its number.
    pub(super) fn position(
        &self,
        conn: &mut PgConnection,
        program_id: i64,
        filter: &CustomerFilter,
        page_number: i64,
        per_page: i64,
        matches: &Matches,
    ) -> Result<Position, Error> {
        let by_number = Position::Page(page_number);
        let Some(changes) = matches.changes else {
            return Ok(by_number);
        };
        if filter.sort != SortColumn::Created {
            return Ok(by_number);
        }
        let Some(place) = MarkPlace::of(page_number, per_page, matches.total.value()) else {
            return Ok(by_number);
        };
        let direction = if place.from_end {
            filter.direction.reversed()
        } else {
            filter.direction
        };
        let list = MarkedList {
            program_id,
            status: filter.status,
            refer_status: filter.refer_status,
            direction,
        };
        let needed = place.mark;
        let mark = match self.lookup(list, changes, needed) {
            Known::Mark(mark) => mark,
            Known::Fewer(mut ids) => {
                // Walk on from the last mark known (without holding the lock meanwhile).
                let walked = CustomerFilter {
                    direction,
                    ..filter.clone()
                };
                let more = walk(conn, program_id, &walked, ids.last().copied(), needed - ids.len())?;
                ids.extend(more);
                let Some(&mark) = ids.get(needed - 1) else {
                    // The list is shorter than its tally said a moment ago: read by number.
                    return Ok(by_number);
                };
                self.remember(list, changes, ids);
                mark
            }
        };
        let skip = place.skip;
        Ok(if place.from_end {
            Position::Before { id: mark, skip }
        } else {
            Position::After { id: mark, skip }
        })
    }

    /// The `needed`-th mark of `list` at change count `changes`, or the fewer marks known
    /// (none when the count has moved) to walk on from. Only the latter copies the marks:
    /// a page view that finds its mark reads one number under the lock.
    fn lookup(&self, list: MarkedList, changes: i64, needed: usize) -> Known {
        let lists = self.lists.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match lists.get(&list) {
            Some(marks) if marks.changes == changes => match marks.ids.get(needed - 1) {
                Some(&mark) => Known::Mark(mark),
                None => Known::Fewer(marks.ids.clone()),
            },
            _ => Known::Fewer(Vec::new()),
        }
    }

    /// Keeps `ids` as the marks of `list` at `changes`, unless more of that count (or a
    /// newer count) are known already.
    fn remember(&self, list: MarkedList, changes: i64, ids: Vec<i64>) {
        let mut lists = self.lists.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let marks = lists.entry(list).or_default();
        let newer = marks.changes > changes || (marks.changes == changes && marks.ids.len() >= ids.len());
        if !newer {
            *marks = Marks { changes, ids };
        }
    }
}

/// The next `count` marks of the list after the customer `after` (a mark, or the start of
/// the list when `None`): one walk along the list's index, numbering the rows in SQL.
fn walk(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    after: Option<i64>,
    count: usize,
) -> Result<Vec<i64>, Error> {
    let mut query = filtered(program_id, filter)
        .select((customers::id, customers::created_at))
        .order(fragments::fixed::<Text>(order_by(filter, false)));
    if let Some(customer_id) = after {
        query = query.filter(fragments::Continue {
            keyset: SortColumn::Created.keyset(),
            greater: filter.direction == SortDirection::Asc,
            customer_id,
            program_id,
        });
    }
    let window_order = match filter.direction {
        SortDirection::Asc => "walk.created_at ASC, walk.id ASC",
        SortDirection::Desc => "walk.created_at DESC, walk.id DESC",
    };
    Ok(fragments::EveryNth {
        query,
        window_order,
        limit: (count as i64).saturating_mul(MARK_EVERY),
        every: MARK_EVERY,
    }
    .load::<i64>(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_pages_start_from_the_nearest_mark_before_them() {
        let place = |page| MarkPlace::of(page, 50, 2_600);
        // Page 26 of 50 starts right after the fifth mark (place 1,250); page 27 skips a
        // page after it.
        let after_fifth = |skip| MarkPlace {
            from_end: false,
            mark: 5,
            skip,
        };
        assert_eq!(place(26), Some(after_fifth(0)));
        assert_eq!(place(27), Some(after_fifth(50)));
        // Near the start the page is read by its number.
        assert_eq!(place(3), None);
        assert_eq!(place(5), None);
        // In the second half, from the end: page 40 (places 1,951–2,000) is read backwards
        // after skipping 100 past the second mark from the end (the 500th oldest customer).
        assert_eq!(
            place(40),
            Some(MarkPlace {
                from_end: true,
                mark: 2,
                skip: 100
            })
        );
        // Near the end, and past it: by number.
        assert_eq!(place(50), None);
        assert_eq!(place(53), None);
        assert_eq!(place(60), None);
    }
}
