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

pub use counting::{
    exact_total, matches, round_estimate, tallied_total, tally, total, Matches, Tally, Total, COUNT_LIMIT,
};
pub use customer_list::{Cursor, CustomerList, ExportWalk, ListPage, ListRequest, ListedRow, PastEnd};
pub use email_samples::{EmailSamples, IndexPart};
pub use export::{export_batch, ExportCursor, ExportRow};
pub use filters::{CustomerFilter, ReferStatus, SortColumn, SortDirection, StatusFilter};
pub use lookups::{exact_matches, referrals, ExactMatch};
pub use page_marks::{PageMarks, MARK_EVERY};
pub use paging::{list, supports_keyset, Position, MAX_PER_PAGE};
pub use rows::{referrer_summaries, with_referrers, CustomerRow, ReferrerSummary};
pub use search::{contains_pattern, narrow_email_search, normalize_search, search_arms};

// The caches' own reads use these parts too.
use super::Customer;
use filters::filtered;
use paging::order_by;
