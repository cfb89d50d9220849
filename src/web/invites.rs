//! Invite pages: `GET|POST /invites/new` (from the program), `GET|POST
//! /customers/{key}/invite` (carrying the customer's referral link), the `GET /invites`
//! list with status filter, and `POST /invites/{id}/retry` for failed ones.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db;
use crate::domain::customers::{self, Customer};
use crate::domain::invites::{self, CustomerInvite, DeliveryStatus, InviteFilter, InviteRow, NewInvite};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::FormErrors;
use crate::web::paging::{ListUrl, Pager};
use crate::web::{redirect, render, render_status, safe_next};
use crate::AppState;

const PER_PAGE: i64 = 25;
/// Invites shown in the panel next to the customer's invite form.
pub const PANEL_LIMIT: i64 = 10;
/// Rows the form offers (typed rows plus blank ones) without JavaScript.
const MIN_FORM_ROWS: usize = 3;

/// The form's input as typed.
#[derive(Default)]
pub struct InviteValues {
    pub email: String,
    pub name: String,
    /// The personal note: the email shows it as the `message` personalization value.
    pub note: String,
    pub rows: Vec<(String, String)>,
}

impl InviteValues {
    /// Repeated and indexed fields (`personalization[0][key]`) are not something
    /// `web::Form` reads, so the raw pairs are parsed here.
    fn from_body(body: &[u8]) -> Result<InviteValues, Error> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| Error::BadRequest("The form could not be read.".to_string()))?;
        let mut values = InviteValues::default();
        let mut rows: BTreeMap<usize, (String, String)> = BTreeMap::new();
        for (name, value) in pairs {
            match name.as_str() {
                "email" => values.email = value,
                "name" => values.name = value,
                "note" => values.note = value,
                _ => {
                    if let Some((index, part)) = personalization_field(&name) {
                        let row = rows.entry(index).or_default();
                        match part {
                            "key" => row.0 = value,
                            _ => row.1 = value,
                        }
                    }
                }
            }
        }
        values.rows = rows.into_values().collect();
        Ok(values)
    }

    /// The typed rows plus blank ones, so the form works without JavaScript.
    fn form_rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = self
            .rows
            .iter()
            .filter(|(key, value)| !key.trim().is_empty() || !value.trim().is_empty())
            .cloned()
            .collect();
        let wanted = (rows.len() + 1).clamp(MIN_FORM_ROWS, invites::MAX_PERSONALIZATION_PAIRS);
        while rows.len() < wanted {
            rows.push((String::new(), String::new()));
        }
        rows
    }
}

/// `personalization[3][key]` → `(3, "key")`; `[value]` likewise.
fn personalization_field(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("personalization[")?;
    let (index, rest) = rest.split_once("][")?;
    let part = rest.strip_suffix(']')?;
    let index: usize = index.parse().ok()?;
    matches!(part, "key" | "value").then_some((index, part))
}

#[derive(Template)]
#[template(path = "invites/new.html")]
struct InviteForm {
    page: Page,
    customer: Option<Customer>,
    /// The link the email will carry.
    referral_link: String,
    values: InviteValues,
    rows: Vec<(String, String)>,
    errors: FormErrors,
    /// The customer's recent invites (empty for a program invite).
    invites: Vec<CustomerInvite>,
}

impl InviteForm {
    /// Whether the extra template values hold anything (or a message about them), so
    /// they open.
    fn has_extra_values(&self) -> bool {
        self.errors.joined("personalization").is_some()
            || self
                .rows
                .iter()
                .any(|(key, value)| !key.trim().is_empty() || !value.trim().is_empty())
    }

    fn action(&self) -> String {
        match &self.customer {
            Some(customer) => format!("/customers/{}/invite", customer.key),
            None => "/invites/new".to_string(),
        }
    }
}

async fn show_form(
    state: &AppState,
    page: Page,
    key: Option<String>,
    values: InviteValues,
    errors: FormErrors,
) -> Result<HttpResponse, Error> {
    let program = page.program.clone();
    let (customer, invites) = db::run(&state.pool, move |conn| match key {
        Some(key) => {
            let customer = customers::find_by_key(conn, program.id, &key)?;
            let invites = invites::for_customer(conn, &customer, PANEL_LIMIT)?;
            Ok((Some(customer), invites))
        }
        None => Ok((None, Vec::new())),
    })
    .await?;
    let referral_link = match &customer {
        Some(customer) => page.program.referral_url(&customer.key),
        None => page.program.referral_base_url.clone(),
    };
    render_status(
        errors.status(),
        &InviteForm {
            rows: values.form_rows(),
            page,
            customer,
            referral_link,
            values,
            errors,
            invites,
        },
    )
}

