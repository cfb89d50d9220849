//! Importing customers from the dashboard (admins): upload a CSV file, map its columns
//! (guessed from the header), choose create-only or an upsert and all-or-nothing or the
//! valid rows, dry run with the per-row report, import, and download the refused rows.
//! The work is `domain::imports`; the file waits in `customer_imports` between steps.
//! The dry run answers in the request; the import is a background job
//! (`stored::start`): the form redirects at once to the job's page and its progress.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use futures_util::StreamExt;

use crate::db;
use crate::domain::imports::stored::{self, Started, StoredImport, MAX_UPLOAD_BYTES};
use crate::domain::imports::{self, Field, Mapping, Mode, Policy, Report};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::customers::export::defuse;
use crate::web::forms::{rerender, FormErrors};
use crate::web::{redirect, render};
use crate::AppState;

/// Refusals listed on the page; the download has them all.
const SHOWN_REFUSALS: usize = 200;
/// How long the dashboard waits for a dry run (a bigger file belongs to the command).
const DRY_RUN_WAIT: Duration = Duration::from_secs(600);

#[derive(Template)]
#[template(path = "imports/upload.html")]
struct UploadPage {
    page: Page,
    errors: FormErrors,
    max_megabytes: usize,
}

pub async fn upload_form(page: Page) -> Result<HttpResponse, Error> {
    render(&UploadPage {
        page,
        errors: FormErrors::default(),
        max_megabytes: MAX_UPLOAD_BYTES / 1024 / 1024,
    })
}

/// Takes the file of a `multipart/form-data` upload (its field `file`).
pub async fn upload(
    state: web::Data<AppState>,
    page: Page,
    req: HttpRequest,
    mut body: web::Payload,
) -> Result<HttpResponse, Error> {
    let boundary = multipart_boundary(&req)
        .ok_or_else(|| Error::BadRequest("Send the file as multipart/form-data.".into()))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| Error::BadRequest("The upload could not be read.".into()))?;
        if bytes.len() + chunk.len() > MAX_UPLOAD_BYTES + 64 * 1024 {
            return rerender(
                imports::file_error(format!(
                    "The file is larger than {} MB; import it with `referdesk import customers`.",
                    MAX_UPLOAD_BYTES / 1024 / 1024
                )),
                |errors| UploadPage {
                    page,
                    errors,
                    max_megabytes: MAX_UPLOAD_BYTES / 1024 / 1024,
                },
            );
        }
        bytes.extend_from_slice(&chunk);
    }
    let Some((file_name, content)) = file_part(&bytes, &boundary) else {
        return rerender(imports::file_error("Choose a CSV file to upload."), |errors| {
            UploadPage {
                page,
                errors,
                max_megabytes: MAX_UPLOAD_BYTES / 1024 / 1024,
            }
        });
    };
    let (program_id, member_id) = (page.program.id, page.member.id);
    let result = db::run(&state.pool, move |conn| {
        stored::upload(conn, program_id, Some(member_id), &file_name, content)
    })
    .await;
    match result {
        Ok(id) => Ok(redirect(&format!("/customers/import/{id}"))),
        Err(error) => rerender(error, |errors| UploadPage {
            page,
            errors,
            max_megabytes: MAX_UPLOAD_BYTES / 1024 / 1024,
        }),
    }
}

fn multipart_boundary(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    if !value.to_ascii_lowercase().starts_with("multipart/form-data") {
        return None;
    }
    value.split(';').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        name.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"').to_string())
            .filter(|boundary| !boundary.is_empty())
    })
}

/// The file name and content of the part named `file` of a multipart body.
fn file_part(body: &[u8], boundary: &str) -> Option<(String, Vec<u8>)> {
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let starts: Vec<usize> = finder.find_iter(body).collect();
    for pair in starts.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let split = memchr::memmem::find(part, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&part[..split]);
        let disposition = headers
            .lines()
            .find(|line| line.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let parameter = |name: &str| {
            disposition.split(';').find_map(|piece| {
                let (key, value) = piece.trim().split_once('=')?;
                (key == name).then(|| value.trim_matches('"').to_string())
            })
        };
        if parameter("name").as_deref() != Some("file") {
            continue;
        }
        let content = part[split + 4..].to_vec();
        let name = parameter("filename").unwrap_or_default();
        if name.is_empty() && content.is_empty() {
            return None;
        }
        return Some((name, content));
    }
    None
}

/// A mapping form's choice for one column.
pub struct ColumnChoice {
    pub header: String,
    pub chosen: String,
    /// The first cells of the column, to recognise it.
    pub samples: String,
}

#[derive(Template)]
#[template(path = "imports/show.html")]
struct ImportPage {
    page: Page,
    import: StoredImport,
    columns: Vec<ColumnChoice>,
    options: Vec<(String, String)>,
    errors: FormErrors,
    /// The report's refusals shown (the first ones).
    refusals: Vec<(i32, String, String)>,
}

