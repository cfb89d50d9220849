//! The webhooks page (admins): subscriptions of the current program, their secrets
//! (shown once), test events. The delivery log is in `web::webhook_log`.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db;
use crate::domain::webhooks::subscriptions::{self, Created};
use crate::domain::webhooks::{delivery, Event, Subscription, SubscriptionInput};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::{rerender, FormErrors};
use crate::web::{redirect, render};
use crate::AppState;

/// A secret just made (creation or rotation), kept in the session until the webhooks page
/// shows it once: the page the POST redirects to, so a reload makes nothing new.
#[derive(Serialize, Deserialize)]
struct NewSecret {
    name: String,
    secret: String,
    rotated: bool,
}

const NEW_SECRET_KEY: &str = "new_webhook_secret";

#[derive(Template)]
#[template(path = "webhooks/index.html")]
struct IndexPage {
    page: Page,
    subscriptions: Vec<Subscription>,
    created: Option<NewSecret>,
    now: chrono::DateTime<chrono::Utc>,
}

pub async fn index(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    let created = if page.session.contains_key(NEW_SECRET_KEY) {
        page.session
            .remove_as::<NewSecret>(NEW_SECRET_KEY)
            .and_then(Result::ok)
    } else {
        None
    };
    let program_id = page.program.id;
    let subscriptions = db::run(&state.pool, move |conn| subscriptions::list(conn, program_id)).await?;
    render(&IndexPage {
        page,
        subscriptions,
        created,
        now: chrono::Utc::now(),
    })
}

/// The form as submitted: `events` repeats, so it is read as pairs.
#[derive(Default)]
struct SubscriptionForm {
    name: String,
    url: String,
    events: Vec<String>,
    all_events: bool,
    is_active: bool,
    /// The new-subscription form's one-time token (see `subscriptions::create_once`).
    form_token: String,
}

impl SubscriptionForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> SubscriptionForm {
        let mut form = SubscriptionForm::default();
        for (name, value) in pairs {
            match name.as_str() {
                "name" => form.name = value,
                "url" => form.url = value,
                "events" => form.events.push(value),
                "all_events" => form.all_events = value == "on",
                "is_active" => form.is_active = value == "on",
                "form_token" => form.form_token = value.trim().to_string(),
                _ => {}
            }
        }
        form
    }

    fn of(subscription: &Subscription) -> SubscriptionForm {
        SubscriptionForm {
            name: subscription.name.clone(),
            url: subscription.url.clone(),
            events: subscription.events.clone(),
            all_events: subscription.all_events,
            is_active: subscription.is_active,
            form_token: String::new(),
        }
    }

    fn input(&self) -> SubscriptionInput {
        SubscriptionInput {
            name: Some(self.name.clone()),
            url: Some(self.url.clone()),
            events: Some(self.events.clone()),
            all_events: Some(self.all_events),
            is_active: Some(self.is_active),
        }
    }

    fn has(&self, event: &Event) -> bool {
        self.events.iter().any(|name| name == event.as_str())
    }
}

#[derive(Template)]
#[template(path = "webhooks/form.html")]
struct FormPage {
    page: Page,
    /// The key of the subscription being edited; `None` for a new one.
    key: Option<String>,
    form: SubscriptionForm,
    errors: FormErrors,
    events: Vec<Event>,
    allow_http: bool,
}

impl FormPage {
    fn url_help(&self) -> String {
        let schemes = if self.allow_http {
            "https:// (or http://)"
        } else {
            "https://"
        };
        format!("Where the events are posted. It must start with {schemes} and reach a public address; redirects are not followed.")
    }

    fn action(&self) -> String {
        match &self.key {
            Some(key) => format!("/webhooks/{key}/edit"),
            None => "/webhooks".to_string(),
        }
    }
}

fn form_page(
    state: &AppState,
    page: Page,
    key: Option<String>,
    form: SubscriptionForm,
    errors: FormErrors,
) -> FormPage {
    FormPage {
        page,
        key,
        form,
        errors,
        events: Event::subscribable().collect(),
        allow_http: state.config.webhooks.policy.allow_http,
    }
}

pub async fn new_form(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    let form = SubscriptionForm {
        is_active: true,
        all_events: true,
        form_token: Uuid::new_v4().to_string(),
        ..SubscriptionForm::default()
    };
    render(&form_page(&state, page, None, form, FormErrors::default()))
}

