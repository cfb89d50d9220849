//! The buttons and small forms of a customer's page: delete / restore (admin), approve /
//! unapprove (support), change referrer (admin), add / delete an extra link (support),
//! erase personal data (admin).
//! Roles are declared with the routes (`web::routes`); the rules themselves live in the domain.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::detail::{render_detail, InlineForms, Pages, ReferrerProposal};
use super::{detail_path, load, KeyPath};
use crate::db;
use crate::domain::customers::{self, Customer, ReferrerRef};
use crate::domain::programs::Program;
use crate::domain::referral_links;
use crate::domain::Actor;
use crate::error::Error;
use crate::web::context::Page;
use crate::web::forms::FormErrors;
use crate::web::redirect;
use crate::AppState;

/// Loads the customer, runs `change` on it, flashes `message`, back to the customer.
async fn act<F>(
    state: web::Data<AppState>,
    page: Page,
    key: &str,
    change: F,
    message: impl FnOnce(&Customer) -> String,
) -> Result<HttpResponse, Error>
where
    F: FnOnce(&mut diesel::PgConnection, &Program, &Actor, i64) -> Result<Customer, Error> + Send + 'static,
{
    let customer = load(&state, page.program.id, key).await?;
    let (program, actor, id) = (page.program.clone(), page.actor(), customer.id);
    let changed = db::run(&state.pool, move |conn| change(conn, &program, &actor, id)).await?;
    page.flash("success", message(&changed));
    Ok(redirect(&detail_path(&changed.key)))
}

