//! The delivery log of a webhook (or of the deliveries about one customer), and resending.

use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;

use crate::db;
use crate::domain::customers;
use crate::domain::webhooks::log::{self, Attempt, Filters, Scope};
use crate::domain::webhooks::{delivery, subscriptions, Event, Subscription};
use crate::error::{Error, FieldErrors};
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::FormErrors;
use crate::web::paging::ListUrl;
use crate::web::{redirect, render_status};
use crate::AppState;

#[derive(Deserialize, Default)]
pub struct LogQuery {
    #[serde(default)]
    event: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    customer: String,
}

#[derive(Template)]
#[template(path = "webhooks/deliveries.html")]
struct LogPage {
    page: Page,
    /// The webhook whose log this is; `None` for a customer's deliveries.
    subscription: Option<Subscription>,
    /// The customer's key and name, for a customer's deliveries.
    customer: Option<(String, String)>,
    attempts: Vec<Attempt>,
    /// Names of the webhooks of the attempts (a customer's log spans several).
    names: std::collections::HashMap<i64, String>,
    event: String,
    outcome: String,
    events: Vec<Event>,
    list_url: ListUrl,
    older: Option<String>,
    newest: Option<String>,
    from: String,
    to: String,
    errors: FormErrors,
}

/// A filter value the log knows, or nothing (an unknown one lists everything).
fn known(value: &str, allowed: impl Fn(&str) -> bool) -> Option<String> {
    let value = value.trim();
    (!value.is_empty() && allowed(value)).then(|| value.to_string())
}

async fn log_page(
    state: &AppState,
    page: Page,
    key: Option<String>,
    query: LogQuery,
    range: (String, String),
    errors: FormErrors,
) -> Result<HttpResponse, Error> {
    let filters = Filters {
        event: known(&query.event, |name| Event::parse(name).is_some()),
        outcome: known(&query.outcome, |name| matches!(name, "success" | "failure")),
        before: query.before,
    };
    let program_id = page.program.id;
    let customer_key = query.customer.trim().to_string();
    let (subscription, customer, attempts, next, names) = {
        let filters = filters.clone();
        db::run(&state.pool, move |conn| {
            let all = subscriptions::list(conn, program_id)?;
            let names = all.iter().map(|s| (s.id, s.name.clone())).collect();
            let (subscription, customer, scope) = match key {
                Some(key) => {
                    let found = all.into_iter().find(|s| s.key == key).ok_or(Error::NotFound)?;
                    let scope = Scope::Subscription(found.id);
                    (Some(found), None, scope)
                }
                None => {
                    let customer = customers::find_by_key(conn, program_id, &customer_key)?;
                    let scope = Scope::Customer(customer.id);
                    (None, Some((customer.key.clone(), customer.display_name())), scope)
                }
            };
            let (attempts, next) = log::page(conn, scope, &filters)?;
            Ok((subscription, customer, attempts, next, names))
        })
        .await?
    };
    let base = match &subscription {
        Some(subscription) => ListUrl::new(&format!("/webhooks/{}/deliveries", subscription.key)),
        None => ListUrl::new("/webhooks/deliveries").param("customer", customer_key_of(&customer)),
    };
    let list_url = base
        .param("event", filters.event.clone().unwrap_or_default())
        .param("outcome", filters.outcome.clone().unwrap_or_default());
    let older = next.map(|id| list_url.with(&[("before", Some(&id.to_string()))]));
    let newest = filters.before.map(|_| list_url.href());
    render_status(
        errors.status(),
        &LogPage {
            page,
            subscription,
            customer,
            attempts,
            names,
            event: filters.event.unwrap_or_default(),
            outcome: filters.outcome.unwrap_or_default(),
            events: Event::ALL.to_vec(),
            list_url,
            older,
            newest,
            from: range.0,
            to: range.1,
            errors,
        },
    )
}

fn customer_key_of(customer: &Option<(String, String)>) -> String {
    customer.as_ref().map(|(key, _)| key.clone()).unwrap_or_default()
}

pub async fn index(
    state: web::Data<AppState>,
    page: Page,
    key: web::Path<String>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, Error> {
    let range = (String::new(), String::new());
    log_page(
        &state,
        page,
        Some(key.into_inner()),
        query.into_inner(),
        range,
        FormErrors::default(),
    )
    .await
}

/// The deliveries about one customer (`?customer=key`), from the customer page.
pub async fn customer(
    state: web::Data<AppState>,
    page: Page,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, Error> {
    let range = (String::new(), String::new());
    log_page(
        &state,
        page,
        None,
        query.into_inner(),
        range,
        FormErrors::default(),
    )
    .await
}

pub async fn resend(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, Error> {
    let (key, delivery_id) = path.into_inner();
    let program_id = page.program.id;
    let result = {
        let key = key.clone();
        db::run(&state.pool, move |conn| {
            delivery::resend(conn, program_id, &key, delivery_id, Utc::now())
        })
        .await
    };
    match result {
        Ok(()) => page.flash("success", "The delivery is queued again, with the same event id."),
        Err(Error::Invalid { message, .. }) => page.flash("error", message),
        Err(error) => return Err(error),
    }
    Ok(redirect(&format!("/webhooks/{key}/deliveries")))
}

#[derive(Deserialize)]
pub struct RangeForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// `YYYY-MM-DDTHH:MM` (a `datetime-local` field), read as UTC.
fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S"))
        .ok()
        .map(|time| time.and_utc())
}

fn parse_range(form: &RangeForm) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    let mut errors = FieldErrors::new();
    let from = parse_time(&form.from);
    let to = parse_time(&form.to);
    if from.is_none() {
        errors.insert(
            "from".into(),
            vec!["Enter the start as a date and time (UTC).".into()],
        );
    }
    if to.is_none() {
        errors.insert(
            "to".into(),
            vec!["Enter the end as a date and time (UTC).".into()],
        );
    }
    match (from, to) {
        (Some(from), Some(to)) if from < to => Ok((from, to)),
        (Some(_), Some(_)) => Err(Error::invalid("to", "The end must come after the start.")),
        _ => Err(Error::invalid_fields(errors)),
    }
}

/// Queues every failed delivery whose event happened in the range again.
pub async fn resend_failed(
    state: web::Data<AppState>,
    page: Page,
    key: web::Path<String>,
    form: web::Form<RangeForm>,
) -> Result<HttpResponse, Error> {
    let (key, form) = (key.into_inner(), form.into_inner());
    let range = match parse_range(&form) {
        Ok(range) => range,
        Err(error) => {
            let errors = FormErrors::from_error(error)?;
            return log_page(
                &state,
                page,
                Some(key),
                LogQuery::default(),
                (form.from, form.to),
                errors,
            )
            .await;
        }
    };
    let program_id = page.program.id;
    let queued = {
        let key = key.clone();
        db::run(&state.pool, move |conn| {
            delivery::resend_failed(conn, program_id, &key, range, Utc::now())
        })
        .await?
    };
    page.flash(
        "success",
        format!("{queued} failed deliveries queued again, with their event ids."),
    );
    Ok(redirect(&format!("/webhooks/{key}/deliveries")))
}
