//! Background jobs' pages: the program's recent jobs, one job's progress and result, the
//! CSV of the rows it skipped, and cancelling a job that is still running.
//!
//! The job page works without JavaScript: while the job runs it refreshes itself (its
//! `#job-live` region fetched again and replaced by `static/live.js`; without JavaScript a
//! `<meta http-equiv="refresh">` in `<noscript>` reloads the page), showing the rows done out of the total, the rate and
//! the time left. An import (one transaction) shows its step instead — step 3 of 6,
//! "Copying rows to the database", 40,000 of 100,000 rows — and once done what it
//! created, updated and refused, with the refused rows to download.

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use askama::Template;
use serde::Deserialize;

use crate::db;
use crate::domain::imports::stored::{self, ImportOfJob};
use crate::domain::jobs::phases::{self, Phase};
use crate::domain::jobs::{self, Job, SkippedRow, SKIPPED_SHOWN};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::customers::export::defuse;
use crate::web::paging::{thousands, ListUrl, Pager};
use crate::web::{redirect, render};
use crate::AppState;

const PER_PAGE: i64 = 25;
/// Skipped rows read per query of the CSV.
const CSV_BATCH: i64 = 5000;
/// Seconds between two refreshes of a running job's page.
pub const REFRESH_SECS: u32 = 2;

#[derive(Deserialize)]
pub struct JobPath {
    id: i64,
}

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<i64>,
}

#[derive(Template)]
#[template(path = "jobs/index.html")]
struct JobsPage {
    page: Page,
    jobs: Vec<Job>,
    pager: Pager,
}

pub async fn index(
    state: web::Data<AppState>,
    page: Page,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let wanted = query.page.unwrap_or(1).max(1);
    let (jobs, total) = db::run(&state.pool, move |conn| {
        let total = jobs::count(conn, program_id)?;
        let pager = Pager::new(ListUrl::new("/jobs"), "page", wanted, PER_PAGE, total);
        let offset = (pager.page - 1) * PER_PAGE;
        Ok((jobs::recent(conn, program_id, offset, PER_PAGE)?, total))
    })
    .await?;
    render(&JobsPage {
        pager: Pager::new(ListUrl::new("/jobs"), "page", wanted, PER_PAGE, total),
        jobs,
        page,
    })
}

#[derive(Template)]
#[template(path = "jobs/show.html")]
struct JobPage {
    page: Page,
    job: Job,
    skipped: Vec<SkippedRow>,
    reasons: Vec<(String, i64)>,
    now: chrono::DateTime<chrono::Utc>,
    refresh_secs: u32,
    /// The step of a one-transaction job (an import) while it runs.
    phase: Option<Phase>,
    /// The upload an import job imports.
    import: Option<ImportOfJob>,
}

impl JobPage {
    /// The percent the bar shows: of the current step for a job that reports steps (none
    /// while a step of one statement runs: the bar is then shown as under way).
    fn bar_percent(&self) -> Option<i64> {
        match &self.phase {
            Some(phase) => phase.percent(),
            None => Some(self.job.percent()),
        }
    }

    /// The line under the bar of a job that reports steps.
    fn phase_text(&self) -> Option<String> {
        let phase = self.phase.as_ref()?;
        if phase.step == 0 {
            return Some(format!("{} …", phase.label));
        }
        let mut text = format!("Step {} of {}: {}", phase.step, phase.steps, phase.label);
        if phase.total > 0 {
            text.push_str(&format!(
                " · {} of {} rows",
                thousands(phase.done),
                thousands(phase.total)
            ));
            if let Some(rate) = phase.rate(self.now) {
                text.push_str(&format!(" · {}", rate_words(rate)));
            }
            if let Some(seconds) = phase.seconds_left(self.now) {
                text.push_str(&format!(" · {}", left_words(seconds)));
            }
        } else {
            text.push_str(" …");
        }
        Some(text)
    }

    fn import_summary(&self) -> Option<String> {
        let report = self.import.as_ref()?.report.as_ref()?;
        Some(crate::web::imports::import_summary(report))
    }

    fn count<N: std::borrow::Borrow<i64>>(&self, n: N) -> String {
        thousands(*n.borrow())
    }

    fn rate_text(&self) -> Option<String> {
        self.job.rate(self.now).map(rate_words)
    }

    fn time_left_text(&self) -> Option<String> {
        self.job.seconds_left(self.now).map(left_words)
    }

    fn is_running(&self) -> bool {
        !self.job.status.is_finished()
    }

    fn more_skipped(&self) -> bool {
        self.job.skipped > self.skipped.len() as i64
    }