pub async fn delete(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, Error> {
    act(state, page, &path.key, customers::delete, |customer| {
        format!(
            "{} is deleted. An admin can restore them.",
            customer.display_name()
        )
    })
    .await
}

pub async fn restore(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, Error> {
    act(state, page, &path.key, customers::restore, |customer| {
        format!("{} is restored.", customer.display_name())
    })
    .await
}

#[derive(Deserialize)]
pub struct EraseForm {
    #[serde(default)]
    confirm: String,
}

/// Erases only when the customer's email or key was typed: a click alone never does.
pub async fn erase(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
    form: web::Form<EraseForm>,
) -> Result<HttpResponse, Error> {
    let customer = load(&state, page.program.id, &path.key).await?;
    let typed = form.into_inner().confirm;
    // Nothing personal left (erased before): the erasure changes nothing, so it asks nothing.
    if customer.has_personal_data() && !customer.erasure_confirmed_by(&typed) {
        let message = if typed.trim().is_empty() {
            "Type the customer's email or key to confirm the erasure."
        } else {
            "That is not this customer's email or key; nothing was erased."
        };
        let forms = InlineForms {
            erase_confirm: typed,
            errors: FormErrors::from_error(Error::invalid("confirm", message))?,
            ..Default::default()
        };
        return render_detail(&state, page, &customer.key, Pages::FIRST, forms).await;
    }
    act(
        state,
        page,
        &customer.key,
        customers::erase_personal_data,
        |customer| {
            format!(
                "The personal data of customer {} was erased. Their balance, links and referrals are kept.",
                customer.key
            )
        },
    )
    .await
}

pub async fn approve(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, Error> {
    act(
        state,
        page,
        &path.key,
        |conn, program, actor, id| customers::set_approved(conn, program, actor, id, true),
        |customer| format!("{} is approved.", customer.display_name()),
    )
    .await
}

pub async fn unapprove(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, Error> {
    act(
        state,
        page,
        &path.key,
        |conn, program, actor, id| customers::set_approved(conn, program, actor, id, false),
        |customer| format!("{} is no longer approved.", customer.display_name()),
    )
    .await
}

#[derive(Deserialize)]
pub struct ReferrerForm {
    #[serde(default)]
    referring_customer: String,
    /// `1` once the change was confirmed; the first submission only names it.
    #[serde(default)]
    confirm: String,
    /// `1` to remove the referrer: an empty field alone never does.
    #[serde(default)]
    remove: String,
}

/// Changing the referrer takes two steps: the first submission shows who would replace
/// whom, the confirmed one changes it. Removal is its own button.
pub async fn change_referrer(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
    form: web::Form<ReferrerForm>,
) -> Result<HttpResponse, Error> {
    let customer = load(&state, page.program.id, &path.key).await?;
    let form = form.into_inner();
    let typed = form.referring_customer;
    let referrer = if form.remove == "1" {
        None
    } else if let Some(named) = ReferrerRef::from_box(&typed) {
        Some(named)
    } else {
        let error = Error::invalid(
            "referring_customer",
            "Enter the key or email of the new referrer. To remove the referrer, use \"Remove referrer\".",
        );
        let forms = InlineForms {
            errors: FormErrors::from_error(error)?,
            ..Default::default()
        };
        return render_detail(&state, page, &customer.key, Pages::FIRST, forms).await;
    };
    let (program, actor, id) = (page.program.clone(), page.actor(), customer.id);
    if let (Some(named), false) = (referrer.clone(), form.confirm == "1") {
        let current = customer.clone();
        let program_id = program.id;
        let proposed = db::run(&state.pool, move |conn| {
            customers::proposed_referrer(conn, program_id, &current, &named)
        })
        .await;
        let forms = match proposed {
            Ok(proposed) => InlineForms {
                referrer: typed,
                referrer_proposal: Some(ReferrerProposal {
                    name: proposed.display_name(),
                    key: proposed.key,
                }),
                ..Default::default()
            },
            Err(error) => InlineForms {
                referrer: typed,
                errors: FormErrors::from_error(error)?,
                ..Default::default()
            },
        };
        return render_detail(&state, page, &customer.key, Pages::FIRST, forms).await;
    }
    let result = db::run(&state.pool, move |conn| {
        customers::change_referrer(conn, &program, &actor, id, referrer)
    })
    .await;
    match result {
        Ok(changed) => {
            let message = if changed.referrer_id.is_some() {
                "Referrer changed."
            } else {
                "Referrer removed."
            };
            page.flash("success", message);
            Ok(redirect(&format!("{}#referrer", detail_path(&changed.key))))
        }
        Err(error) => {
            let forms = InlineForms {
                referrer: typed,
                errors: FormErrors::from_error(error)?,
                ..Default::default()
            };
            render_detail(&state, page, &customer.key, Pages::FIRST, forms).await
        }
    }
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    code: String,
}

pub async fn add_link(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
    form: web::Form<LinkForm>,
) -> Result<HttpResponse, Error> {
    let customer = load(&state, page.program.id, &path.key).await?;
    let typed = form.into_inner().code;
    let code = typed.clone();
    let (program, actor, id) = (page.program.clone(), page.actor(), customer.id);
    let result = db::run(&state.pool, move |conn| {
        referral_links::create(conn, &program, &actor, id, &code)
    })
    .await;
    match result {
        Ok(link) => {
            page.flash("success", format!("Link {} added.", link.code));
            Ok(redirect(&format!("{}#links", detail_path(&customer.key))))
        }
        Err(error) => {
            let forms = InlineForms {
                code: typed,
                errors: FormErrors::from_error(error)?,
                ..Default::default()
            };
            render_detail(&state, page, &customer.key, Pages::FIRST, forms).await
        }
    }
}

#[derive(Deserialize)]
pub struct LinkPath {
    key: String,
    link_id: i64,
}

pub async fn delete_link(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<LinkPath>,
) -> Result<HttpResponse, Error> {
    let customer = load(&state, page.program.id, &path.key).await?;
    let (program, actor, id, link_id) = (page.program.clone(), page.actor(), customer.id, path.link_id);
    let link = db::run(&state.pool, move |conn| {
        referral_links::delete(conn, &program, &actor, id, link_id)
    })
    .await?;
    page.flash(
        "success",
        format!("Link {} deleted. Its code will not be reused.", link.code),
    );
    Ok(redirect(&format!("{}#links", detail_path(&customer.key))))
}