async fn submit(
    state: &AppState,
    page: Page,
    key: Option<String>,
    body: &[u8],
) -> Result<HttpResponse, Error> {
    let values = InviteValues::from_body(body)?;
    let mut pairs = values.rows.clone();
    if !values.note.trim().is_empty() {
        pairs.insert(0, (invites::MESSAGE_KEY.to_string(), values.note.clone()));
    }
    let new = match NewInvite::parse(&values.email, &values.name, &pairs) {
        Ok(new) => new,
        Err(error) => return show_form(state, page, key, values, FormErrors::from_error(error)?).await,
    };
    let program = page.program.clone();
    let actor = page.actor();
    let customer_key = key.clone();
    let created = db::run(&state.pool, move |conn| {
        let customer = match customer_key {
            Some(key) => Some(customers::find_by_key(conn, program.id, &key)?),
            None => None,
        };
        invites::create(conn, &program, &actor, customer.as_ref(), new)
    })
    .await;
    match created {
        Ok(invite) => {
            state.mail.wake();
            page.flash(
                "success",
                format!("Invite to {} queued; it is sent in a moment.", invite.email),
            );
            Ok(redirect(&match key {
                Some(key) => format!("/customers/{key}#invites"),
                None => "/invites".to_string(),
            }))
        }
        Err(error) => show_form(state, page, key, values, FormErrors::from_error(error)?).await,
    }
}

pub async fn new_form(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    show_form(&state, page, None, InviteValues::default(), FormErrors::default()).await
}

pub async fn create(state: web::Data<AppState>, page: Page, body: web::Bytes) -> Result<HttpResponse, Error> {
    submit(&state, page, None, &body).await
}

pub async fn customer_form(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let key = path.into_inner();
    show_form(
        &state,
        page,
        Some(key),
        InviteValues::default(),
        FormErrors::default(),
    )
    .await
}

pub async fn customer_create(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    submit(&state, page, Some(path.into_inner()), &body).await
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    email: Option<String>,
    page: Option<i64>,
}

#[derive(Template)]
#[template(path = "invites/index.html")]
struct InvitesPage {
    page: Page,
    rows: Vec<InviteRow>,
    total: i64,
    counts: BTreeMap<DeliveryStatus, i64>,
    status: String,
    email: String,
    url: ListUrl,
    /// The page asked for (the pager clamps its own to the pages there are).
    current: i64,
    pager: Pager,
    statuses: [DeliveryStatus; 3],
}

impl InvitesPage {
    fn count(&self, status: &DeliveryStatus) -> i64 {
        self.counts.get(status).copied().unwrap_or(0)
    }

    fn is_status(&self, option: &DeliveryStatus) -> bool {
        self.status == option.as_str()
    }

    fn all_count(&self) -> i64 {
        self.counts.values().sum()
    }

    /// Where a retry comes back to: this very list, on this page.
    fn here(&self) -> String {
        self.url.with(&[("page", Some(&self.current.to_string()))])
    }
}

pub async fn index(
    state: web::Data<AppState>,
    page: Page,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, Error> {
    let query = query.into_inner();
    // An unknown status shows everything rather than an empty list.
    let status = query
        .status
        .and_then(|status| DeliveryStatus::parse(status.trim()));
    let email = query
        .email
        .map(|email| email.trim().to_string())
        .filter(|email| !email.is_empty())
        .map(|email| email.chars().take(254).collect::<String>());
    let current = query.page.unwrap_or(1).max(1);
    let filter = InviteFilter {
        status,
        email: email.clone(),
    };
    let program_id = page.program.id;
    let (rows, total, counts) = db::run(&state.pool, move |conn| {
        let (rows, total) = invites::list(conn, program_id, &filter, current, PER_PAGE)?;
        let counts = invites::status_counts(conn, program_id)?;
        Ok((rows, total, counts))
    })
    .await?;
    let status = status
        .map(|status| status.as_str().to_string())
        .unwrap_or_default();
    let email = email.unwrap_or_default();
    let url = ListUrl::new("/invites")
        .param("status", status.as_str())
        .param("email", email.as_str());
    render(&InvitesPage {
        page,
        rows,
        total,
        counts,
        pager: Pager::new(url.clone(), "page", current, PER_PAGE, total),
        url,
        current,
        status,
        email,
        statuses: DeliveryStatus::ALL,
    })
}

#[derive(Deserialize)]
pub struct RetryForm {
    next: Option<String>,
}

pub async fn retry(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<i64>,
    form: web::Form<RetryForm>,
) -> Result<HttpResponse, Error> {
    let invite_id = path.into_inner();
    let next = safe_next(form.next.as_deref()).to_string();
    let next = if next == "/" { "/invites".to_string() } else { next };
    let program_id = page.program.id;
    let actor = page.actor();
    let retried = db::run(&state.pool, move |conn| {
        invites::retry(conn, program_id, &actor, invite_id)
    })
    .await;
    match retried {
        Ok(invite) => {
            state.mail.wake();
            page.flash("success", format!("Invite to {} queued again.", invite.email));
        }
        Err(error @ (Error::Invalid { .. } | Error::BadRequest(_))) => {
            page.flash("error", error.public_message());
        }
        Err(other) => return Err(other),
    }
    Ok(redirect(&next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_personalization_fields_are_read_in_order() {
        let body = b"email=a%40example.com&name=Ann&personalization%5B1%5D%5Bkey%5D=b&personalization%5B0%5D%5Bkey%5D=a&personalization%5B0%5D%5Bvalue%5D=1&personalization%5B1%5D%5Bvalue%5D=2&personalization%5Bx%5D%5Bkey%5D=ignored";
        let values = InviteValues::from_body(body).unwrap();
        assert_eq!(values.email, "a@example.com");
        assert_eq!(values.name, "Ann");
        assert_eq!(
            values.rows,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
        assert_eq!(values.form_rows().len(), 3);
    }
}
