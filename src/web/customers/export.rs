//! `GET /customers/export.csv`: the filtered list as CSV, streamed.
//!
//! One blocking task walks the filtered customers in batches by keyset (after the last
//! customer's `(created_at, id)`) while a second encodes the batch read before with the
//! `csv` crate and sends it down a bounded channel; the response streams the channel.
//! Memory stays at a few batches whatever the size of the program, a slow client slows
//! both tasks down instead of piling rows up, and a client that
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
use crate::domain::customers::listing::ExportWalk;
use crate::domain::customers::{CustomerFilter, ExportRow};
use crate::domain::programs::Program;
use crate::error::Error;
use crate::web::context::Page;
use crate::AppState;

const BATCH_SIZE: i64 = 1000;
/// Batches encoded ahead of the client.
const CHANNEL_DEPTH: usize = 4;
/// Batches read ahead of the encoder.
const BATCHES_AHEAD: usize = 2;

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

/// Encodes one batch: the `csv` crate quotes and escapes, [`defuse`] guards formulas.
/// Cells are written straight from the rows, without copying them into records first.
fn encode_batch(referral_url_prefix: &str, rows: &[ExportRow]) -> Result<Bytes, Error> {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 256));
    let mut link = String::with_capacity(referral_url_prefix.len() + 32);
    let csv_error = |error: csv::Error| Error::Internal(anyhow::anyhow!("csv: {error}"));
    for row in rows {
        let text = |value: &Option<String>| defuse(value.as_deref().unwrap_or_default()).into_owned();
        link.clear();
        link.push_str(referral_url_prefix);
        link.push_str(&row.key);
        let date_of_birth = row
            .date_of_birth
            .as_deref()
            .and_then(|value| chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
            .map(|date| date.to_string())
            .unwrap_or_default();
        // Every cell that holds text from outside goes through `defuse` (a key may start
        // with `-`); the others are numbers, booleans, dates and the status.
        let cells: [&str; 13] = [
            &defuse(&row.external_id),
            &defuse(&row.key),
            &text(&row.email),
            &text(&row.name),
            &text(&row.surname),
            row.status.as_str(),
            if row.approved { "true" } else { "false" },
            &text(&row.referrer_key),
            &row.referrals_count.to_string(),
            &defuse(&link),
            &date_of_birth,
            &row.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            &row.updated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        ];
        writer.write_record(cells).map_err(csv_error)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|error| Error::Internal(anyhow::anyhow!("csv: {error}")))?;
    Ok(Bytes::from(bytes))
}

/// Encodes rows as CSV (quoting and escaping by the `csv` crate, formulas defused).
fn encode<I, R>(records: I) -> Result<Bytes, Error>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator,
    R::Item: AsRef<str>,
{
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(4 * 1024));
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
type Batches = std::sync::mpsc::SyncSender<Result<Vec<ExportRow>, Error>>;

/// Runs on a blocking thread: reads batch after batch and hands them to the encoder. A
/// connection is taken per batch, so a slow download never holds one for long. Stops when
/// the encoder has gone (the client left, or encoding failed).
fn read_batches(pool: DbPool, mut walk: ExportWalk, batches: Batches) {
    loop {
        let batch = pool
            .get()
            .map_err(|_| Error::Unavailable)
            .and_then(|mut conn| walk.next_batch(&mut conn, BATCH_SIZE));
        let rows = match batch {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!("customer export stopped: {error}");
                let _ = batches.send(Err(error));
                return;
            }
        };
        let done = (rows.len() as i64) < BATCH_SIZE;
        if rows.is_empty() || batches.send(Ok(rows)).is_err() || done {
            return;
        }
    }
}

/// Runs on a second blocking thread: encodes what [`read_batches`] reads while it reads
/// the next batch, and sends the CSV on to the response.
fn encode_batches(
    program: Program,
    batches: std::sync::mpsc::Receiver<Result<Vec<ExportRow>, Error>>,
    chunks: Chunks,
) {
    let send = |chunk: Result<Bytes, Error>| chunks.blocking_send(chunk).is_ok();
    if !send(encode([HEADER])) {
        return;
    }
    let referral_url_prefix = program.referral_url("");
    for batch in batches {
        let chunk = batch.and_then(|rows| encode_batch(&referral_url_prefix, &rows));
        let failed = chunk.is_err();
        if !send(chunk) || failed {
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
    Ok(stream_filtered(&state, &page.program, filter))
}

/// The name a downloaded export gets.
fn filename(program: &Program) -> String {
    format!(
        "customers-{}-{}.csv",
        program.slug,
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    )
}

fn csv_response(program: &Program) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", filename(program)),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    response
}

/// Every customer matching `filter`, streamed.
pub fn stream_filtered(state: &AppState, program: &Program, filter: CustomerFilter) -> HttpResponse {
    let (sender, receiver) = tokio::sync::mpsc::channel(CHANNEL_DEPTH);
    // Reading and encoding overlap on two threads; batches read ahead wait in a small
    // channel, so memory stays at a few batches however large the export.
    let (batch_sender, batch_receiver) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
    let (pool, walk) = (
        // The request's database (a replica's, with replicas), read after it answered.
        state.pool.for_request(),
        state.customer_list.export(program.id, filter),
    );
    actix_web::rt::task::spawn_blocking(move || read_batches(pool, walk, batch_sender));
    let program_for_encoder = program.clone();
    actix_web::rt::task::spawn_blocking(move || encode_batches(program_for_encoder, batch_receiver, sender));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    csv_response(program).streaming(body)
}

/// The customers with these keys (a selection, at most a few hundred), in one piece.
pub fn selected(program: &Program, rows: &[ExportRow]) -> Result<HttpResponse, Error> {
    let mut body = encode([HEADER])?.to_vec();
    body.extend_from_slice(&encode_batch(&program.referral_url(""), rows)?);
    Ok(csv_response(program).body(body))
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
