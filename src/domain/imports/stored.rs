//! The dashboard's imports: the uploaded file kept in `customer_imports` between the steps
//! (map, dry run, import), with the choices made and the last report.

use diesel::prelude::*;
use serde_json::Value;

use super::{import, CsvFile, Mapping, Mode, Options, Policy, Report, Unwatched};
use crate::db::schema::customer_imports;
use crate::domain::programs::Program;
use crate::domain::Actor;
use crate::error::Error;

/// The largest file the dashboard takes (a bigger one goes through `referdesk import`).
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
const MAX_FILE_NAME_CHARS: usize = 255;

/// An upload and where it stands.
pub struct StoredImport {
    pub id: i64,
    pub file_name: String,
    pub file: CsvFile,
    pub mapping: Mapping,
    pub mode: Mode,
    pub policy: Policy,
    /// `uploaded`, `importing` or `imported`.
    pub status: String,
    /// The last dry run's or the import's report.
    pub report: Option<Report>,
}

impl StoredImport {
    pub fn is_imported(&self) -> bool {
        self.status == "imported"
    }
}

#[derive(Queryable)]
struct Row {
    id: i64,
    file_name: String,
    content: Vec<u8>,
    mapping: Option<Value>,
    mode: String,
    policy: String,
    status: String,
    report: Option<Value>,
}

/// Keeps an uploaded file (refused as a whole when it is not a CSV file Referdesk can
/// read); returns its id.
pub fn upload(
    conn: &mut PgConnection,
    program_id: i64,
    member_id: Option<i64>,
    file_name: &str,
    bytes: Vec<u8>,
) -> Result<i64, Error> {
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(super::file_error(format!(
            "The file is larger than {} MB; import it with `referdesk import customers`.",
            MAX_UPLOAD_BYTES / 1024 / 1024
        )));
    }
    let file = CsvFile::parse(bytes)?;
    let name: String = file_name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILE_NAME_CHARS)
        .collect();
    let mapping = serde_json::to_value(file.guess_mapping()).map_err(anyhow::Error::from)?;
    Ok(diesel::insert_into(customer_imports::table)
        .values((
            customer_imports::program_id.eq(program_id),
            customer_imports::member_id.eq(member_id),
            customer_imports::file_name.eq(if name.is_empty() {
                "upload.csv".into()
            } else {
                name
            }),
            customer_imports::content.eq(file.bytes()),
            customer_imports::mapping.eq(mapping),
        ))
        .returning(customer_imports::id)
        .get_result(conn)?)
}

pub fn find(conn: &mut PgConnection, program_id: i64, id: i64) -> Result<StoredImport, Error> {
    let row: Row = customer_imports::table
        .filter(customer_imports::program_id.eq(program_id))
        .filter(customer_imports::id.eq(id))
        .select((
            customer_imports::id,
            customer_imports::file_name,
            customer_imports::content,
            customer_imports::mapping,
            customer_imports::mode,
            customer_imports::policy,
            customer_imports::status,
            customer_imports::report,
        ))
        .first(conn)?;
    let file = CsvFile::parse(row.content)?;
    let mapping = row
        .mapping
        .and_then(|mapping| serde_json::from_value(mapping).ok())
        .filter(|mapping: &Mapping| mapping.0.len() == file.headers.len())
        .unwrap_or_else(|| file.guess_mapping());
    Ok(StoredImport {
        id: row.id,
        file_name: row.file_name,
        file,
        mapping,
        mode: Mode::from_code(&row.mode).unwrap_or(Mode::Create),
        policy: if row.policy == "valid_rows" {
            Policy::ValidRows
        } else {
            Policy::AllOrNothing
        },
        status: row.status,
        report: row.report.and_then(|report| serde_json::from_value(report).ok()),
    })
}

/// Keeps the choices of the mapping form (until the file is imported).
pub fn choose(
    conn: &mut PgConnection,
    program_id: i64,
    id: i64,
    mapping: &Mapping,
    mode: Mode,
    policy: Policy,
) -> Result<(), Error> {
    let mapping = serde_json::to_value(mapping).map_err(anyhow::Error::from)?;
    diesel::update(
        customer_imports::table
            .filter(customer_imports::program_id.eq(program_id))
            .filter(customer_imports::id.eq(id))
            .filter(customer_imports::status.eq("uploaded")),
    )
    .set((
        customer_imports::mapping.eq(mapping),
        customer_imports::mode.eq(mode.code()),
        customer_imports::policy.eq(if policy == Policy::ValidRows {
            "valid_rows"
        } else {
            "all_or_nothing"
        }),
    ))
    .execute(conn)?;
    Ok(())
}

fn options(stored: &StoredImport, dry_run: bool) -> Options {
    Options {
        mode: stored.mode,
        policy: stored.policy,
        dry_run,
        source: stored.file_name.clone(),
    }
}

fn keep_report(conn: &mut PgConnection, id: i64, report: &Report, status: &str) -> Result<(), Error> {
    let value = serde_json::to_value(report).map_err(anyhow::Error::from)?;
    diesel::update(customer_imports::table.find(id))
        .set((
            customer_imports::report.eq(value),
            customer_imports::status.eq(status),
            customer_imports::finished_at.eq(Some(chrono::Utc::now())),
        ))
        .execute(conn)?;
    Ok(())
}

/// Checks every row with the chosen mapping and mode, writes nothing, keeps the report.
pub fn dry_run(conn: &mut PgConnection, program: &Program, actor: &Actor, id: i64) -> Result<Report, Error> {
    let stored = find(conn, program.id, id)?;
    if stored.is_imported() {
        return Err(Error::invalid("file", "This file was imported already."));
    }
    let report = import(
        conn,
        program,
        actor,
        &stored.file,
        &stored.mapping,
        &options(&stored, true),
        &Unwatched,
    )?;
    keep_report(conn, id, &report, &stored.status)?;
    Ok(report)
}

/// Imports the file once: the upload is claimed (`uploaded` → `importing`) before the
/// import runs, so the form sent twice imports once (`Ok(None)` for the repeat). When
/// nothing was written (all or nothing, with refused rows) it can be tried again.
pub fn run(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    id: i64,
) -> Result<Option<Report>, Error> {
    let claimed = diesel::update(
        customer_imports::table
            .filter(customer_imports::program_id.eq(program.id))
            .filter(customer_imports::id.eq(id))
            .filter(customer_imports::status.eq("uploaded")),
    )
    .set(customer_imports::status.eq("importing"))
    .execute(conn)?;
    if claimed == 0 {
        find(conn, program.id, id)?;
        return Ok(None);
    }
    let stored = find(conn, program.id, id)?;
    let outcome = import(
        conn,
        program,
        actor,
        &stored.file,
        &stored.mapping,
        &options(&stored, false),
        &Unwatched,
    );
    match outcome {
        Ok(report) => {
            let status = if report.written || report.complete() {
                "imported"
            } else {
                "uploaded"
            };
            keep_report(conn, id, &report, status)?;
            Ok(Some(report))
        }
        Err(error) => {
            diesel::update(customer_imports::table.find(id))
                .set(customer_imports::status.eq("uploaded"))
                .execute(conn)?;
            Err(error)
        }
    }
}
