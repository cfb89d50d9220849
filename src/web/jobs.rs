//! Background jobs' pages: the program's recent jobs, one job's progress and result, the
//! CSV of the rows it skipped, and cancelling a job that is still running.
//!
//! The job page works without JavaScript: while the job runs it refreshes itself (a
//! `<meta http-equiv="refresh">`), showing the rows done out of the total, the rate and
//! the time left.

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use askama::Template;
use serde::Deserialize;

use crate::db;
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
}

impl JobPage {
    fn count<N: std::borrow::Borrow<i64>>(&self, n: N) -> String {
        thousands(*n.borrow())
    }

    fn rate_text(&self) -> Option<String> {
        let rate = self.job.rate(self.now)?;
        Some(if rate >= 10.0 {
            format!("{} rows/s", thousands(rate.round() as i64))
        } else {
            format!("{rate:.1} rows/s")
        })
    }

    fn time_left_text(&self) -> Option<String> {
        let seconds = self.job.seconds_left(self.now)?;
        Some(match seconds {
            0..=59 => format!("about {seconds} s left"),
            60..=3599 => format!("about {} min left", (seconds + 30) / 60),
            _ => format!("about {:.1} h left", seconds as f64 / 3600.0),
        })
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

pub async fn show(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<JobPath>,
) -> Result<HttpResponse, Error> {
    let (program_id, job_id) = (page.program.id, path.id);
    let (job, skipped, reasons) = db::run(&state.pool, move |conn| {
        let job = jobs::find(conn, program_id, job_id)?;
        let skipped = jobs::skipped_rows(conn, job.id, 0, SKIPPED_SHOWN)?
            .into_iter()
            .map(|(_, row)| row)
            .collect();
        let reasons = jobs::skipped_reasons(conn, job.id)?;
        Ok((job, skipped, reasons))
    })
    .await?;
    render(&JobPage {
        page,
        job,
        skipped,
        reasons,
        now: chrono::Utc::now(),
        refresh_secs: REFRESH_SECS,
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
