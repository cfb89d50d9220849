//! The audit log (admins only): every change in the current program plus the events that
//! belong to no program (sign-ins, failed sign-ins, team changes), filterable, paginated,
//! and exportable as CSV.

use actix_web::http::{header, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};

use crate::db::{self, DbPool};
use crate::domain::audit::log::{self, LogCursor, LogEntry, LogFilter};
use crate::domain::team::{self, Member};
use crate::error::{Error, FieldErrors};
use crate::web::context::Page;
use crate::web::customers::export::defuse;
use crate::web::paging::thousands;
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
        self.page.trim().parse::<i64>().unwrap_or(1).clamp(1, 1_000_000)
    }

    /// The filters as a query string (without the page), for page and export links.
    fn query_string(&self) -> String {
        let pairs: Vec<(&str, &str)> = [
            ("actor", &self.actor),
            ("member", &self.member),
            ("action", &self.action),
            ("customer", &self.customer),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(key, value)| (key, value.as_str()))
        .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
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

pub struct PageItem {
    number: Option<i64>,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "audit/index.html")]
struct AuditPage {
    page: Page,
    query: LogQuery,
    members: Vec<Member>,
    known_actions: &'static [&'static str],
    entries: Vec<LogEntry>,
    /// Exact when `total_is_exact`, else a lower bound ("more than").
    total: i64,
    total_is_exact: bool,
    current: i64,
    /// The last page when the total is exact, else the last page known to exist.
    pages: i64,
    has_next: bool,
    unknown_customer: bool,
    errors: FieldErrors,
}

impl AuditPage {
    fn error(&self, field: &str) -> Option<&String> {
        self.errors.get(field).and_then(|messages| messages.first())
    }

    fn page_link(&self, number: i64) -> String {
        let filters = self.query.query_string();
        if filters.is_empty() {
            format!("/audit?page={number}")
        } else {
            format!("/audit?{filters}&page={number}")
        }
    }

    fn export_link(&self) -> String {
        let filters = self.query.query_string();
        if filters.is_empty() {
            "/audit/export".to_string()
        } else {
            format!("/audit/export?{filters}")
        }
    }

    fn first_shown(&self) -> i64 {
        if self.total == 0 {
            0
        } else {
            (self.current - 1) * PER_PAGE + 1
        }
    }

    fn last_shown(&self) -> i64 {
        (self.current - 1) * PER_PAGE + self.entries.len() as i64
    }

    fn total_text(&self) -> String {
        if self.total_is_exact {
            thousands(self.total)
        } else {
            format!("more than {}", thousands(self.total))
        }
    }

    fn previous_link(&self) -> Option<String> {
        (self.current > 1).then(|| self.page_link(self.current - 1))
    }

    fn next_link(&self) -> Option<String> {
        self.has_next.then(|| self.page_link(self.current + 1))
    }

    /// The first, last and nearby pages; a gap between them is an item without a number.
    fn page_items(&self) -> Vec<PageItem> {
        let mut items = Vec::new();
        let mut previous = 0;
        for number in 1..=self.pages {
            let near = (number - self.current).abs() <= 2;
            if number == 1 || number == self.pages || near {
                if number > previous + 1 {
                    items.push(PageItem {
                        number: None,
                        href: String::new(),
                        current: false,
                    });
                }
                items.push(PageItem {
                    number: Some(number),
                    href: self.page_link(number),
                    current: number == self.current,
                });
                previous = number;
            }
        }
        items
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
    let (status, errors) = match parsed {
        Ok(_) => (StatusCode::OK, FieldErrors::new()),
        Err(Error::Invalid { fields, .. }) => (StatusCode::UNPROCESSABLE_ENTITY, fields),
        Err(error) => return Err(error),
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
    // A long log is not counted to its end: its pager runs to the next page.
    let pages = if total_is_exact {
        ((total + PER_PAGE - 1) / PER_PAGE).max(1)
    } else {
        current + i64::from(has_next)
    };
    render_status(
        status,
        &AuditPage {
            page,
            query,
            members,
            known_actions: KNOWN_ACTIONS,
            entries,
            total,
            total_is_exact,
            current,
            pages,
            has_next,
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
    let pool: DbPool = state.pool.clone();
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
        assert_eq!(query.query_string(), "actor=ada%40example.com&action=member.");
        assert_eq!(query.page(), 3);
        assert_eq!(LogQuery::default().page(), 1);
    }
}
