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
pub mod format;
pub mod forms;
pub mod health;
pub mod imports;
pub mod invites;
pub mod jobs;
pub mod ledger;
pub mod paging;
pub mod profile;
pub mod programs;
pub mod read_routing;
pub mod referral_redirect;
pub mod rewards;
pub mod rules;
pub mod session_store;
pub mod sessionless;
pub mod team;
pub mod transactions;
pub mod webhook_log;
pub mod webhooks;

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use askama::Template;

use crate::error::Error;
use crate::routes::Access::{Public, Sessionless};
use crate::routes::{Routes, ADMIN, SUPPORT, VIEWER};

/// Every dashboard route and who may use it (checked for each request by
/// [`access::enforce`]). One resource per path, so a wrong method is a 405 rather than a
/// 404; a fixed path is declared before a pattern that would match it too.
pub fn routes(routes: &mut Routes) {
    sign_in_routes(routes);
    team_routes(routes);
    programs_routes(routes);
    history_routes(routes);
    customers_routes(routes);
    api_tokens_routes(routes);
    credits_and_invites_routes(routes);
    webhooks_routes(routes);
    jobs_routes(routes);
    rewards_routes(routes);
}

/// Health probes, assets, signing in and out, the dashboard.
fn sign_in_routes(routes: &mut Routes) {
    routes
        .get("/healthz", Sessionless, health::healthz)
        .get("/readyz", Sessionless, health::readyz)
        .get("/static/{file}", Public, assets::serve)
        .get("/login", Public, auth::login_form)
        .post("/login", Public, auth::login)
        .post("/logout", VIEWER, auth::logout)
        .get("/setup", Public, auth::setup_form)
        .post("/setup", Public, auth::setup)
        .post("/program", VIEWER, auth::switch_program)
        .get("/", VIEWER, dashboard::show);
}

/// The team and each member's own profile.
fn team_routes(routes: &mut Routes) {
    routes
        .get("/team", ADMIN, team::index)
        .post("/team", ADMIN, team::create)
        .get("/team/new", ADMIN, team::new_form)
        .post("/team/{id}/role", ADMIN, team::change_role)
        .post("/team/{id}/disable", ADMIN, team::disable)
        .post("/team/{id}/enable", ADMIN, team::enable)
        .get("/team/{id}/password", ADMIN, team::password_form)
        .post("/team/{id}/password", ADMIN, team::reset_password)
        // Reached through a one-time link, before the member can sign in.
        .get("/set-password", Public, profile::set_password_form)
        .post("/set-password", Public, profile::set_password)
        .get("/profile", VIEWER, profile::show)
        .post("/profile", VIEWER, profile::update);
}

/// Programs and their reward rules.
fn programs_routes(routes: &mut Routes) {
    routes
        .get("/programs", ADMIN, programs::index)
        .post("/programs", ADMIN, programs::create)
        .get("/programs/new", ADMIN, programs::new_form)
        .get("/programs/{id}/edit", ADMIN, programs::edit_form)
        .post("/programs/{id}/edit", ADMIN, programs::update)
        .get("/rules", VIEWER, rules::index)
        .post("/rules", ADMIN, rules::create)
        .get("/rules/new", ADMIN, rules::new_form)
        .post("/rules/settings", ADMIN, rules::save_settings)
        .get("/rules/{id}/edit", ADMIN, rules::edit_form)
        .post("/rules/{id}/edit", ADMIN, rules::update)
        .post("/rules/{id}/enable", ADMIN, rules::enable)
        .post("/rules/{id}/disable", ADMIN, rules::disable);
}

/// Transactions, the audit log, and the public referral link.
fn history_routes(routes: &mut Routes) {
    routes
        .get("/transactions", VIEWER, transactions::index)
        .get("/audit", ADMIN, audit::index)
        .get("/audit/export", ADMIN, audit::export)
        .get("/r/{program}/{code}", Public, referral_redirect::follow);
}

