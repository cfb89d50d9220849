//! Team management pages (admins only): the member list, adding a member, changing a
//! role, disabling/enabling, and resetting a password.

use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};

use crate::db;
use crate::domain::team::{self, Member, NewMember, Role};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::{rerender, FormErrors};
use crate::web::{redirect, render, render_status};
use crate::AppState;

/// A set-password link waiting to be shown to the admin who created it (exactly once).
#[derive(Serialize, Deserialize)]
struct IssuedLink {
    email: String,
    url: String,
}

const ISSUED_LINK_KEY: &str = "issued_password_link";

fn remember_link(session: &Session, email: &str, url: String) -> Result<(), Error> {
    session
        .insert(
            ISSUED_LINK_KEY,
            IssuedLink {
                email: email.to_string(),
                url,
            },
        )
        .map_err(|error| Error::Internal(anyhow::anyhow!("session: {error}")))
}

fn take_link(session: &Session) -> Option<IssuedLink> {
    // Only touch the session when there is a link: a removal marks it changed (a write).
    if !session.contains_key(ISSUED_LINK_KEY) {
        return None;
    }
    session
        .remove_as::<IssuedLink>(ISSUED_LINK_KEY)
        .and_then(Result::ok)
}

fn link_url(state: &AppState, token: &str) -> String {
    format!("{}/set-password?token={}", state.config.public_url, token)
}

#[derive(Template)]
#[template(path = "team/index.html")]
struct TeamPage {
    page: Page,
    members: Vec<Member>,
    roles: [Role; 3],
    issued: Option<IssuedLink>,
    /// A refused list action (e.g. disabling the last admin), shown above the list.
    errors: FormErrors,
}

async fn team_page(state: &AppState, page: Page, errors: FormErrors) -> Result<HttpResponse, Error> {
    let members = db::run(&state.pool, team::list_members).await?;
    let issued = take_link(&page.session);
    render_status(
        errors.status(),
        &TeamPage {
            page,
            members,
            roles: Role::ALL,
            issued,
            errors,
        },
    )
}

pub async fn index(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    team_page(&state, page, FormErrors::default()).await
}

/// Renders the outcome of a list action: back to the list, or the list again with the
/// refusal (422) when the rule said no.
async fn after_action(
    state: &AppState,
    page: Page,
    result: Result<String, Error>,
) -> Result<HttpResponse, Error> {
    match result {
        Ok(message) => {
            page.flash("success", message);
            Ok(redirect("/team"))
        }
        Err(error) => team_page(state, page, FormErrors::from_error(error)?).await,
    }
}

#[derive(Template)]
#[template(path = "team/new.html")]
struct NewMemberPage {
    page: Page,
    form: NewMemberForm,
    roles: [Role; 3],
    errors: FormErrors,
}

#[derive(Deserialize, Default)]
pub struct NewMemberForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    /// `password` (set an initial password) or `link` (generate a set-password link).
    #[serde(default)]
    password_mode: String,
    #[serde(default)]
    password: String,
}

impl NewMemberForm {
    fn wants_link(&self) -> bool {
        self.password_mode != "password"
    }
}

pub async fn new_form(page: Page) -> Result<HttpResponse, Error> {
    render(&NewMemberPage {
        page,
        form: NewMemberForm {
            role: Role::Viewer.as_str().into(),
            password_mode: "link".into(),
            ..NewMemberForm::default()
        },
        roles: Role::ALL,
        errors: FormErrors::default(),
    })
}

