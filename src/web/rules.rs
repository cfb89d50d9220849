//! `/rules`: the current program's reward rules and its reward settings. Everyone signed
//! in reads them; only admins create, edit, enable or disable a rule or save the settings
//! (the routes say so).

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db;
use crate::domain::ledger::CURRENCIES;
use crate::domain::rewards::rules::{self, RuleFields, RuleInput};
use crate::domain::rewards::settings::{self, RewardSettings};
use crate::domain::rewards::RewardRule;
use crate::error::Error;
use crate::web::context::Page;
use crate::web::forms::{rerender, FormErrors};
use crate::web::{redirect, render, render_status};
use crate::AppState;

/// The settings form as typed.
#[derive(Deserialize, Default)]
pub struct SettingsForm {
    #[serde(default)]
    max_referrals_per_hour: String,
    #[serde(default)]
    support_approval_limit: String,
}

impl SettingsForm {
    fn of(settings: &RewardSettings) -> SettingsForm {
        SettingsForm {
            max_referrals_per_hour: settings.max_referrals_per_hour.to_string(),
            support_approval_limit: settings.approval_limit_text(),
        }
    }
}

#[derive(Template)]
#[template(path = "rules/index.html")]
struct RulesPage {
    page: Page,
    rules: Vec<RewardRule>,
    settings: SettingsForm,
    errors: FormErrors,
}

async fn rules_page(
    state: &web::Data<AppState>,
    page: Page,
    form: Option<SettingsForm>,
    errors: FormErrors,
) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let (rules, current) = db::run(&state.pool, move |conn| {
        Ok((rules::list(conn, program_id)?, settings::get(conn, program_id)?))
    })
    .await?;
    render_status(
        errors.status(),
        &RulesPage {
            page,
            rules,
            settings: form.unwrap_or_else(|| SettingsForm::of(&current)),
            errors,
        },
    )
}

pub async fn index(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    rules_page(&state, page, None, FormErrors::default()).await
}

pub async fn save_settings(
    state: web::Data<AppState>,
    page: Page,
    form: web::Form<SettingsForm>,
) -> Result<HttpResponse, Error> {
    let form = form.into_inner();
    let program_id = page.program.id;
    let actor = page.actor();
    let result = match RewardSettings::parse(&form.max_referrals_per_hour, &form.support_approval_limit) {
        Ok(input) => {
            db::run(&state.pool, move |conn| {
                settings::update(conn, &actor, program_id, input)
            })
            .await
        }
        Err(error) => Err(error),
    };
    match result {
        Ok(_) => {
            page.flash("success", "Reward settings were saved.");
            Ok(redirect("/rules"))
        }
        Err(error) => {
            let errors = FormErrors::from_error(error)?;
            rules_page(&state, page, Some(form), errors).await
        }
    }
}

#[derive(Template)]
#[template(path = "rules/form.html")]
struct RuleFormPage {
    page: Page,
    /// `None` when creating.
    rule: Option<RewardRule>,
    form: RuleFields,
    currencies: &'static [&'static str],
    errors: FormErrors,
}

impl RuleFormPage {
    /// The units' message, next to the currency or the unit name, whichever is in use.
    fn units_error(&self, currency: bool) -> Option<&String> {
        self.errors
            .first("units")
            .filter(|_| self.form.is_currency() == currency)
    }

    fn action(&self) -> String {
        match &self.rule {
            Some(rule) => format!("/rules/{}/edit", rule.id),
            None => "/rules".to_string(),
        }
    }

    fn new(page: Page, rule: Option<RewardRule>, form: RuleFields, errors: FormErrors) -> RuleFormPage {
        RuleFormPage {
            page,
            rule,
            form,
            currencies: CURRENCIES,
            errors,
        }
    }
}

pub async fn new_form(page: Page) -> Result<HttpResponse, Error> {
    render(&RuleFormPage::new(
        page,
        None,
        RuleFields::fresh(),
        FormErrors::default(),
    ))
}

pub async fn create(
    state: web::Data<AppState>,
    page: Page,
    form: web::Form<RuleFields>,
) -> Result<HttpResponse, Error> {
    let form = form.into_inner();
    let program_id = page.program.id;
    let actor = page.actor();
    let result = match RuleInput::parse(&form) {
        Ok(input) => {
            db::run(&state.pool, move |conn| {
                rules::create(conn, &actor, program_id, input)
            })
            .await
        }
        Err(error) => Err(error),
    };
    match result {
        Ok(rule) => {
            page.flash("success", format!("Rule {} was created.", rule.name));
            Ok(redirect("/rules"))
        }
        Err(error) => rerender(error, |errors| RuleFormPage::new(page, None, form, errors)),
    }
}

pub async fn edit_form(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    let (program_id, id) = (page.program.id, id.into_inner());
    let rule = db::run(&state.pool, move |conn| rules::find(conn, program_id, id)).await?;
    let form = RuleFields::of(&rule);
    render(&RuleFormPage::new(page, Some(rule), form, FormErrors::default()))
}

pub async fn update(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
    form: web::Form<RuleFields>,
) -> Result<HttpResponse, Error> {
    let (program_id, id) = (page.program.id, id.into_inner());
    let form = form.into_inner();
    let rule = db::run(&state.pool, move |conn| rules::find(conn, program_id, id)).await?;
    let actor = page.actor();
    let result = match RuleInput::parse(&form) {
        Ok(input) => {
            db::run(&state.pool, move |conn| {
                rules::update(conn, &actor, program_id, id, input)
            })
            .await
        }
        Err(error) => Err(error),
    };
    match result {
        Ok(rule) => {
            page.flash(
                "success",
                format!(
                    "Rule {} was saved (version {}). Rewards it already created keep the rule as it was.",
                    rule.name, rule.version
                ),
            );
            Ok(redirect("/rules"))
        }
        Err(error) => rerender(error, |errors| RuleFormPage::new(page, Some(rule), form, errors)),
    }
}

async fn switch(
    state: web::Data<AppState>,
    page: Page,
    id: i64,
    enabled: bool,
) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let actor = page.actor();
    let rule = db::run(&state.pool, move |conn| {
        rules::set_enabled(conn, &actor, program_id, id, enabled)
    })
    .await?;
    let state_text = if enabled { "enabled" } else { "disabled" };
    page.flash("success", format!("Rule {} is {state_text}.", rule.name));
    Ok(redirect("/rules"))
}

pub async fn enable(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    switch(state, page, id.into_inner(), true).await
}

pub async fn disable(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    switch(state, page, id.into_inner(), false).await
}
