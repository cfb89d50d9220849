//! The audit log (admins only): every change in the current program plus the events that
//! belong to no program (sign-ins, failed sign-ins, team changes), filterable, paginated,
//! and exportable as CSV.

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};

use crate::db::{self, DbPool};
use crate::domain::audit::log::{self, LogCursor, LogEntry, LogFilter};
use crate::domain::team::{self, Member};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::customers::export::defuse;
use crate::web::format::filters;
use crate::web::forms::FormErrors;
use crate::web::paging::{requested_page, ListUrl, Pager};
use crate::web::render_status;
use crate::AppState;

pub const PER_PAGE: i64 = 50;
/// Events per database round trip while exporting.
const EXPORT_BATCH: i64 = 500;

/// The filter form as typed. Everything is text so that a bad value is reported next to
/// its field instead of failing the whole request.
#[derive(Deserialize, Serialize, Default, Clone)]
pub struct LogQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    member: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    customer: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default, skip_serializing)]
    page: String,
}

impl LogQuery {
    fn parse(&self) -> Result<LogFilter, Error> {
        LogFilter::parse(
            &self.actor,
            &self.member,
            &self.action,
            &self.customer,
            &self.from,
            &self.to,
        )
    }

    fn page(&self) -> i64 {
        requested_page(&self.page)
    }

    /// The address of the log with these filters (without the page).
    fn url(&self) -> ListUrl {
        [
            ("actor", &self.actor),
            ("member", &self.member),
            ("action", &self.action),
            ("customer", &self.customer),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .fold(ListUrl::new("/audit"), |url, (name, value)| {
            url.param(name, value.as_str())
        })
    }
}

/// Actions worth suggesting in the filter (free text also works).
const KNOWN_ACTIONS: &[&str] = &[
    "auth.",
    "auth.sign_in",
    "auth.sign_in_failed",
    "member.",
    "member.create",
    "member.role_change",
    "member.disable",
    "member.enable",
    "member.password_change",
    "member.password_link",
    "member.update",
    "program.",
    "program.create",
    "program.update",
    "customer.",
];

#[derive(Template)]
#[template(path = "audit/index.html")]
struct AuditPage {
    page: Page,
    query: LogQuery,
    members: Vec<Member>,
    known_actions: &'static [&'static str],
    entries: Vec<LogEntry>,
    /// Exact, or a lower bound ("more than") for a long log.
    pager: Pager,
    unknown_customer: bool,
    errors: FormErrors,
}

impl AuditPage {
    fn export_link(&self) -> String {
        self.query.url().on_path("/audit/export")
    }
}

