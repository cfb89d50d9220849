//! `GET /customers/export.csv`: the filtered list as CSV, streamed.
//!
//! A blocking task walks the filtered customers in batches by keyset (after the last
//! customer's `(created_at, id)`),
//! encodes each batch with the `csv` crate and sends it down a bounded channel; the
//! response streams the channel. Memory stays at a few batches whatever the size of the
//! program, a slow client slows the task down instead of piling rows up, and a client that
//! goes away stops it. The export is in creation order (oldest first) whatever the list's
//! sort, because that order is what keyset pagination can walk cheaply: each batch is one
//! index range, so a date-filtered export reads only the matching customers.

use std::borrow::Cow;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use chrono::SecondsFormat;

use super::list::ListParams;
use crate::db::DbPool;
use crate::domain::customers::{self, CustomerFilter, CustomerRow, ExportCursor};
use crate::domain::programs::Program;
use crate::error::Error;
use crate::web::context::Page;
use crate::AppState;

const BATCH_SIZE: i64 = 1000;
/// Batches encoded ahead of the client.
const CHANNEL_DEPTH: usize = 4;

const HEADER: [&str; 13] = [
    "id",
    "key",
    "email",
    "name",
    "surname",
    "status",
    "approved",
    "referring_customer_key",
    "referrals_count",
    "referral_link",
    "date_of_birth",
    "created_at",
    "updated_at",
];

/// A cell a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, or a leading tab or
/// carriage return) gets a leading `'`, so opening the export never runs anything.
pub fn defuse(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

fn record(program: &Program, row: &CustomerRow) -> [String; 13] {
    let customer = &row.customer;
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    [
        customer.external_id.clone(),
        customer.key.clone(),
        text(&customer.email),
        text(&customer.name),
        text(&customer.surname),
        customer.status.clone(),
        customer.approved.to_string(),
        row.referrer
            .as_ref()
            .map(|referrer| referrer.key.clone())
            .unwrap_or_default(),
        customer.referrals_count.to_string(),
        program.referral_url(&customer.key),
        customer
            .date_of_birth()
            .map(|date| date.to_string())
            .unwrap_or_default(),
        customer.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        customer.updated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    ]
}

/// Encodes rows as CSV (quoting and escaping by the `csv` crate).
fn encode<I, R>(records: I) -> Result<Bytes, Error>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator,
    R::Item: AsRef<str>,
{
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(64 * 1024));
    for record in records {
        writer
            .write_record(record.into_iter().map(|cell| defuse(cell.as_ref()).into_owned()))
            .map_err(|error| Error::Internal(anyhow::anyhow!("csv: {error}")))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|error| Error::Internal(anyhow::anyhow!("csv: {error}")))?;
    Ok(Bytes::from(bytes))
}

type Chunks = tokio::sync::mpsc::Sender<Result<Bytes, Error>>;

/// Runs on a blocking thread: reads batch after batch and sends them on. A connection is
/// taken per batch, so a slow download never holds one for long.
fn produce(pool: DbPool, program: Program, filter: CustomerFilter, chunks: Chunks) {
    let send = |chunk: Result<Bytes, Error>| chunks.blocking_send(chunk).is_ok();
    if !send(encode([HEADER])) {
        return;
    }
    let mut after = None;
    loop {
        let batch = pool
            .get()
            .map_err(|_| Error::Unavailable)
            .and_then(|mut conn| customers::export_batch(&mut conn, program.id, &filter, after, BATCH_SIZE));
        let rows = match batch {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!("customer export stopped: {error}");
                send(Err(error));
                return;
            }
        };
        let Some(last) = rows.last() else {
            return;
        };
        after = Some(ExportCursor {
            created_at: last.customer.created_at,
            id: last.customer.id,
        });
        let done = (rows.len() as i64) < BATCH_SIZE;
        if !send(encode(rows.iter().map(|row| record(&program, row)))) || done {
            return;
        }
    }
}

pub async fn export_csv(
    state: web::Data<AppState>,
    page: Page,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let filter = ListParams::from_pairs(&query).filter;
    let filename = format!(
        "customers-{}-{}.csv",
        page.program.slug,
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    );
    let (sender, receiver) = tokio::sync::mpsc::channel(CHANNEL_DEPTH);
    let (pool, program) = (state.pool.clone(), page.program.clone());
    actix_web::rt::task::spawn_blocking(move || produce(pool, program, filter, sender));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_defused() {
        assert_eq!(defuse("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(defuse("+1"), "'+1");
        assert_eq!(defuse("-2"), "'-2");
        assert_eq!(defuse("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(defuse("ada@example.com"), "ada@example.com");
        assert_eq!(defuse(""), "");
    }

    #[test]
    fn cells_are_quoted_by_the_csv_writer() {
        let bytes = encode([["a,b", "say \"hi\"", "line\nbreak"]]).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\"\n"
        );
    }
}