    /// Where the job's customers are listed again, when it started from the list.
    fn list_href(&self) -> Option<String> {
        let query = self.job.params.get("list_query")?.as_str()?;
        Some(if query.is_empty() {
            "/customers".to_string()
        } else {
            format!("/customers?{query}")
        })
    }
}

fn rate_words(rate: f64) -> String {
    if rate >= 10.0 {
        format!("{} rows/s", thousands(rate.round() as i64))
    } else {
        format!("{rate:.1} rows/s")
    }
}

fn left_words(seconds: i64) -> String {
    match seconds {
        0..=59 => format!("about {seconds} s left"),
        60..=3599 => format!("about {} min left", (seconds + 30) / 60),
        _ => format!("about {:.1} h left", seconds as f64 / 3600.0),
    }
}

pub async fn show(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<JobPath>,
) -> Result<HttpResponse, Error> {
    let (program_id, job_id) = (page.program.id, path.id);
    let (job, skipped, reasons, phase, import) = db::run(&state.pool, move |conn| {
        let job = jobs::find(conn, program_id, job_id)?;
        let skipped = jobs::skipped_rows(conn, job.id, 0, SKIPPED_SHOWN)?
            .into_iter()
            .map(|(_, row)| row)
            .collect();
        let reasons = jobs::skipped_reasons(conn, job.id)?;
        let (phase, import) = if job.kind.is_one_transaction() {
            let phase = if job.status.is_finished() {
                None
            } else {
                phases::find(conn, job.id)?
            };
            let mut import = stored::of_job(conn, program_id, job.id)?;
            if job.status != jobs::JobStatus::Done {
                // The report there is an earlier one's (a dry run, an earlier try).
                if let Some(import) = import.as_mut() {
                    import.report = None;
                }
            }
            (phase, import)
        } else {
            (None, None)
        };
        Ok((job, skipped, reasons, phase, import))
    })
    .await?;
    render(&JobPage {
        page,
        job,
        skipped,
        reasons,
        now: chrono::Utc::now(),
        refresh_secs: REFRESH_SECS,
        phase,
        import,
    })
}

pub async fn cancel(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<JobPath>,
) -> Result<HttpResponse, Error> {
    let (program_id, job_id, actor) = (page.program.id, path.id, page.actor());
    let result = db::run(&state.pool, move |conn| {
        jobs::cancel(conn, &actor, program_id, job_id)
    })
    .await;
    match result {
        Ok(job) => page.flash(
            "success",
            format!(
                "Job #{} is cancelled after {} rows; what it did stays done.",
                job.id,
                thousands(job.handled())
            ),
        ),
        Err(Error::Invalid { message, .. }) => page.flash("error", message),
        Err(error) => return Err(error),
    }
    Ok(redirect(&format!("/jobs/{job_id}")))
}

/// The skipped rows as CSV, streamed in batches.
pub async fn skipped_csv(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<JobPath>,
) -> Result<HttpResponse, Error> {
    let (program_id, job_id) = (page.program.id, path.id);
    // The job must be the program's: checked before anything streams.
    let job = db::run(&state.pool, move |conn| jobs::find(conn, program_id, job_id)).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, Error>>(4);
    let pool = state.pool.clone();
    actix_web::rt::task::spawn_blocking(move || {
        let header = encode(&[vec!["line", "customer_key", "email", "reason"]]);
        if sender.blocking_send(header).is_err() {
            return;
        }
        let mut after = 0;
        loop {
            let batch = pool
                .get()
                .map_err(|_| Error::Unavailable)
                .and_then(|mut conn| jobs::skipped_rows(&mut conn, job.id, after, CSV_BATCH));
            let rows = match batch {
                Ok(rows) => rows,
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            };
            let Some((last, _)) = rows.last() else {
                return;
            };
            after = *last;
            let full = rows.len() as i64 == CSV_BATCH;
            let records: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(_, row)| {
                    vec![
                        row.line.map(|line| line.to_string()).unwrap_or_default(),
                        row.customer_key.unwrap_or_default(),
                        row.email.unwrap_or_default(),
                        row.reason,
                    ]
                })
                .collect();
            if sender.blocking_send(encode(&records)).is_err() || !full {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"job-{job_id}-skipped.csv\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

/// Rows as CSV: quoted by the `csv` crate, formulas defused.
fn encode<S: AsRef<str>>(records: &[Vec<S>]) -> Result<Bytes, Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for record in records {
        writer
            .write_record(record.iter().map(|cell| defuse(cell.as_ref()).into_owned()))
            .map_err(|error| Error::Internal(anyhow::anyhow!("csv: {error}")))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|error| Error::Internal(anyhow::anyhow!("csv: {error}")))?;
    Ok(Bytes::from(bytes))
}
