//! The server-rendered dashboard: routes, middleware, handlers and their templates.

pub mod access;
pub mod assets;
pub mod auth;
pub mod context;
pub mod csrf;
pub mod customers;
pub mod dashboard;
pub mod health;
pub mod paging;
pub mod referral_redirect;
pub mod session_store;
pub mod team;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use askama::Template;

use crate::error::Error;

/// Registers every dashboard route. Each must also have a line in [`access::RULES`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/static/{file}", web::get().to(assets::serve))
        .route("/login", web::get().to(auth::login_form))
        .route("/login", web::post().to(auth::login))
        .route("/logout", web::post().to(auth::logout))
        .route("/setup", web::get().to(auth::setup_form))
        .route("/setup", web::post().to(auth::setup))
        .route("/program", web::post().to(auth::switch_program))
        .route("/", web::get().to(dashboard::show))
        .route("/team", web::get().to(team::index))
        .route("/r/{program}/{code}", web::get().to(referral_redirect::follow))
        // Fixed paths before `/customers/{key}`, which would match them too.
        .route("/customers", web::get().to(customers::index))
        .route("/customers", web::post().to(customers::create))
        .route("/customers/new", web::get().to(customers::new_form))
        .route("/customers/export.csv", web::get().to(customers::export_csv))
        .route("/customers/{key}", web::get().to(customers::show))
        .route("/customers/{key}/edit", web::get().to(customers::edit_form))
        .route("/customers/{key}/edit", web::post().to(customers::update))
        .route("/customers/{key}/delete", web::post().to(customers::delete))
        .route("/customers/{key}/restore", web::post().to(customers::restore))
        .route("/customers/{key}/approve", web::post().to(customers::approve))
        .route("/customers/{key}/unapprove", web::post().to(customers::unapprove))
        .route(
            "/customers/{key}/referrer",
            web::post().to(customers::change_referrer),
        )
        .route("/customers/{key}/links", web::post().to(customers::add_link))
        .route(
            "/customers/{key}/links/{link_id}/delete",
            web::post().to(customers::delete_link),
        );
}

/// Renders a page with 200 OK.
pub fn render<T: Template>(template: &T) -> Result<HttpResponse, Error> {
    render_status(StatusCode::OK, template)
}

/// Renders a page with the given status (e.g. 422 for a form with errors).
pub fn render_status<T: Template>(status: StatusCode, template: &T) -> Result<HttpResponse, Error> {
    let html = template
        .render()
        .map_err(|error| Error::Internal(anyhow::anyhow!("template error: {error}")))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        // Signed-in pages hold personal data: never from a cache, not even the back button.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html))
}

/// 303 See Other: the answer to a successful form POST.
pub fn redirect(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Only same-site paths are followed after sign-in (no open redirect).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => path,
        _ => "/",
    }
}

/// The answer for a route that does not exist: JSON under `/v1`, a styled page elsewhere.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    if req.path().starts_with("/v1") {
        Error::NotFound.json_response()
    } else {
        Error::NotFound.html_response()
    }
}
