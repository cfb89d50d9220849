//! `GET /transactions`: the current program's transactions, filtered by status, date range
//! and customer, newest first, each with the rewards it triggered (or why it triggered
//! none).

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db;
use crate::domain::customers;
use crate::domain::transactions::browse::{self, Filter, Row};
use crate::domain::transactions::TransactionStatus;
use crate::error::{Error, FieldErrors};
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::FormErrors;
use crate::web::paging::{requested_page, ListUrl, Pager};
use crate::web::render_status;
use crate::AppState;

pub const PER_PAGE: i64 = 25;

/// The filter form as typed (all text: a bad value is reported next to its field).
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct TransactionsQuery {
    status: String,
    from: String,
    to: String,
    customer: String,
    page: String,
}

impl TransactionsQuery {
    fn status_is(&self, status: &str) -> bool {
        self.status.trim() == status
    }

    fn page(&self) -> i64 {
        requested_page(&self.page)
    }

    fn url(&self) -> ListUrl {
        [
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
            ("customer", &self.customer),
        ]
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .fold(ListUrl::new("/transactions"), |url, (name, value)| {
            url.param(name, value.trim())
        })
    }

    /// The filter without the customer (looked up by key in the database).
    fn parse(&self) -> Result<Filter, Error> {
        let status = match self.status.trim() {
            "" => Ok(None),
            raw => TransactionStatus::parse(raw).map(Some).ok_or(()),
        };
        let days = browse::parse_days(&self.from, &self.to);
        let mut fields = match &days {
            Err(error) => error.field_errors().cloned().unwrap_or_default(),
            Ok(_) => FieldErrors::new(),
        };
        if status.is_err() {
            fields.insert(
                "status".into(),
                vec!["Choose active, archived or deleted.".into()],
            );
        }
        match (status, days) {
            (Ok(status), Ok((from, until))) if fields.is_empty() => Ok(Filter {
                status,
                from,
                until,
                customer_id: None,
            }),
            _ => Err(Error::invalid_fields(fields)),
        }
    }
}

#[derive(Template)]
#[template(path = "transactions/index.html")]
struct TransactionsPage {
    page: Page,
    query: TransactionsQuery,
    rows: Vec<Row>,
    pager: Pager,
    errors: FormErrors,
}

pub async fn index(
    state: web::Data<AppState>,
    page: Page,
    query: web::Query<TransactionsQuery>,
) -> Result<HttpResponse, Error> {
    let query = query.into_inner();
    let program_id = page.program.id;
    let current = query.page();
    let parsed = query.parse();
    let filter = parsed.as_ref().ok().cloned();
    let customer_key = query.customer.trim().to_string();
    let result = db::run(&state.pool, move |conn| {
        let Some(mut filter) = filter else {
            return Ok(Err(None));
        };
        if !customer_key.is_empty() {
            match customers::find_by_key(conn, program_id, &customer_key) {
                Ok(customer) => filter.customer_id = Some(customer.id),
                Err(Error::NotFound) => return Ok(Err(Some("customer"))),
                Err(other) => return Err(other),
            }
        }
        browse::list(conn, program_id, &filter, current, PER_PAGE).map(Ok)
    })
    .await?;
    let (listing, errors) = match (parsed, result) {
        (Err(error), _) => (None, FormErrors::from_error(error)?),
        (Ok(_), Err(_)) => (
            None,
            FormErrors::one("customer", "No customer with this key in this program."),
        ),
        (Ok(_), Ok(listing)) => (Some(listing), FormErrors::default()),
    };
    let url = query.url();
    // Millions of transactions are not counted to their end: past the count limit the
    // pager says "more than" and runs to the next page.
    let (rows, pager) = match listing {
        None => (Vec::new(), Pager::new(url, "page", current, PER_PAGE, 0)),
        Some(found) if found.total_is_exact => (
            found.rows,
            Pager::new(url, "page", current, PER_PAGE, found.total),
        ),
        Some(found) => {
            let shown = found.rows.len() as i64;
            let pager = Pager::at_least(url, "page", current, PER_PAGE, found.total, shown, found.has_next);
            (found.rows, pager)
        }
    };
    render_status(
        errors.status(),
        &TransactionsPage {
            page,
            query,
            rows,
            pager,
            errors,
        },
    )
}
