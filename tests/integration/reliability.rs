//! Reliability under bad input, faults and load, and the safety of personal data:
//! generated junk at every route (`fuzz`), SIGTERM under load (`shutdown`), concurrent
//! referrals and credits, soft deletes and the erasure of personal data.

mod fuzz;
mod shutdown;

use diesel::prelude::*;
use referdesk::domain::customers::{self as domain, CustomerInput, NewCustomer};
use referdesk::domain::programs::{self, Program};
use referdesk::domain::team::Role;
use referdesk::domain::{tokens, Actor};

use crate::helpers::TestApp;
use crate::trials;

pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        fuzz::junk_at_every_dashboard_route_never_gets_a_500,
        fuzz::junk_at_every_api_endpoint_never_gets_a_500,
        fuzz_findings_stay_fixed,
        oversized_requests_are_refused,
        shutdown::sigterm_under_load_loses_nothing,
    ]
}

fn program(app: &TestApp) -> Program {
    programs::find_by_slug(&mut app.conn(), "default").expect("default program")
}

fn make(app: &TestApp, key: &str, referrer: Option<&str>) -> domain::Customer {
    let new = NewCustomer::parse(CustomerInput {
        key: Some(key.to_string()),
        email: Some(format!("{key}@example.com")),
        name: Some(format!("Name of {key}")),
        referrer_key: referrer.map(str::to_string),
        ..Default::default()
    })
    .expect("valid customer");
    domain::create(&mut app.conn(), &program(app), &Actor::system(), new).expect("customer created")
}

fn api_token(app: &TestApp) -> String {
    tokens::create(&mut app.conn(), program(app).id, "reliability", &Actor::system())
        .expect("token")
        .1
}

/// The minimal cases the fuzz properties found, kept as plain tests.
async fn fuzz_findings_stay_fixed() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let gone = make(&app, "gone", None);
    make(&app, "alpha", None);
    domain::delete(&mut app.conn(), &program(&app), &Actor::system(), gone.id).unwrap();

    // A link added to a customer deleted meanwhile: the page says why (its form is hidden).
    let response = app.post_form("/customers/gone/links", &[]).await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(body.contains("This customer is deleted; restore them before adding links."));

    // A body over the limit, read by a raw-body handler: our styled 413, not bare text.
    let csrf = app.browser.csrf().await;
    let response = app
        .browser
        .client
        .post(app.browser.url("/customers/alpha/invite"))
        .header("x-csrf-token", csrf)
        .header("content-type", "application/json")
        .body(format!("{{\"id\":\"{}\"}}", "a".repeat(300_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("The request body is too large."));

    // NUL in the audit log's filters: a message, not a database error.
    let (status, body) = app.browser.get_html("/audit?action=%00").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("Remove the control characters."));

    // The API's paging with a page near i64::MAX, and NUL in an exact search.
    let token = api_token(&app);
    let client = reqwest::Client::new();
    for path in [
        "/v1/customers?page=614891469123651722",
        "/v1/customers:search?email=%00",
        "/v1/customers:search?key=a%00b&id=%00",
    ] {
        let response = client
            .get(app.browser.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{path}: no answer: {error}"));
        assert_eq!(response.status(), 200, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["data"], serde_json::json!([]), "{path}");
    }
}

/// Requests beyond the size limits are refused early with a 4xx, on both faces.
async fn oversized_requests_are_refused() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let token = api_token(&app);
    let client = reqwest::Client::new();
    let megabyte = "x".repeat(1 << 20);
    let response = client
        .post(app.browser.url("/v1/customers"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"name\":\"{megabyte}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/json");
    let response = app.post_form("/customers", &[("name", &megabyte)]).await;
    assert_eq!(response.status(), 413);
    assert!(response.text().await.unwrap().contains("too large"));
    // A header beyond the HTTP layer's limit is refused by actix-http itself, before the
    // application sees the request: a bare 431, never a 5xx.
    let response = client
        .get(app.browser.url("/v1/customers"))
        .bearer_auth(&token)
        .header("x-padding", "p".repeat(300_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let count: i64 = referdesk::db::schema::customers::table
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(count, 0, "nothing was stored");
}
