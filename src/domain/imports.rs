//! Importing customers from a CSV file, for the `import customers` command and the
//! dashboard's import pages.
//!
//! A file is read once ([`CsvFile`]: UTF-8, comma or semicolon), its columns mapped to
//! fields ([`Mapping`], guessed from the header), and each row checked by the rules every
//! customer is held to (`customers::NewCustomer`, the same parsing as the dashboard's form
//! and the API) and against the other rows (`rows`). The rows that pass are copied
//! (`COPY`) into a temporary staging table, checked against the program's customers and
//! written with a few set-based statements (`staging`), in one transaction: either every
//! row or none ([`Policy::AllOrNothing`]), or the valid rows with a report of the others
//! ([`Policy::ValidRows`]). A dry run makes every check, then rolls back.
//!
//! What an import writes is what a signup writes — the customer, their default referral
//! link (their key as its code), exact `referrals_count`s, the tallies and standings kept
//! by the triggers on `customers` — except per-row events: the audit log gets one
//! `customer.import` event for the whole import, and no webhook event or signup reward is
//! emitted for imported customers (they joined elsewhere, before).

mod file;
mod report;
mod rows;
mod staging;
pub mod stored;

use std::collections::BTreeMap;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use file::{file_error, CsvFile, Field, Mapping, MAX_COLUMNS};
pub use report::refused_rows_csv;
pub use rows::{formula_message, parse_created_at};

use crate::domain::programs::Program;
use crate::domain::{audit, Actor};
use crate::error::Error;

/// Create-only, or update the customers a row matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every row is a new customer; a key, id or email already taken refuses the row.
    Create,
    /// A row whose key matches a customer updates it (only the mapped fields); others create.
    UpsertByKey,
    UpsertById,
    UpsertByEmail,
}

impl Mode {
    pub fn code(self) -> &'static str {
        match self {
            Mode::Create => "create",
            Mode::UpsertByKey => "upsert_key",
            Mode::UpsertById => "upsert_id",
            Mode::UpsertByEmail => "upsert_email",
        }
    }

    pub fn from_code(code: &str) -> Option<Mode> {
        [
            Mode::Create,
            Mode::UpsertByKey,
            Mode::UpsertById,
            Mode::UpsertByEmail,
        ]
        .into_iter()
        .find(|mode| mode.code() == code)
    }

    /// The field a row is matched by.
    fn matched_by(self) -> Option<Field> {
        match self {
            Mode::Create => None,
            Mode::UpsertByKey => Some(Field::Key),
            Mode::UpsertById => Some(Field::Id),
            Mode::UpsertByEmail => Some(Field::Email),
        }
    }
}

/// What to do when some rows are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Write nothing unless every row is valid.
    AllOrNothing,
    /// Write the valid rows; report the others.
    ValidRows,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    pub policy: Policy,
    /// Check everything, write nothing.
    pub dry_run: bool,
    /// Shown in the audit event (the file's name).
    pub source: String,
}

/// The refused rows: per line, each (column, message).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Refusals(BTreeMap<i32, Vec<(String, String)>>);

impl Refusals {
    pub fn add(&mut self, line: i32, column: String, message: String) {
        self.0.entry(line).or_default().push((column, message));
    }

    pub fn contains(&self, line: i32) -> bool {
        self.0.contains_key(&line)
    }

    pub fn count_of(&self, line: i32) -> usize {
        self.0.get(&line).map_or(0, Vec::len)
    }

    /// How many rows are refused.
    pub fn rows(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn lines(&self) -> impl Iterator<Item = i32> + '_ {
        self.0.keys().copied()
    }

    /// One line's (column, message) pairs.
    pub fn messages(&self, line: i32) -> Vec<(String, String)> {
        self.0.get(&line).cloned().unwrap_or_default()
    }

    /// Every (line, column, message), by line.
    pub fn iter(&self) -> impl Iterator<Item = (i32, &str, &str)> + '_ {
        self.0.iter().flat_map(|(line, messages)| {
            messages
                .iter()
                .map(move |(column, message)| (*line, column.as_str(), message.as_str()))
        })
    }
}

/// What an import did (or, dry, would do).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Rows read after the header.
    pub rows: u64,
    /// New customers written (or to be written).
    pub created: u64,
    /// Existing customers updated (or to be updated).
    pub updated: u64,
    pub refusals: Refusals,
    /// Whether anything was written.
    pub written: bool,
    pub dry_run: bool,
}

impl Report {
    /// Whether every row was (or would be) imported.
    pub fn complete(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// How many steps [`import`] reports (reading, checking the rows against each other,
/// copying, checking against the program's customers, writing, recording); a dry run or
/// an import that writes nothing stops after the fourth.
pub const STEPS: i32 = 6;

/// Follows an import's steps (the command's progress bar, a job's phases).
pub trait Progress {
    /// A step starts; `total` is its number of units (0 when unknown).
    fn step(&self, label: &str, total: u64);
    /// Units of the current step done so far.
    fn done(&self, done: u64);
    /// A step of `total` units done by one statement: nothing is counted until it ends.
    /// (The command's bar shows it as a bar all the same; a job's page as under way.)
    fn step_at_once(&self, label: &str, total: u64) {
        self.step(label, total);
    }
}

/// Nobody watches.
pub struct Unwatched;

impl Progress for Unwatched {
    fn step(&self, _: &str, _: u64) {}
    fn done(&self, _: u64) {}
}

/// Logs each step with the time since the import started (the steps' durations, for
/// whoever wonders where an import's time goes).
struct Logged<'a> {
    inner: &'a dyn Progress,
    started: std::time::Instant,
}

impl Progress for Logged<'_> {
    fn step(&self, label: &str, total: u64) {
        self.log(label, total);
        self.inner.step(label, total);
    }

