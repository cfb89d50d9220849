//! The server-rendered dashboard: routes, middleware, handlers and their templates.

pub mod access;
pub mod api_tokens;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod context;
pub mod csrf;
pub mod customers;
pub mod dashboard;
pub mod device;
pub mod error_pages;
pub mod forms;
pub mod health;
pub mod invites;
pub mod ledger;
pub mod paging;
pub mod profile;
pub mod programs;
pub mod referral_redirect;
pub mod session_store;
pub mod sessionless;
pub mod team;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use askama::Template;

use crate::error::Error;

/// Registers every dashboard route. Each must also have a line in [`access::RULES`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    // One resource per path, so a wrong method is a 405 rather than a 404.
    cfg.service(web::resource("/healthz").route(web::get().to(health::healthz)))
        .service(web::resource("/readyz").route(web::get().to(health::readyz)))
        .service(web::resource("/static/{file}").route(web::get().to(assets::serve)))
        .service(
            web::resource("/login")
                .route(web::get().to(auth::login_form))
                .route(web::post().to(auth::login)),
        )
        .service(web::resource("/logout").route(web::post().to(auth::logout)))
        .service(
            web::resource("/setup")
                .route(web::get().to(auth::setup_form))
                .route(web::post().to(auth::setup)),
        )
        .service(web::resource("/program").route(web::post().to(auth::switch_program)))
        .service(web::resource("/").route(web::get().to(dashboard::show)))
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
        .service(web::resource("/audit/export").route(web::get().to(audit::export)))
        .service(web::resource("/r/{program}/{code}").route(web::get().to(referral_redirect::follow)))
        // Fixed paths before `/customers/{key}`, which would match them too.
        .service(
            web::resource("/customers")
                .route(web::get().to(customers::index))
                .route(web::post().to(customers::create)),
        )
        .service(web::resource("/customers/new").route(web::get().to(customers::new_form)))
        .service(web::resource("/customers/export.csv").route(web::get().to(customers::export_csv)))
        .service(web::resource("/customers/{key}").route(web::get().to(customers::show)))
        .service(
            web::resource("/customers/{key}/edit")
                .route(web::get().to(customers::edit_form))
                .route(web::post().to(customers::update)),
        )
        .service(web::resource("/customers/{key}/delete").route(web::post().to(customers::delete)))
        .service(web::resource("/customers/{key}/restore").route(web::post().to(customers::restore)))
        .service(web::resource("/customers/{key}/erase").route(web::post().to(customers::erase)))
        .service(web::resource("/customers/{key}/approve").route(web::post().to(customers::approve)))
        .service(web::resource("/customers/{key}/unapprove").route(web::post().to(customers::unapprove)))
        .service(web::resource("/customers/{key}/referrer").route(web::post().to(customers::change_referrer)))
        .service(web::resource("/customers/{key}/links").route(web::post().to(customers::add_link)))
        .service(
            web::resource("/customers/{key}/links/{link_id}/delete")
                .route(web::post().to(customers::delete_link)),
        )
        .service(web::resource("/api").route(web::get().to(api_tokens::docs)))
        .service(
            web::resource("/api-tokens")
                .route(web::get().to(api_tokens::index))
                .route(web::post().to(api_tokens::create)),
        )
        .service(web::resource("/api-tokens/{id}/revoke").route(web::post().to(api_tokens::revoke)))
        .service(
            web::resource("/customers/{key}/credit")
                .route(web::get().to(ledger::form))
                .route(web::post().to(ledger::submit)),
        )
        .service(
            web::resource("/customers/{key}/invite")
                .route(web::get().to(invites::customer_form))
                .route(web::post().to(invites::customer_create)),
        )
        .service(web::resource("/invites").route(web::get().to(invites::index)))
        .service(
            web::resource("/invites/new")
                .route(web::get().to(invites::new_form))
                .route(web::post().to(invites::create)),
        )
        .service(web::resource("/invites/{id}/retry").route(web::post().to(invites::retry)));
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
///
/// A location that cannot be a header value (control characters) becomes `/`: building
/// the response with it would fail and answer 500.
pub fn redirect(location: &str) -> HttpResponse {
    let location = header::HeaderValue::from_str(location).unwrap_or_else(|_| {
        tracing::warn!("refused a redirect location that is not a valid header value");
        header::HeaderValue::from_static("/")
    });
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Only same-site paths are followed after sign-in (no open redirect): anything else
/// gives `/`.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path) if is_same_site_path(path) => path,
        _ => "/",
    }
}

/// A path on this site, as a browser would read it: one leading `/` not followed by `/`
/// or `\` (either makes a network-path reference to another host), no backslash (browsers
/// read it as `/`), and no control characters or whitespace (browsers drop some of them,
/// turning `/\t/host` into `//host`, and CR/LF cannot go in a header). Percent-encoded
/// forms are decoded and checked again, until decoding changes nothing.
fn is_same_site_path(path: &str) -> bool {
    // More rounds than any honest path needs; a deeper nesting is refused.
    const MAX_DECODINGS: usize = 4;
    let mut current = std::borrow::Cow::Borrowed(path);
    for _ in 0..MAX_DECODINGS {
        if !has_same_site_shape(&current) {
            return false;
        }
        let decoded = match percent_encoding::percent_decode_str(&current).decode_utf8() {
            Ok(decoded) => decoded.into_owned(),
            Err(_) => return false,
        };
        if decoded == current {
            return true;
        }
        current = std::borrow::Cow::Owned(decoded);
    }
    false
}

fn has_same_site_shape(path: &str) -> bool {
    path.starts_with('/')
        && !path[1..].starts_with('/')
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The answer for a route that does not exist: JSON under `/v1`, a styled page elsewhere.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    if req.path().starts_with("/v1") {
        Error::NotFound.json_response()
    } else {
        Error::NotFound.html_response()
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_followed_only_to_a_path_on_this_site() {
        let off_site = [
            "/%09/x.example",
            "/%0d%0aSet-Cookie:x",
            "/\r\nSet-Cookie:x",
            "/\t/x.example",
            "/\u{0b}/x.example",
            "//x.example",
            "/\\x.example",
            "\\/x.example",
            "https://x.example",
            "/%2F%2Fx.example",
            "/%2f/x.example",
            "/%5Cx.example",
            "/%252F%252Fx.example",
            "/%25252F%25252Fx.example",
            "/%ff",
            "/a b",
            "/a\u{a0}b",
            "javascript:alert(1)",
            "x.example",
            "",
        ];
        for next in off_site {
            assert_eq!(safe_next(Some(next)), "/", "{next:?} must not be followed");
        }
        let on_site = [
            "/",
            "/customers",
            "/customers?q=a&page=2",
            "/customers?q=ada+lovelace&status=referred",
            "/customers/%C3%A9",
            "/invites?status=sent#top",
        ];
        for next in on_site {
            assert_eq!(safe_next(Some(next)), next, "{next:?} is a path on this site");
        }
        assert_eq!(safe_next(None), "/");
    }
}