pub async fn index(
    state: web::Data<AppState>,
    page: Page,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, Error> {
    let query = query.into_inner();
    let program_id = page.program.id;
    let current = query.page();
    let parsed = query.parse();
    let filter = parsed.as_ref().ok().cloned();
    let (members, result) = db::run(&state.pool, move |conn| {
        let members = team::list_members(conn)?;
        let result = match filter {
            Some(filter) => Some(log::log_page(conn, program_id, &filter, current, PER_PAGE)?),
            None => None,
        };
        Ok((members, result))
    })
    .await?;
    let errors = match parsed {
        Ok(_) => FormErrors::default(),
        Err(error) => FormErrors::from_error(error)?,
    };
    let (entries, total, total_is_exact, has_next, unknown_customer) = match result {
        Some(found) => (
            found.entries,
            found.total,
            found.total_is_exact,
            found.has_next,
            found.unknown_customer,
        ),
        None => (Vec::new(), 0, true, false, false),
    };
    let url = query.url();
    // A long log is not counted to its end: its pager runs to the next page.
    let pager = if total_is_exact {
        Pager::new(url, "page", current, PER_PAGE, total)
    } else {
        Pager::at_least(
            url,
            "page",
            current,
            PER_PAGE,
            total,
            entries.len() as i64,
            has_next,
        )
    };
    render_status(
        errors.status(),
        &AuditPage {
            page,
            query,
            members,
            known_actions: KNOWN_ACTIONS,
            entries,
            pager,
            unknown_customer,
            errors,
        },
    )
}

/// Actor labels come from whatever was typed at a failed sign-in: every text cell goes
/// through the same formula guard as the customer export.
fn spreadsheet_safe(value: &str) -> String {
    defuse(value).into_owned()
}

fn csv_error(error: csv::Error) -> Error {
    Error::Internal(anyhow::anyhow!("csv: {error}"))
}

const CSV_HEADER: [&str; 12] = [
    "id",
    "created_at",
    "actor",
    "actor_member_id",
    "actor_token_id",
    "action",
    "subject_type",
    "subject_id",
    "customer_key",
    "address",
    "before",
    "after",
];

fn csv_rows(entries: &[LogEntry], header: bool) -> Result<Bytes, Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if header {
        writer.write_record(CSV_HEADER).map_err(csv_error)?;
    }
    let text = |value: &Option<serde_json::Value>| value.as_ref().map(|v| v.to_string()).unwrap_or_default();
    let id = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
    for entry in entries {
        let event = &entry.event;
        writer
            .write_record([
                event.id.to_string(),
                event
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                spreadsheet_safe(&event.actor_label),
                id(event.actor_member_id),
                id(event.actor_token_id),
                spreadsheet_safe(&event.action),
                spreadsheet_safe(&event.subject_type),
                spreadsheet_safe(event.subject_id.as_deref().unwrap_or_default()),
                spreadsheet_safe(entry.customer_key.as_deref().unwrap_or_default()),
                spreadsheet_safe(event.address.as_deref().unwrap_or_default()),
                spreadsheet_safe(&text(&event.before)),
                spreadsheet_safe(&text(&event.after)),
            ])
            .map_err(csv_error)?;
    }
    writer
        .into_inner()
        .map(Bytes::from)
        .map_err(|error| Error::Internal(anyhow::anyhow!("csv: {error}")))
}

/// Where the export continues (after this event), or `None` when it is finished.
fn next_cursor(entries: &[LogEntry]) -> Option<LogCursor> {
    match entries.last() {
        Some(last) if entries.len() as i64 == EXPORT_BATCH => Some((last.event.created_at, last.event.id)),
        _ => None,
    }
}

/// `GET /audit/export`: the filtered log as CSV, streamed batch by batch (newest first) so
/// that a large log never sits in memory whole.
pub async fn export(
    state: web::Data<AppState>,
    page: Page,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, Error> {
    let filter = query.parse()?;
    let program_id = page.program.id;
    // One database for every batch, also those read after the handler has answered.
    let pool: DbPool = state.pool.for_request();
    // The first batch is read before answering, so a database error is a proper error page.
    let first_filter = filter.clone();
    let first = db::run(&pool, move |conn| {
        log::log_export_batch(conn, program_id, &first_filter, None, EXPORT_BATCH)
    })
    .await?;
    let first_bytes = csv_rows(&first, true)?;
    let rest = futures_util::stream::unfold(next_cursor(&first), move |position| {
        let pool = pool.clone();
        let filter = filter.clone();
        async move {
            let cursor = Some(position?);
            let batch = db::run(&pool, move |conn| {
                log::log_export_batch(conn, program_id, &filter, cursor, EXPORT_BATCH)
            })
            .await;
            match batch {
                Ok(entries) if entries.is_empty() => None,
                Ok(entries) => Some((
                    csv_rows(&entries, false).map_err(actix_web::Error::from),
                    next_cursor(&entries),
                )),
                Err(error) => {
                    tracing::error!("audit export stopped: {error}");
                    Some((Err(actix_web::Error::from(error)), None))
                }
            }
        }
    });
    let body = futures_util::stream::once(async move { Ok::<_, actix_web::Error>(first_bytes) });
    let filename = format!(
        "audit-{}-{}.csv",
        page.program.slug,
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    );
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(futures_util::StreamExt::chain(body, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(spreadsheet_safe("ada@example.com"), "ada@example.com");
    }

    #[test]
    fn page_links_keep_the_filters() {
        let query = LogQuery {
            actor: "ada@example.com".into(),
            action: "member.".into(),
            page: "3".into(),
            ..LogQuery::default()
        };
        assert_eq!(
            query.url().href(),
            "/audit?actor=ada%40example.com&action=member."
        );
        assert_eq!(query.page(), 3);
        assert_eq!(LogQuery::default().page(), 1);
    }
}
