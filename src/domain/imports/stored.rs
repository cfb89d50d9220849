//! The dashboard's imports: the uploaded file kept in `customer_imports` between the steps
//! (map, dry run, import), with the choices made and the last report.
//!
//! The import itself is a background job (`jobs::JobKind::CustomersImport`): [`start`]
//! claims the upload (`uploaded` → `importing`) and queues its job in one transaction; the
//! job thread runs [`run_job`] — the whole import, its report and the upload's new status
//! in the job's one batch, so they commit together or not at all. A process that dies
//! mid-import commits nothing and the job is run again from the start by the next one to
//! claim it; a job that fails for good gives the upload back ([`job_failed`]). So an upload
//! is never left `importing` without a job that will finish it.

use std::cell::Cell;

use diesel::prelude::*;
use serde_json::{json, Value};

use super::{import, CsvFile, Mapping, Mode, Options, Policy, Progress, Report, Unwatched, STEPS};
use crate::db::schema::customer_imports;
use crate::domain::jobs::kinds::{Batch, Context};
use crate::domain::jobs::phases::{self, Phases};
use crate::domain::jobs::{self, Job, JobKind, NewJob, SkippedRow};
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
    /// The job that imports it, or imported it, or last tried to.
    pub job_id: Option<i64>,
}

impl StoredImport {
    pub fn is_imported(&self) -> bool {
        self.status == "imported"
    }

    pub fn is_importing(&self) -> bool {
        self.status == "importing"
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
    job_id: Option<i64>,
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
            customer_imports::job_id,
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
        job_id: row.job_id,
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
    if stored.is_importing() {
        return Err(Error::invalid("file", "This file is being imported."));
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

/// How [`start`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// The import's job is queued.
    Queued(i64),
    /// The upload was submitted before (the form sent twice): its job.
    Already(i64),
}

/// Queues the import of upload `id` as a background job, once: the upload is claimed
/// (`uploaded` → `importing`) and the job written in one transaction, so the form sent
/// twice starts one job (the second gets [`Started::Already`]). Choices no row can be
/// imported with are refused here, before anything is queued.
pub fn start(conn: &mut PgConnection, program: &Program, actor: &Actor, id: i64) -> Result<Started, Error> {
    conn.transaction(|conn| {
        let stored = find(conn, program.id, id)?;
        let claimed = diesel::update(
            customer_imports::table
                .filter(customer_imports::id.eq(id))
                .filter(customer_imports::status.eq("uploaded")),
        )
        .set(customer_imports::status.eq("importing"))
        .execute(conn)?;
        if claimed == 0 {
            let (status, job_id): (String, Option<i64>) = customer_imports::table
                .find(id)
                .select((customer_imports::status, customer_imports::job_id))
                .first(conn)?;
            return match job_id {
                Some(job_id) if status != "uploaded" => Ok(Started::Already(job_id)),
                _ => Err(Error::invalid("file", "This file cannot be imported now.")),
            };
        }
        super::check_choices(&stored.file, &stored.mapping, stored.mode)?;
        let started = jobs::create(
            conn,
            actor,
            NewJob {
                program_id: program.id,
                kind: JobKind::CustomersImport,
                params: json!({ "import_id": id }),
                form_token: None,
                total: stored.file.estimated_rows() as i64,
                described: json!({
                    "import_id": id,
                    "file": stored.file_name,
                    "mode": stored.mode.code(),
                    "policy": stored.policy,
                }),
            },
            None,
        )?;
        let job_id = started.job().id;
        phases::insert(conn, job_id, STEPS, "Waiting for the job thread")?;
        diesel::update(customer_imports::table.find(id))
            .set(customer_imports::job_id.eq(job_id))
            .execute(conn)?;
        Ok(Started::Queued(job_id))
    })
}

/// An import job's one batch: the whole import of its upload (see the module
/// documentation), in the batch's transaction. Its steps go to the job's phases; the
/// refused rows become the job's skipped rows (line, and each "column: message").
pub fn run_job(conn: &mut PgConnection, job: &Job, context: &Context<'_>) -> Result<Batch, Error> {
    let id = job
        .params
        .get("import_id")
        .and_then(Value::as_i64)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("import job {} names no upload", job.id)))?;
    // Reading a large upload and keeping a large report may take longer than a page may.
    diesel::sql_query("SET LOCAL statement_timeout = 0").execute(conn)?;
    let stored = find(conn, job.program_id, id)?;
    if !stored.is_importing() || stored.job_id != Some(job.id) {
        return Err(Error::invalid(
            "file",
            "This file is not waiting for this import any more.",
        ));
    }
    let steps = JobSteps {
        phases: context.phases,
        job_id: job.id,
        step: Cell::new(0),
    };
    let report = import(
        conn,
        context.program,
        &job.actor(),
        &stored.file,
        &stored.mapping,
        &options(&stored, false),
        &steps,
    )?;
    let status = if report.written || report.complete() {
        "imported"
    } else {
        "uploaded"
    };
    keep_report(conn, id, &report, status)?;
    let skipped = report
        .refusals
        .lines()
        .map(|line| SkippedRow {
            line: Some(i64::from(line)),
            reason: report
                .refusals
                .messages(line)
                .into_iter()
                .map(|(column, message)| format!("{column}: {message}"))
                .collect::<Vec<_>>()
                .join(" | "),
            ..Default::default()
        })
        .collect();
    Ok(Batch {
        done: if report.written {
            (report.created + report.updated) as i64
        } else {
            0
        },
        skipped,
        cursor: None,
        finished: true,
        total: Some(report.rows as i64),
    })
}

