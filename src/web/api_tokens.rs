//! The API page (how to call `/v1`) and API token management (admins).

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db;
use crate::domain::tokens::{self, ApiToken, Created};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::FormErrors;
use crate::web::{redirect, render, render_status};
use crate::AppState;

#[derive(Template)]
#[template(path = "api/index.html")]
struct ApiPage {
    page: Page,
    base_url: String,
}

pub async fn docs(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    render(&ApiPage {
        page,
        base_url: format!("{}/v1", state.config.public_url),
    })
}

#[derive(Template)]
#[template(path = "api/tokens.html")]
struct TokensPage {
    page: Page,
    tokens: Vec<ApiToken>,
    name: String,
    /// The name box shows the refusal's summary: every refusal here is about the name.
    errors: FormErrors,
    /// The form's one-time token (see [`tokens::create_once`]).
    form_token: String,
    /// Shown once, on the page the creation redirects to.
    created: Option<NewToken>,
    base_url: String,
}

/// A token just created, kept in its creator's session until the token page shows it
/// (once): the page the creating POST redirects to, so a reload there creates nothing.
#[derive(Serialize, Deserialize)]
struct NewToken {
    name: String,
    secret: String,
}

const NEW_TOKEN_KEY: &str = "new_api_token";

async fn tokens_page(
    state: &AppState,
    page: Page,
    form: CreateForm,
    errors: FormErrors,
    created: Option<NewToken>,
) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let tokens = db::run(&state.pool, move |conn| tokens::list(conn, program_id)).await?;
    render_status(
        errors.status(),
        &TokensPage {
            page,
            tokens,
            name: form.name,
            errors,
            form_token: form.form_token,
            created,
            base_url: format!("{}/v1", state.config.public_url),
        },
    )
}

pub async fn index(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    let created = if page.session.contains_key(NEW_TOKEN_KEY) {
        page.session
            .remove_as::<NewToken>(NEW_TOKEN_KEY)
            .and_then(Result::ok)
    } else {
        None
    };
    let form = CreateForm {
        name: String::new(),
        form_token: Uuid::new_v4().to_string(),
    };
    tokens_page(&state, page, form, FormErrors::default(), created).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    form_token: String,
}

pub async fn create(
    state: web::Data<AppState>,
    page: Page,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, Error> {
    let form = form.into_inner();
    // The name first: its message is the one a person can act on.
    let checked = tokens::parse_name(&form.name).and_then(|_| {
        Uuid::parse_str(form.form_token.trim()).map_err(|_| {
            Error::invalid(
                "name",
                "This form is incomplete or expired. Check the name and submit it again.",
            )
        })
    });
    let form_token = match checked {
        Ok(form_token) => form_token,
        Err(error) => {
            let errors = FormErrors::from_error(error)?;
            let form = CreateForm {
                form_token: Uuid::new_v4().to_string(),
                ..form
            };
            return tokens_page(&state, page, form, errors, None).await;
        }
    };
    let program_id = page.program.id;
    let actor = page.actor();
    let requested = form.name.clone();
    let result = db::run(&state.pool, move |conn| {
        tokens::create_once(conn, program_id, &requested, form_token, &actor)
    })
    .await;
    match result {
        // The clear token goes to the page the browser is sent to, and from there nowhere.
        Ok(Created::New(token, secret)) => {
            page.session
                .insert(
                    NEW_TOKEN_KEY,
                    NewToken {
                        name: token.name,
                        secret,
                    },
                )
                .map_err(|error| Error::Internal(anyhow::anyhow!("session: {error}")))?;
            Ok(redirect("/api-tokens"))
        }
        Ok(Created::Before(token)) => {
            page.flash(
                "info",
                format!(
                    "This form was already submitted: token \"{}\" was created once, not twice. \
                     Its secret was shown once; if it is lost, revoke the token and create another.",
                    token.name
                ),
            );
            Ok(redirect("/api-tokens"))
        }
        Err(error) => tokens_page(&state, page, form, FormErrors::from_error(error)?, None).await,
    }
}

pub async fn revoke(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let actor = page.actor();
    let token_id = id.into_inner();
    let token = db::run(&state.pool, move |conn| {
        tokens::revoke(conn, program_id, token_id, &actor)
    })
    .await?;
    page.flash(
        "success",
        format!("Token \"{}\" is revoked; calls with it now get 401.", token.name),
    );
    Ok(redirect("/api-tokens"))
}