impl ImportPage {
    fn build(page: Page, import: StoredImport, errors: FormErrors) -> ImportPage {
        let mut samples: Vec<Vec<String>> = vec![Vec::new(); import.file.headers.len()];
        let mut reader = import.file.records();
        for record in reader.records().take(3).flatten() {
            for (column, cell) in record.iter().enumerate().take(samples.len()) {
                samples[column].push(cell.chars().take(40).collect());
            }
        }
        let columns = import
            .file
            .headers
            .iter()
            .enumerate()
            .map(|(column, header)| ColumnChoice {
                header: if header.is_empty() {
                    format!("column {}", column + 1)
                } else {
                    header.clone()
                },
                chosen: import.mapping.0.get(column).map(Field::code).unwrap_or_default(),
                samples: samples[column].join(", "),
            })
            .collect();
        let mut options: Vec<(String, String)> = Field::FIXED
            .iter()
            .map(|field| (field.code(), field.label()))
            .collect();
        for header in &import.file.headers {
            let field = Field::Custom(header.clone());
            if !header.is_empty() && Field::guess(header) == field {
                options.push((field.code(), field.label()));
            }
        }
        options.push((Field::Ignore.code(), Field::Ignore.label()));
        let refusals = import
            .report
            .as_ref()
            .map(|report| {
                report
                    .refusals
                    .iter()
                    .take(SHOWN_REFUSALS)
                    .map(|(line, column, message)| (line, column.to_string(), message.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        ImportPage {
            page,
            import,
            columns,
            options,
            errors,
            refusals,
        }
    }

    fn report(&self) -> Option<&Report> {
        self.import.report.as_ref()
    }

    fn mode(&self) -> &'static str {
        self.import.mode.code()
    }

    fn valid_rows(&self) -> bool {
        self.import.policy == Policy::ValidRows
    }

    fn hidden_refusals(&self) -> usize {
        self.report().map_or(0, |report| {
            report.refusals.iter().count().saturating_sub(SHOWN_REFUSALS)
        })
    }
}

async fn load(state: &web::Data<AppState>, page: &Page, id: i64) -> Result<StoredImport, Error> {
    let program_id = page.program.id;
    db::run(&state.pool, move |conn| stored::find(conn, program_id, id)).await
}

pub async fn show(state: web::Data<AppState>, page: Page, id: web::Path<i64>) -> Result<HttpResponse, Error> {
    let import = load(&state, &page, id.into_inner()).await?;
    render(&ImportPage::build(page, import, FormErrors::default()))
}

/// The mapping form as sent: `column_0` … `column_N`, `mode`, `policy` and the button.
pub async fn submit(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let id = id.into_inner();
    let import = load(&state, &page, id).await?;
    let value = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let mut fields = Vec::with_capacity(import.file.headers.len());
    for column in 0..import.file.headers.len() {
        let chosen = value(&format!("column_{column}")).and_then(Field::from_code);
        match chosen {
            Some(Field::Custom(name)) if !import.file.headers.contains(&name) => {
                return Err(Error::BadRequest("Unknown field.".into()))
            }
            Some(field) => fields.push(field),
            None => return Err(Error::BadRequest("Choose a field for every column.".into())),
        }
    }
    let mapping = Mapping(fields);
    let mode = value("mode")
        .and_then(Mode::from_code)
        .ok_or_else(|| Error::BadRequest("Choose what the import does.".into()))?;
    let policy = match value("policy") {
        Some("valid_rows") => Policy::ValidRows,
        _ => Policy::AllOrNothing,
    };
    let importing = value("action") == Some("import");
    let program = page.program.clone();
    let actor = page.actor();
    let result = db::run_within(&state.pool, DRY_RUN_WAIT, move |conn| {
        stored::choose(conn, program.id, id, &mapping, mode, policy)?;
        if importing {
            stored::start(conn, &program, &actor, id).map(Submitted::Import)
        } else {
            stored::dry_run(conn, &program, &actor, id).map(Submitted::DryRun)
        }
    })
    .await;
    match result {
        Ok(Submitted::Import(Started::Queued(job_id))) => {
            page.flash(
                "info",
                format!(
                    "The import of {} runs in the background: job #{job_id}.",
                    import.file_name
                ),
            );
            Ok(redirect(&format!("/jobs/{job_id}")))
        }
        Ok(Submitted::Import(Started::Already(job_id))) => {
            page.flash("info", "This import was already submitted; here is its job.");
            Ok(redirect(&format!("/jobs/{job_id}")))
        }
        Ok(Submitted::DryRun(report)) => {
            page.flash(
                if report.complete() { "success" } else { "error" },
                summary(&report),
            );
            Ok(redirect(&format!("/customers/import/{id}")))
        }
        Err(error) => {
            let import = load(&state, &page, id).await?;
            rerender(error, |errors| ImportPage::build(page, import, errors))
        }
    }
}

/// What the mapping form's button did.
enum Submitted {
    DryRun(Report),
    Import(Started),
}

/// The flash of a dry run; an import's result is on its job's page
/// (`web::jobs`, [`import_summary`]).
fn summary(report: &Report) -> String {
    format!(
        "Dry run: {} rows, {} would be created, {} updated, {} refused. Nothing was written.",
        report.rows,
        report.created,
        report.updated,
        report.refusals.rows()
    )
}

/// What an import did, in a sentence.
pub fn import_summary(report: &Report) -> String {
    let refused = report.refusals.rows();
    if report.dry_run {
        summary(report)
    } else if report.written {
        format!(
            "Imported: {} created, {} updated, {refused} refused.",
            report.created, report.updated
        )
    } else if refused > 0 {
        format!("Nothing was imported: {refused} rows are refused (all or nothing).")
    } else {
        "Nothing to import.".to_string()
    }
}

/// The refused rows of the last report, as CSV (cells guarded like the export's).
pub async fn refused_csv(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    let import = load(&state, &page, id.into_inner()).await?;
    let report = import.report.clone().unwrap_or_default();
    let body = imports::refused_rows_csv(&import.file, &report.refusals, defuse)?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"refused-rows-{}.csv\"", import.id),
        ))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_part_is_found() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.csv\"\r\nContent-Type: text/csv\r\n\r\nemail\r\na@example.com\r\n\r\n--XyZ--\r\n";
        let (name, content) = file_part(body, "XyZ").unwrap();
        assert_eq!(name, "c.csv");
        assert_eq!(content, b"email\r\na@example.com\r\n");
        assert!(file_part(b"--XyZ--\r\n", "XyZ").is_none());
    }
}