/// Customers: the list, bulk actions, imports and one customer's page.
fn customers_routes(routes: &mut Routes) {
    routes
        .get("/customers", VIEWER, customers::index)
        .post("/customers", SUPPORT, customers::create)
        .get("/customers/new", SUPPORT, customers::new_form)
        .get("/customers/export.csv", VIEWER, customers::export_csv)
        // Delete and restore need ADMIN: `bulk::BulkForm::allowed_action` checks it first.
        .post("/customers/bulk", SUPPORT, customers::bulk::confirm)
        .post("/customers/bulk/run", SUPPORT, customers::bulk::run)
        .post("/customers/bulk/export", VIEWER, customers::bulk::export)
        .get("/customers/import", ADMIN, imports::upload_form)
        .post("/customers/import", ADMIN, imports::upload)
        .get("/customers/import/{id}", ADMIN, imports::show)
        .post("/customers/import/{id}", ADMIN, imports::submit)
        .get("/customers/import/{id}/refused.csv", ADMIN, imports::refused_csv)
        .get("/customers/{key}", VIEWER, customers::show)
        .get("/customers/{key}/edit", SUPPORT, customers::edit_form)
        .post("/customers/{key}/edit", SUPPORT, customers::update)
        .post("/customers/{key}/delete", ADMIN, customers::delete)
        .post("/customers/{key}/restore", ADMIN, customers::restore)
        .post("/customers/{key}/erase", ADMIN, customers::erase)
        .post("/customers/{key}/approve", SUPPORT, customers::approve)
        .post("/customers/{key}/unapprove", SUPPORT, customers::unapprove)
        .post("/customers/{key}/referrer", ADMIN, customers::change_referrer)
        .post("/customers/{key}/links", SUPPORT, customers::add_link)
        .post(
            "/customers/{key}/links/{link_id}/delete",
            SUPPORT,
            customers::delete_link,
        );
}

/// The API's description and its tokens.
fn api_tokens_routes(routes: &mut Routes) {
    routes
        .get("/api", VIEWER, api_tokens::docs)
        .get("/api-tokens", ADMIN, api_tokens::index)
        .post("/api-tokens", ADMIN, api_tokens::create)
        .post("/api-tokens/{id}/revoke", ADMIN, api_tokens::revoke);
}

/// Crediting a customer and inviting friends.
fn credits_and_invites_routes(routes: &mut Routes) {
    routes
        .get("/customers/{key}/credit", SUPPORT, ledger::form)
        // A debit (`kind=debit` on the same form) needs ADMIN: `ledger::submit` checks it
        // before anything else.
        .post("/customers/{key}/credit", SUPPORT, ledger::submit)
        .get("/customers/{key}/invite", SUPPORT, invites::customer_form)
        .post("/customers/{key}/invite", SUPPORT, invites::customer_create)
        .get("/invites", VIEWER, invites::index)
        .get("/invites/new", SUPPORT, invites::new_form)
        .post("/invites/new", SUPPORT, invites::create)
        .post("/invites/{id}/retry", SUPPORT, invites::retry);
}

/// Webhooks and their delivery log.
fn webhooks_routes(routes: &mut Routes) {
    routes
        .get("/webhooks", ADMIN, webhooks::index)
        .post("/webhooks", ADMIN, webhooks::create)
        .get("/webhooks/new", ADMIN, webhooks::new_form)
        .get("/webhooks/deliveries", ADMIN, webhook_log::customer)
        .get("/webhooks/{key}/edit", ADMIN, webhooks::edit_form)
        .post("/webhooks/{key}/edit", ADMIN, webhooks::update)
        .post("/webhooks/{key}/toggle", ADMIN, webhooks::toggle)
        .post("/webhooks/{key}/rotate", ADMIN, webhooks::rotate)
        .post("/webhooks/{key}/test", ADMIN, webhooks::send_test)
        .post("/webhooks/{key}/delete", ADMIN, webhooks::delete)
        .get("/webhooks/{key}/deliveries", ADMIN, webhook_log::index)
        .post(
            "/webhooks/{key}/deliveries/{id}/resend",
            ADMIN,
            webhook_log::resend,
        )
        .post("/webhooks/{key}/resend-failed", ADMIN, webhook_log::resend_failed);
}

/// Background jobs (bulk actions, imports).
fn jobs_routes(routes: &mut Routes) {
    routes
        .get("/jobs", VIEWER, jobs::index)
        .get("/jobs/{id}", VIEWER, jobs::show)
        .get("/jobs/{id}/skipped.csv", VIEWER, jobs::skipped_csv)
        .post("/jobs/{id}/cancel", SUPPORT, jobs::cancel);
}

/// Reviewing rewards.
fn rewards_routes(routes: &mut Routes) {
    routes
        .get("/rewards", VIEWER, rewards::index)
        .post("/rewards/confirm", SUPPORT, rewards::bulk::confirm)
        .post("/rewards/decide", SUPPORT, rewards::bulk::decide)
        // Rewards above the program's support threshold need an admin: the domain
        // (`rewards::review`) checks the amount.
        .post("/rewards/{id}/approve", SUPPORT, rewards::actions::approve)
        .get("/rewards/{id}/deny", SUPPORT, rewards::actions::deny_form)
        .post("/rewards/{id}/deny", SUPPORT, rewards::actions::deny)
        .post("/rewards/{id}/collect", ADMIN, rewards::actions::collect)
        .post("/rewards/{id}/write-off", ADMIN, rewards::actions::write_off);
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
