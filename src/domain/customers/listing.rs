//! Finding customers: the filtered, sorted, paginated list, the export's batches, and a
//! customer's referrals. Every query is scoped by program and shaped for the indexes of
//! the migrations, so it stays quick with a million customers.
//!
//! [`CustomerList`] is the entry point for the dashboard, the API and the export; the
//! modules below are its parts: `filters` (what a request selects), `search` (how a term
//! is found), `counting` (the total), `paging` (one page's rows), with the two caches
//! `page_marks` and `email_samples`.

mod counting;
mod customer_list;
mod email_samples;
mod export;
mod filters;
mod lookups;
mod page_marks;
mod paging;
mod rows;
mod search;

pub use counting::Total;
pub use customer_list::{
    Cursor, CustomerList, ExportWalk, ListPage, ListRequest, ListedRow, PageRead, PastEnd,
};
pub use email_samples::IndexPart;
pub use export::{export_selected, ExportRow};
pub use filters::{CustomerFilter, ReferStatus, SortColumn, SortDirection, StatusFilter};
pub use lookups::{exact_matches, referrals, ExactMatch};
pub use paging::MAX_PER_PAGE;
pub use rows::{referrer_summaries, with_referrers, CustomerRow, ReferrerSummary};
// The dashboard's counts come from the same tallies as the list's totals.
pub(crate) use counting::tally;

// The parts behind `CustomerList`, private to the list.
use super::Customer;
use counting::{count_up_to, exact_total, matches, Matches};
use email_samples::EmailSamples;
use export::{export_batch, ExportCursor};
use filters::filtered;
use page_marks::PageMarks;
use paging::{order_by, supports_keyset, Position};
use search::narrow_email_search;