/// An import job failed for good: its upload can be imported again.
pub fn job_failed(conn: &mut PgConnection, job: &Job) -> Result<(), Error> {
    diesel::update(
        customer_imports::table
            .filter(customer_imports::job_id.eq(job.id))
            .filter(customer_imports::status.eq("importing")),
    )
    .set(customer_imports::status.eq("uploaded"))
    .execute(conn)?;
    Ok(())
}

/// The import's steps, as a job's phases.
struct JobSteps<'a> {
    phases: &'a dyn Phases,
    job_id: i64,
    step: Cell<i32>,
}

impl Progress for JobSteps<'_> {
    fn step(&self, label: &str, total: u64) {
        let step = self.step.get() + 1;
        self.step.set(step);
        self.phases.step(self.job_id, step, STEPS, label, total);
    }

    fn done(&self, done: u64) {
        self.phases.done(self.job_id, done);
    }

    /// Shown as under way: no count moves until the statement ends.
    fn step_at_once(&self, label: &str, _: u64) {
        self.step(label, 0);
    }
}

/// What the job page shows of an import job's upload.
pub struct ImportOfJob {
    pub id: i64,
    pub file_name: String,
    pub status: String,
    pub report: Option<Report>,
}

/// The upload job `job_id` imports (or imported), if it is an import job of the program.
pub fn of_job(conn: &mut PgConnection, program_id: i64, job_id: i64) -> Result<Option<ImportOfJob>, Error> {
    let row: Option<(i64, String, String, Option<Value>)> = customer_imports::table
        .filter(customer_imports::program_id.eq(program_id))
        .filter(customer_imports::job_id.eq(job_id))
        .select((
            customer_imports::id,
            customer_imports::file_name,
            customer_imports::status,
            customer_imports::report,
        ))
        .first(conn)
        .optional()?;
    Ok(row.map(|(id, file_name, status, report)| ImportOfJob {
        id,
        file_name,
        status,
        // A dry run after an import that wrote nothing replaces its report.
        report: report
            .and_then(|report| serde_json::from_value::<Report>(report).ok())
            .filter(|report| !report.dry_run),
    }))
}
