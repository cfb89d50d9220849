//! List calls: their query string (`limit`, `page`, filters) and the list envelope.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use crate::domain::customers::listing;
use crate::error::{ApiError, Error, FieldErrors};
use crate::AppState;

/// `limit` and `page` of a list call, validated like the original service does.
pub struct Paging {
    pub limit: i64,
    pub page: i64,
}

/// A list call's query string, read once; bad parameters are collected per name.
pub struct ListQuery {
    pairs: Vec<(String, String)>,
    pub paging: Paging,
    errors: FieldErrors,
}

fn pairs_of(req: &HttpRequest) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string()).unwrap_or_default()
}

impl ListQuery {
    pub fn parse(req: &HttpRequest) -> ListQuery {
        let mut query = ListQuery {
            pairs: pairs_of(req),
            paging: Paging { limit: 15, page: 1 },
            errors: FieldErrors::new(),
        };
        query.paging = Paging {
            limit: query.number("limit", 15, 1, listing::MAX_PER_PAGE),
            page: query.number("page", 1, 1, i64::MAX),
        };
        query
    }

    /// A parameter's value; with a repeated parameter the last one wins (as PHP reads them).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A parameter's trimmed value, `None` when absent or blank.
    pub fn given(&self, name: &str) -> Option<String> {
        self.value(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    }

    pub fn error(&mut self, name: &str, message: String) {
        self.errors.entry(name.to_string()).or_default().push(message);
    }

    fn number(&mut self, name: &str, default: i64, min: i64, max: i64) -> i64 {
        let Some(raw) = self.value(name).filter(|raw| !raw.is_empty()) else {
            return default;
        };
        let message = match raw.trim().parse::<i64>() {
            Ok(value) if (min..=max).contains(&value) => return value,
            Ok(_) if max == i64::MAX => format!("The {name} field must be at least {min}."),
            Ok(_) => format!("The {name} field must be between {min} and {max}."),
            Err(_) => format!("The {name} field must be an integer."),
        };
        self.error(name, message);
        default
    }

    /// The paging, or a 422 naming every bad parameter.
    pub fn finish(self) -> Result<Paging, ApiError> {
        if self.errors.is_empty() {
            Ok(self.paging)
        } else {
            Err(ApiError(Error::invalid_fields(self.errors)))
        }
    }
}

/// The list envelope. Fields in alphabetical order, as serde_json prints maps (see
/// `views::CustomerJson`).
#[derive(Serialize)]
struct Envelope<'a, T> {
    data: &'a [T],
    links: Links,
    meta: Meta<'a>,
    status: u8,
}

#[derive(Serialize)]
struct Links {
    first: String,
    last: String,
    next: Option<String>,
    prev: Option<String>,
}

#[derive(Serialize)]
struct Meta<'a> {
    current_page: i64,
    from: Option<i64>,
    last_page: i64,
    path: &'a str,
    per_page: i64,
    to: Option<i64>,
    total: i64,
}

/// The list envelope: `data`, `links` (keeping every other parameter), `meta`, `status`.
pub fn response<T: Serialize>(
    req: &HttpRequest,
    state: &AppState,
    items: Vec<T>,
    paging: &Paging,
    total: i64,
) -> HttpResponse {
    let path = format!("{}{}", state.config.public_url, req.path());
    let last_page = ((total + paging.limit - 1) / paging.limit).max(1);
    let kept: Vec<(String, String)> = pairs_of(req)
        .into_iter()
        .filter(|(key, _)| key != "page")
        .collect();
    let page_url = |page: i64| {
        let mut pairs = kept.clone();
        pairs.push(("page".into(), page.to_string()));
        format!(
            "{path}?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    };
    // Saturating: `page` may be any positive i64, and an overflow here would panic.
    let from = (paging.page - 1).saturating_mul(paging.limit).saturating_add(1);
    let count = items.len() as i64;
    crate::api::json(
        StatusCode::OK,
        &Envelope {
            data: &items,
            links: Links {
                first: page_url(1),
                last: page_url(last_page),
                next: (paging.page < last_page).then(|| page_url(paging.page + 1)),
                prev: (paging.page > 1).then(|| page_url((paging.page - 1).min(last_page))),
            },
            meta: Meta {
                current_page: paging.page,
                from: (count > 0).then_some(from),
                last_page,
                path: &path,
                per_page: paging.limit,
                to: (count > 0).then_some(from.saturating_add(count - 1)),
                total,
            },
            status: 1,
        },
    )
}
