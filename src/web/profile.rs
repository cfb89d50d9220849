//! A member's own profile (`/profile`) and the public page behind a set-password link
//! (`/set-password?token=`).

use actix_web::cookie::{CookieJar, Key};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::config::Config;
use crate::db;
use crate::domain::sessions::{self, MEMBER_ID_KEY};
use crate::domain::team;
use crate::error::Error;
use crate::web::auth::sign_in_session;
use crate::web::context::{flash, Page, PublicPage};
use crate::web::forms::{rerender, FormErrors};
use crate::web::{redirect, render, render_status};
use crate::AppState;

/// The session cookie's name, as configured in `Application::build`.
pub const SESSION_COOKIE: &str = "referdesk_session";

/// The `sessions` row id of the session this request belongs to.
///
/// actix-session does not expose the session key to handlers, so it is read the way the
/// middleware reads it: the signed cookie, verified with the same key. `None` when the
/// cookie is missing or its signature does not verify.
pub fn current_session_row_id(req: &HttpRequest, config: &Config) -> Option<String> {
    let cookie = req.cookie(SESSION_COOKIE)?;
    let key = Key::derive_from(&config.cookie_secret().ok()?);
    let mut jar = CookieJar::new();
    jar.add_original(cookie);
    let verified = jar.signed(&key).get(SESSION_COOKIE)?;
    Some(sessions::row_id(verified.value()))
}

#[derive(Template)]
#[template(path = "team/profile.html")]
struct ProfilePage {
    page: Page,
    name: String,
    errors: FormErrors,
}

pub async fn show(page: Page) -> Result<HttpResponse, Error> {
    let name = page.member.name.clone();
    render(&ProfilePage {
        page,
        name,
        errors: FormErrors::default(),
    })
}

#[derive(Deserialize)]
pub struct ProfileForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    password_confirmation: String,
}

pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: Page,
    form: web::Form<ProfileForm>,
) -> Result<HttpResponse, Error> {
    let form = form.into_inner();
    let keep = current_session_row_id(&req, &state.config);
    let changes_password = !form.new_password.is_empty() || !form.password_confirmation.is_empty();
    let actor = page.actor();
    let member_id = page.member.id;
    let typed = (
        form.name.clone(),
        form.current_password.clone(),
        form.new_password.clone(),
        form.password_confirmation.clone(),
    );
    let kept = keep.clone();
    let result = db::run(&state.pool, move |conn| {
        let (name, current, new, confirmation) = typed;
        let change = team::parse_profile_change(conn, member_id, &name, &current, &new, &confirmation)?;
        team::update_profile(conn, &actor, member_id, change, kept.as_deref())
    })
    .await;
    match result {
        Ok(_) => {
            if changes_password {
                if keep.is_none() {
                    // The current session could not be told apart, so every session
                    // ended: carry on in a new one rather than signing the member out.
                    page.session.renew();
                    page.session
                        .insert(MEMBER_ID_KEY, member_id)
                        .map_err(|error| Error::Internal(anyhow::anyhow!("session: {error}")))?;
                }
                page.flash(
                    "success",
                    "Your password was changed. Your other sessions have been signed out.",
                );
            } else {
                page.flash("success", "Your profile was saved.");
            }
            Ok(redirect("/profile"))
        }
        Err(error) => rerender(error, |errors| ProfilePage {
            page,
            name: form.name,
            errors,
        }),
    }
}

#[derive(Template)]
#[template(path = "team/set_password.html")]
struct SetPasswordPage {
    csrf: String,
    token: String,
    email: String,
    errors: FormErrors,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

pub async fn set_password_form(
    state: web::Data<AppState>,
    page: PublicPage,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, Error> {
    let token = query.into_inner().token;
    let check = token.clone();
    let member = db::run(&state.pool, move |conn| {
        team::member_for_password_link(conn, &check)
    })
    .await?;
    render(&SetPasswordPage {
        csrf: page.csrf,
        token,
        email: member.email,
        errors: FormErrors::default(),
    })
}

#[derive(Deserialize)]
pub struct SetPasswordForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirmation: String,
}

pub async fn set_password(
    state: web::Data<AppState>,
    page: PublicPage,
    form: web::Form<SetPasswordForm>,
) -> Result<HttpResponse, Error> {
    let form = form.into_inner();
    let problems = team::new_password_problems("password", &form.password, &form.password_confirmation);
    let result = if let Err(refused) = Error::refuse_any(problems) {
        Err(refused)
    } else {
        let token = form.token.clone();
        let password = form.password.clone();
        let address = Some(page.address.clone());
        db::run(&state.pool, move |conn| {
            team::complete_password_link(conn, &token, &password, address)
        })
        .await
    };
    match result {
        Ok(member) => {
            sign_in_session(&page.session, member.id)?;
            flash(
                &page.session,
                "success",
                "Your password is set and you are signed in.",
            );
            Ok(redirect("/"))
        }
        Err(error) => {
            let errors = FormErrors::from_error(error)?;
            let token = form.token.clone();
            let member = db::run(&state.pool, move |conn| {
                team::member_for_password_link(conn, &token)
            })
            .await?;
            render_status(
                errors.status(),
                &SetPasswordPage {
                    csrf: page.csrf,
                    token: form.token,
                    email: member.email,
                    errors,
                },
            )
        }
    }
}