    fn done(&self, done: u64) {
        self.inner.done(done);
    }

    fn step_at_once(&self, label: &str, total: u64) {
        self.log(label, total);
        self.inner.step_at_once(label, total);
    }
}

/// Refuses choices no row can be imported with (a mapping that leaves out the field an
/// upsert matches by, a field chosen twice, …), as `Error::Invalid` on the field `file`,
/// every problem in the one answer: what [`import`] checks before reading a row, for a form
/// to answer at once.
pub fn check_choices(file: &CsvFile, mapping: &Mapping, mode: Mode) -> Result<(), Error> {
    let mut problems = Vec::new();
    if let Some(field) = mode.matched_by() {
        if !mapping.maps(&field) {
            problems.push(format!(
                "To update customers by {}, choose the column that holds it.",
                field.label().to_lowercase()
            ));
        }
    }
    problems.extend(rows::mapping_problems(file, mapping));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(rows::file_errors(problems))
    }
}

impl Logged<'_> {
    fn log(&self, label: &str, total: u64) {
        tracing::info!(
            "import: {label} ({total} units) at {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Checks and imports the file's rows into the program (see the module documentation).
/// A refusal of the whole file (encoding, mapping, unreadable CSV) is an `Error::Invalid`
/// on the field `file`; refused rows are in the report.
pub fn import(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    file: &CsvFile,
    mapping: &Mapping,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Report, Error> {
    check_choices(file, mapping, options.mode)?;
    let mut refusals = Refusals::default();
    let progress = &Logged {
        inner: progress,
        started: std::time::Instant::now(),
    };
    progress.step("Reading rows", file.estimated_rows());
    let checked = rows::check(
        file,
        mapping,
        &mut refusals,
        |done| progress.done(done),
        || progress.step("Checking the rows against each other", 0),
    )?;
    let referrer_column = mapping
        .column_of(&Field::Referrer)
        .map(|column| file.headers[column].clone())
        .unwrap_or_default();
    let total = checked.rows.len() as u64;
    let outcome = conn.transaction(|conn| {
        let mut stage = staging::Staging::create(conn, program, mapping, &file.headers, options.mode)?;
        progress.step("Copying rows to the database", total);
        stage.copy(conn, &checked.rows, |copied| progress.done(copied))?;
        progress.step("Checking rows against the program's customers", 0);
        for (line, column, message) in stage.check(conn)? {
            refusals.add(line, column, message);
        }
        rows::refuse_referred_by_refused(&checked.referrer_lines, &referrer_column, &mut refusals);
        let write = !options.dry_run && (options.policy == Policy::ValidRows || refusals.is_empty());
        stage.drop_refused(conn, &refusals.lines().collect::<Vec<_>>())?;
        let (created, updated) = stage.counts(conn)?;
        let mut report = Report {
            rows: checked.total,
            created,
            updated,
            refusals: std::mem::take(&mut refusals),
            written: false,
            dry_run: options.dry_run,
        };
        if !write {
            // Nothing of this transaction is kept.
            return Err(Rollback(report));
        }
        progress.step_at_once("Writing customers", created + updated);
        stage.merge(conn)?;
        progress.done(created + updated);
        progress.step("Recording the import", 0);
        record_import(conn, program, actor, options, &report)?;
        report.written = created + updated > 0;
        Ok(report)
    });
    match outcome {
        Ok(report) => {
            if report.created > 50_000 {
                analyse_customers(conn);
            }
            Ok(report)
        }
        Err(Rollback(report)) => Ok(report),
        Err(Failed(error)) => Err(error),
    }
}

/// The audit event of a written import.
fn record_import(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    options: &Options,
    report: &Report,
) -> Result<(), Error> {
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(program.id),
            action: "customer.import",
            subject_type: "import",
            subject_id: None,
            customer_id: None,
            before: None,
            after: Some(json!({
                "source": options.source,
                "mode": options.mode.code(),
                "policy": options.policy,
                "rows": report.rows,
                "created": report.created,
                "updated": report.updated,
                "refused": report.refusals.rows(),
            })),
        },
    )
}

/// Fresh statistics for the list's plans; a big import changes the table's size. The
/// import is committed: a failure here (a page's statement limit) is only logged,
/// autovacuum analyses the tables later anyway.
fn analyse_customers(conn: &mut PgConnection) {
    let analysed = diesel::sql_query("ANALYZE customers, referral_standings, referral_links").execute(conn);
    if let Err(error) = analysed {
        tracing::warn!("could not analyse the customers after an import: {error}");
    }
}

/// How the import's transaction ends: a dry run or a refused all-or-nothing import rolls
/// back with its report; an error rolls back too.
enum Outcome {
    Rollback(Report),
    Failed(Error),
}
use Outcome::{Failed, Rollback};

impl From<diesel::result::Error> for Outcome {
    fn from(error: diesel::result::Error) -> Self {
        Failed(error.into())
    }
}

impl From<Error> for Outcome {
    fn from(error: Error) -> Self {
        Failed(error)
    }
}
