//! The server-rendered dashboard: routes, middleware, handlers and their templates.

pub mod access;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod context;
pub mod csrf;
pub mod dashboard;
pub mod health;
pub mod profile;
pub mod programs;
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
        .service(
            web::resource("/team")
                .route(web::get().to(team::index))
                .route(web::post().to(team::create)),
        )
        .service(web::resource("/team/new").route(web::get().to(team::new_form)))
        .service(web::resource("/team/{id}/role").route(web::post().to(team::change_role)))
        .service(web::resource("/team/{id}/disable").route(web::post().to(team::disable)))
        .service(web::resource("/team/{id}/enable").route(web::post().to(team::enable)))
        .service(
            web::resource("/team/{id}/password")
                .route(web::get().to(team::password_form))
                .route(web::post().to(team::reset_password)),
        )
        .service(
            web::resource("/set-password")
                .route(web::get().to(profile::set_password_form))
                .route(web::post().to(profile::set_password)),
        )
        .service(
            web::resource("/profile")
                .route(web::get().to(profile::show))
                .route(web::post().to(profile::update)),
        )
        .service(
            web::resource("/programs")
                .route(web::get().to(programs::index))
                .route(web::post().to(programs::create)),
        )
        .service(web::resource("/programs/new").route(web::get().to(programs::new_form)))
        .service(
            web::resource("/programs/{id}/edit")
                .route(web::get().to(programs::edit_form))
                .route(web::post().to(programs::update)),
        )
        .service(web::resource("/audit").route(web::get().to(audit::index)))
        .service(web::resource("/audit/export").route(web::get().to(audit::export)));
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