pub async fn create(
    state: web::Data<AppState>,
    page: Page,
    form: web::Form<NewMemberForm>,
) -> Result<HttpResponse, Error> {
    let form = form.into_inner();
    let password = (!form.wants_link()).then_some(form.password.as_str());
    let mut parsed = NewMember::parse(&form.email, &form.name, &form.role, password);
    if !form.wants_link() && form.password.is_empty() {
        // Reported with the other fields' messages, not after them.
        let mut fields = parsed
            .err()
            .and_then(|error| error.field_errors().cloned())
            .unwrap_or_default();
        fields.insert(
            "password".into(),
            vec!["Enter an initial password, or choose to generate a set-password link.".into()],
        );
        parsed = Err(Error::invalid_fields(fields));
    }
    let actor = page.actor();
    let result = match parsed {
        Ok(new) => db::run(&state.pool, move |conn| team::add_member(conn, &actor, new)).await,
        Err(refusal) => {
            let email = form.email.clone();
            match db::run(&state.pool, move |conn| {
                team::with_email_clash(conn, &email, refusal)
            })
            .await
            {
                Ok(refusal) | Err(refusal) => Err(refusal),
            }
        }
    };
    match result {
        Ok((member, link)) => {
            if let Some(token) = link {
                remember_link(&page.session, &member.email, link_url(&state, &token))?;
            }
            page.flash(
                "success",
                format!("{} was added as {}.", member.email, member.role),
            );
            Ok(redirect("/team"))
        }
        Err(error) => rerender(error, |errors| NewMemberPage {
            page,
            form,
            roles: Role::ALL,
            errors,
        }),
    }
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

pub async fn change_role(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
    form: web::Form<RoleForm>,
) -> Result<HttpResponse, Error> {
    let member_id = id.into_inner();
    let actor = page.actor();
    let result = match Role::parse(form.role.trim()) {
        Some(role) => db::run(&state.pool, move |conn| {
            team::change_role(conn, &actor, member_id, role)
        })
        .await
        .map(|member| format!("{} is now {}.", member.email, member.role)),
        None => Err(Error::invalid("role", "Choose viewer, support or admin.")),
    };
    after_action(&state, page, result).await
}

pub async fn disable(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    set_disabled(state, page, id.into_inner(), true).await
}

pub async fn enable(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    set_disabled(state, page, id.into_inner(), false).await
}

async fn set_disabled(
    state: web::Data<AppState>,
    page: Page,
    member_id: i64,
    disabled: bool,
) -> Result<HttpResponse, Error> {
    let actor = page.actor();
    let result = db::run(&state.pool, move |conn| {
        team::set_disabled(conn, &actor, member_id, disabled)
    })
    .await
    .map(|member| {
        if disabled {
            format!("{} is disabled and has been signed out.", member.email)
        } else {
            format!("{} can sign in again.", member.email)
        }
    });
    after_action(&state, page, result).await
}

#[derive(Template)]
#[template(path = "team/password.html")]
struct ResetPasswordPage {
    page: Page,
    member: Member,
    errors: FormErrors,
}

pub async fn password_form(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    let member_id = id.into_inner();
    let member = db::run(&state.pool, move |conn| team::find(conn, member_id)).await?;
    render(&ResetPasswordPage {
        page,
        member,
        errors: FormErrors::default(),
    })
}

#[derive(Deserialize)]
pub struct ResetPasswordForm {
    /// `link` (generate a one-time link) or `set` (type a new password).
    #[serde(default)]
    mode: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirmation: String,
}

pub async fn reset_password(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
    form: web::Form<ResetPasswordForm>,
) -> Result<HttpResponse, Error> {
    let member_id = id.into_inner();
    let form = form.into_inner();
    let actor = page.actor();
    if form.mode == "set" {
        let password = form.password.clone();
        let problems = team::new_password_problems("password", &form.password, &form.password_confirmation);
        let result = if let Err(refused) = Error::refuse_any(problems) {
            Err(refused)
        } else {
            db::run(&state.pool, move |conn| {
                team::reset_password(conn, &actor, member_id, &password)
            })
            .await
        };
        return match result {
            Ok(member) => {
                page.flash(
                    "success",
                    format!(
                        "The password of {} was changed and their sessions ended.",
                        member.email
                    ),
                );
                Ok(redirect("/team"))
            }
            Err(error) => {
                let errors = FormErrors::from_error(error)?;
                let member = db::run(&state.pool, move |conn| team::find(conn, member_id)).await?;
                render_status(errors.status(), &ResetPasswordPage { page, member, errors })
            }
        };
    }
    let (member, token) = db::run(&state.pool, move |conn| {
        let token = team::issue_password_link(conn, &actor, member_id)?;
        Ok((team::find(conn, member_id)?, token))
    })
    .await?;
    remember_link(&page.session, &member.email, link_url(&state, &token))?;
    page.flash(
        "success",
        format!("A new set-password link for {} is ready.", member.email),
    );
    Ok(redirect("/team"))
}
