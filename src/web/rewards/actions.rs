//! One reward at a time: approve, deny (with its reason form), and the admin's actions on a
//! reversal owed.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db;
use crate::domain::rewards::credit::rule_name;
use crate::domain::rewards::review::{self, Decision, Reviewer};
use crate::domain::rewards::{reversal, Reward, RewardStatus};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::forms::{rerender, FormErrors};
use crate::web::{redirect, render, safe_next};
use crate::AppState;

use super::amount_text;

/// The reviewer behind a dashboard request.
pub fn reviewer(page: &Page) -> Reviewer {
    Reviewer {
        actor: page.actor(),
        is_admin: page.is_admin(),
    }
}

#[derive(Deserialize)]
pub struct BackTo {
    #[serde(default)]
    next: String,
}

impl BackTo {
    /// Back to the queue page the action came from (same site only).
    fn location(&self) -> String {
        let next = safe_next(Some(&self.next));
        if next.starts_with("/rewards") {
            next.to_string()
        } else {
            "/rewards".to_string()
        }
    }
}

fn parse_id(raw: &str) -> Result<i64, Error> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(Error::NotFound)
}

/// The flash after one reward was decided.
fn decided_message(reward: &Reward) -> String {
    let amount = amount_text(&reward.amount, &reward.amount_units, reward.is_currency);
    match reward.status {
        RewardStatus::Credited => format!("Reward #{} approved and credited: {amount}.", reward.id),
        RewardStatus::Approved => format!(
            "Reward #{} approved: {amount} will be credited when its hold ends ({}).",
            reward.id,
            reward.hold_until.format("%Y-%m-%d %H:%M UTC")
        ),
        _ => format!("Reward #{} denied.", reward.id),
    }
}

/// Back to the queue after an action on one reward: with the flash `message` words for
/// the changed reward, or with why the action was refused.
fn back_to_queue(
    page: &Page,
    result: Result<Reward, Error>,
    back: &str,
    message: impl FnOnce(&Reward) -> String,
) -> Result<HttpResponse, Error> {
    match result {
        Ok(reward) => {
            page.flash("success", message(&reward));
            Ok(redirect(back))
        }
        Err(error) => flash_refusal(page, error, back),
    }
}

/// A refused action comes back to the queue as a flash: the queue is where the reviewer is.
fn flash_refusal(page: &Page, error: Error, back: &str) -> Result<HttpResponse, Error> {
    let errors = FormErrors::from_error(error)?;
    page.flash(
        "error",
        errors.summary().unwrap_or("The reward could not be changed."),
    );
    Ok(redirect(back))
}

pub async fn approve(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<String>,
    form: web::Form<BackTo>,
) -> Result<HttpResponse, Error> {
    let id = parse_id(&path)?;
    let back = form.location();
    let (program_id, reviewer) = (page.program.id, reviewer(&page));
    let now = chrono::Utc::now();
    let result = db::run(&state.pool, move |conn| {
        review::decide(conn, program_id, &reviewer, id, &Decision::Approve, now)
    })
    .await;
    back_to_queue(&page, result, &back, decided_message)
}

#[derive(Template)]
#[template(path = "rewards/deny.html")]
struct DenyPage {
    page: Page,
    reward: Reward,
    rule: String,
    amount: String,
    reason: String,
    next: String,
    errors: FormErrors,
}

async fn find(state: &AppState, program_id: i64, id: i64) -> Result<Reward, Error> {
    db::run(&state.pool, move |conn| review::find(conn, program_id, id)).await
}

fn deny_page(page: Page, reward: Reward, reason: String, next: String, errors: FormErrors) -> DenyPage {
    DenyPage {
        rule: rule_name(&reward),
        amount: amount_text(&reward.amount, &reward.amount_units, reward.is_currency),
        page,
        reward,
        reason,
        next,
        errors,
    }
}

pub async fn deny_form(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<String>,
    query: web::Query<BackTo>,
) -> Result<HttpResponse, Error> {
    let reward = find(&state, page.program.id, parse_id(&path)?).await?;
    let next = query.location();
    render(&deny_page(
        page,
        reward,
        String::new(),
        next,
        FormErrors::default(),
    ))
}

#[derive(Deserialize)]
pub struct DenyForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    next: String,
}

pub async fn deny(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<String>,
    form: web::Form<DenyForm>,
) -> Result<HttpResponse, Error> {
    let id = parse_id(&path)?;
    let form = form.into_inner();
    let back = BackTo { next: form.next }.location();
    let (program_id, reviewer) = (page.program.id, reviewer(&page));
    let reason = form.reason.clone();
    let result = db::run(&state.pool, move |conn| {
        let decision = Decision::Deny(review::parse_reason(&reason)?);
        review::decide(conn, program_id, &reviewer, id, &decision, chrono::Utc::now())
    })
    .await;
    match result {
        Ok(reward) => {
            page.flash("success", decided_message(&reward));
            Ok(redirect(&back))
        }
        Err(Error::Forbidden(message)) => Err(Error::Forbidden(message)),
        Err(error) => {
            let reward = find(&state, page.program.id, id).await?;
            rerender(error, |errors| deny_page(page, reward, form.reason, back, errors))
        }
    }
}

/// Admins only (`web::routes`): books what the beneficiary's balance holds of a reversal owed.
pub async fn collect(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<String>,
    form: web::Form<BackTo>,
) -> Result<HttpResponse, Error> {
    let id = parse_id(&path)?;
    let back = form.location();
    let (program_id, actor) = (page.program.id, page.actor());
    let result = db::run(&state.pool, move |conn| {
        reversal::collect(conn, program_id, &actor, id)
    })
    .await;
    back_to_queue(&page, result, &back, |reward| match &reward.reversal_owed {
        Some(rest) => format!(
            "Booked what the balance held for reward #{}; {} is still owed.",
            reward.id,
            amount_text(rest, &reward.amount_units, reward.is_currency)
        ),
        None => format!("Reward #{} is fully reversed.", reward.id),
    })
}

/// Admins only (`web::routes`): gives up the rest of a reversal owed.
pub async fn write_off(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<String>,
    form: web::Form<BackTo>,
) -> Result<HttpResponse, Error> {
    let id = parse_id(&path)?;
    let back = form.location();
    let (program_id, actor) = (page.program.id, page.actor());
    let result = db::run(&state.pool, move |conn| {
        reversal::write_off(conn, program_id, &actor, id)
    })
    .await;
    back_to_queue(&page, result, &back, |reward| {
        format!("The reversal owed on reward #{} was written off.", reward.id)
    })
}
