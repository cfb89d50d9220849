//! The export's batches: the filtered list in creation order, by keyset.

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::filters::filtered;
use super::{CustomerFilter, StatusFilter};
use crate::db::schema::customers;
use crate::domain::customers::fragments;
use crate::domain::customers::CustomerStatus;
use crate::error::Error;

/// Where the export has got to: the last customer it wrote.
#[derive(Clone, Copy, Debug)]
pub(super) struct ExportCursor {
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

/// The columns of an [`ExportRow`].
macro_rules! export_columns {
    () => {
        (
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
            fragments::fixed::<diesel::sql_types::Nullable<Text>>("customers.metadata ->> 'date_of_birth'"),
            fragments::fixed::<diesel::sql_types::Nullable<Text>>(
                "(SELECT referrer.key FROM customers referrer WHERE referrer.id = customers.referrer_id)",
            ),
        )
    };
}

/// Up to `limit` filtered customers after `after`, in creation order (oldest first): the
/// export walks the list with this. Keyset pagination: each batch is one range of an
/// index (`(created_at, id)` within the status for active or deleted customers, the
/// primary key for all of them), however far in the export is and whatever the filters.
pub(super) fn export_batch(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &CustomerFilter,
    after: Option<ExportCursor>,
    limit: i64,
) -> Result<Vec<ExportRow>, Error> {
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
    let columns = export_columns!();
    Ok(fragments::Limited {
        query: query.select(columns),
        limit,
        offset: 0,
    }
    .load(conn)?)
}

/// The customers of the program with these keys, as the export writes them, in creation
/// order (the export of a selection ticked on the list).
pub fn export_selected(
    conn: &mut PgConnection,
    program_id: i64,
    keys: &[String],
) -> Result<Vec<ExportRow>, Error> {
    Ok(customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::key.eq_any(keys))
        .order((customers::created_at.asc(), customers::id.asc()))
        .select(export_columns!())
        .load(conn)?)
}