pub async fn create(
    state: web::Data<AppState>,
    page: Page,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let mut form = SubscriptionForm::from_pairs(form.into_inner());
    let Ok(form_token) = Uuid::parse_str(&form.form_token) else {
        form.form_token = Uuid::new_v4().to_string();
        let error = Error::invalid(
            "form_token",
            "This form is incomplete or expired. Check it and submit it again.",
        );
        return rerender(error, |errors| form_page(&state, page, None, form, errors));
    };
    let (program_id, actor, input) = (page.program.id, page.actor(), form.input());
    let policy = state.config.webhooks.policy;
    let result = db::run(&state.pool, move |conn| {
        subscriptions::create_once(conn, program_id, &actor, input, policy, Some(form_token))
    })
    .await;
    match result {
        Ok(Created::New(created)) => {
            keep_secret(&page, &created, false)?;
            Ok(redirect("/webhooks"))
        }
        // A double click: the browser shows the second answer, so it shows the secret too.
        Ok(Created::Before(created)) => {
            page.flash(
                "info",
                format!(
                    "This form was already submitted: webhook \"{}\" was created once, not twice.",
                    created.name
                ),
            );
            keep_secret(&page, &created, false)?;
            Ok(redirect("/webhooks"))
        }
        Err(error) => rerender(error, |errors| form_page(&state, page, None, form, errors)),
    }
}

fn keep_secret(page: &Page, subscription: &Subscription, rotated: bool) -> Result<(), Error> {
    page.session
        .insert(
            NEW_SECRET_KEY,
            NewSecret {
                name: subscription.name.clone(),
                secret: subscription.secret.clone(),
                rotated,
            },
        )
        .map_err(|error| Error::Internal(anyhow::anyhow!("session: {error}")))
}

pub async fn edit_form(
    state: web::Data<AppState>,
    page: Page,
    key: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (program_id, key) = (page.program.id, key.into_inner());
    let subscription = {
        let key = key.clone();
        db::run(&state.pool, move |conn| {
            subscriptions::find(conn, program_id, &key)
        })
        .await?
    };
    let form = SubscriptionForm::of(&subscription);
    render(&form_page(&state, page, Some(key), form, FormErrors::default()))
}

pub async fn update(
    state: web::Data<AppState>,
    page: Page,
    key: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let form = SubscriptionForm::from_pairs(form.into_inner());
    let (program_id, actor, input, key) = (page.program.id, page.actor(), form.input(), key.into_inner());
    let policy = state.config.webhooks.policy;
    let result = {
        let key = key.clone();
        db::run(&state.pool, move |conn| {
            subscriptions::update(conn, program_id, &key, &actor, input, policy)
        })
        .await
    };
    match result {
        Ok(updated) => {
            page.flash("success", format!("Webhook \"{}\" saved.", updated.name));
            Ok(redirect("/webhooks"))
        }
        Err(error) => rerender(error, |errors| form_page(&state, page, Some(key), form, errors)),
    }
}

/// Turns a subscription on or off from the list.
pub async fn toggle(
    state: web::Data<AppState>,
    page: Page,
    key: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (program_id, actor, key) = (page.program.id, page.actor(), key.into_inner());
    let policy = state.config.webhooks.policy;
    let updated = db::run(&state.pool, move |conn| {
        let current = subscriptions::find(conn, program_id, &key)?;
        let input = SubscriptionInput {
            is_active: Some(!current.is_active),
            ..SubscriptionInput::default()
        };
        subscriptions::update(conn, program_id, &key, &actor, input, policy)
    })
    .await?;
    let state_word = if updated.is_active { "on" } else { "off" };
    page.flash(
        "success",
        format!("Webhook \"{}\" is {state_word}.", updated.name),
    );
    Ok(redirect("/webhooks"))
}

pub async fn rotate(
    state: web::Data<AppState>,
    page: Page,
    key: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (program_id, actor, key) = (page.program.id, page.actor(), key.into_inner());
    let rotated = db::run(&state.pool, move |conn| {
        subscriptions::rotate_secret(conn, program_id, &key, &actor)
    })
    .await?;
    keep_secret(&page, &rotated, true)?;
    Ok(redirect("/webhooks"))
}

pub async fn delete(
    state: web::Data<AppState>,
    page: Page,
    key: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (program_id, actor, key) = (page.program.id, page.actor(), key.into_inner());
    let deleted = db::run(&state.pool, move |conn| {
        subscriptions::delete(conn, program_id, &key, &actor)
    })
    .await?;
    page.flash(
        "success",
        format!("Webhook \"{}\" deleted with its delivery log.", deleted.name),
    );
    Ok(redirect("/webhooks"))
}

pub async fn send_test(
    state: web::Data<AppState>,
    page: Page,
    key: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (program_id, key) = (page.program.id, key.into_inner());
    let result = {
        let key = key.clone();
        db::run(&state.pool, move |conn| {
            delivery::send_test(conn, program_id, &key)
        })
        .await
    };
    match result {
        Ok(id) => page.flash(
            "success",
            format!("Test event {id} queued; its attempt shows below in a moment."),
        ),
        Err(Error::Invalid { message, .. }) => page.flash("error", message),
        Err(error) => return Err(error),
    }
    Ok(redirect(&format!("/webhooks/{key}/deliveries")))
}
