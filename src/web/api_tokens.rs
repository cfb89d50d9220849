//! The API page (how to call `/v1`) and API token management (admins).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db;
use crate::domain::tokens::{self, ApiToken};
use crate::error::Error;
use crate::web::context::Page;
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
    name_error: Option<String>,
    /// Shown once, right after creation.
    created: Option<(String, String)>,
    base_url: String,
}

async fn tokens_page(
    state: &AppState,
    page: Page,
    name: String,
    name_error: Option<String>,
    created: Option<(String, String)>,
    status: StatusCode,
) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let tokens = db::run(&state.pool, move |conn| tokens::list(conn, program_id)).await?;
    render_status(
        status,
        &TokensPage {
            page,
            tokens,
            name,
            name_error,
            created,
            base_url: format!("{}/v1", state.config.public_url),
        },
    )
}

pub async fn index(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    tokens_page(&state, page, String::new(), None, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
}

pub async fn create(
    state: web::Data<AppState>,
    page: Page,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, Error> {
    let name = form.into_inner().name;
    let program_id = page.program.id;
    let actor = page.actor();
    let requested = name.clone();
    let result = db::run(&state.pool, move |conn| {
        tokens::create(conn, program_id, &requested, &actor)
    })
    .await;
    match result {
        // The clear token is in this one response only; nothing stores it.
        Ok((token, secret)) => {
            tokens_page(
                &state,
                page,
                String::new(),
                None,
                Some((token.name, secret)),
                StatusCode::OK,
            )
            .await
        }
        Err(Error::Invalid { message, .. }) => {
            tokens_page(
                &state,
                page,
                name,
                Some(message),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(error) => Err(error),
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
