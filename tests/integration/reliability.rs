//! Reliability under bad input, faults and load, and the safety of personal data:
//! generated junk at every route (`fuzz`), SIGTERM under load (`shutdown`), concurrent
//! referrals and credits, soft deletes and the erasure of personal data.

mod frozen;
mod fuzz;
pub(crate) mod shutdown;

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::domain::customers::{self as domain, CustomerInput, NewCustomer};
use referdesk::domain::team::Role;
use referdesk::domain::Actor;

use crate::helpers::{assert_refused, TestApp};
use crate::integration_test;

fn make(app: &TestApp, key: &str, referrer: Option<&str>) -> domain::Customer {
    app.create_customer(CustomerInput {
        key: Some(key.to_string()),
        email: Some(format!("{key}@example.com")),
        name: Some(format!("Name of {key}")),
        referrer_key: referrer.map(str::to_string),
        ..Default::default()
    })
}

/// The minimal cases the fuzz properties found, kept as plain tests.
#[apply(integration_test!)]
async fn fuzz_findings_stay_fixed() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;

    // A NUL character (PostgreSQL text cannot hold one) in a one-line field: the form
    // comes back with a message, nothing is created.
    for (path, fields) in [
        ("/api-tokens", vec![("name", "a\0b")]),
        ("/programs", vec![("name", "a\0b"), ("slug", "nul-test")]),
        (
            "/team",
            vec![("email", "nul@example.com"), ("name", "a\0b"), ("role", "viewer")],
        ),
        ("/profile", vec![("name", "a\0b")]),
    ] {
        let response = app.post_form(path, &fields).await;
        assert_eq!(response.status(), 422, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains("control characters"), "{path}: {body}");
    }
    let mut conn = app.conn();
    let tokens: i64 = referdesk::db::schema::api_tokens::table
        .count()
        .get_result(&mut conn)
        .unwrap();
    let programs: i64 = referdesk::db::schema::programs::table
        .count()
        .get_result(&mut conn)
        .unwrap();
    let members: i64 = referdesk::db::schema::team_members::table
        .filter(referdesk::db::schema::team_members::email.eq("nul@example.com"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!((tokens, programs, members), (0, 1, 0));
    drop(conn);
    // Wherever else one slips through (a sign-in address, say): a clear 4xx, never a 500.
    let response = app.browser.login("a\0b@example.com", "whatever").await;
    assert!(
        response.status().is_client_error() || response.status().is_success(),
        "{}",
        response.status()
    );
    let gone = make(&app, "gone", None);
    make(&app, "alpha", None);
    domain::delete(&mut app.conn(), &app.default_program(), &Actor::system(), gone.id).unwrap();

    // A link added to a customer deleted meanwhile: the page says why (its form is hidden).
    let response = app.post_form("/customers/gone/links", &[]).await;
    assert_refused(
        response,
        &["This customer is deleted; restore them before adding links."],
    )
    .await;

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
    let token = app.create_token("default");
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
#[apply(integration_test!)]
async fn oversized_requests_are_refused() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let token = app.create_token("default");
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

// --- concurrency ---------------------------------------------------------------------------

fn assert_counts_exact(app: &TestApp) -> i64 {
    use referdesk::db::schema::customers;
    let mut conn = app.conn();
    let stored: Vec<(i64, i32)> = customers::table
        .select((customers::id, customers::referrals_count))
        .load(&mut conn)
        .unwrap();
    let mut total = 0;
    for (id, count) in stored {
        let actual: i64 = customers::table
            .filter(customers::referrer_id.eq(id))
            .filter(customers::status.eq("active"))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(i64::from(count), actual, "referrals_count of customer {id}");
        total += actual;
    }
    total
}

/// A request under way: the path it went to and the status it got.
type Call<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (String, u16)> + 'a>>;

/// 200 referred customers created through the API against 5 referrers while others are
/// deleted (API), restored and re-attributed (dashboard) at the same moment.
#[apply(integration_test!)]
async fn concurrent_referrals_with_deletes_and_restores_keep_counts_exact() {
    use futures_util::future::join_all;
    // The production pool size (the tests' default is smaller).
    let config = crate::helpers::test_config(&crate::helpers::fresh_database());
    let app = TestApp::spawn_with(referdesk::config::Config {
        pool_size: 10,
        ..config
    })
    .await;
    app.login_as(Role::Admin).await;
    let token = app.create_token("default");
    for n in 0..5 {
        make(&app, &format!("r{n}"), None);
    }
    for n in 0..40 {
        make(&app, &format!("p{n}"), Some(&format!("r{}", n % 5)));
    }
    for n in 20..40 {
        let customer =
            domain::find_by_key(&mut app.conn(), app.default_program().id, &format!("p{n}")).unwrap();
        domain::delete(
            &mut app.conn(),
            &app.default_program(),
            &Actor::system(),
            customer.id,
        )
        .unwrap();
    }
    let _ = app.browser.csrf().await;
    let client = reqwest::Client::new();
    let api = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let request = client.request(method, app.browser.url(&path)).bearer_auth(&token);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move { (path, request.send().await.expect("an answer").status().as_u16()) }
    };
    let mut calls: Vec<Call<'_>> = Vec::new();
    for n in 0..200 {
        calls.push(Box::pin(api(
            reqwest::Method::POST,
            "/v1/customers".into(),
            Some(serde_json::json!({
                "email": format!("new{n}@example.com"),
                "referring_customer": {"key": format!("r{}", n % 5)},
            })),
        )));
        if n < 20 {
            // Deletes, some twice at once.
            calls.push(Box::pin(api(
                reqwest::Method::DELETE,
                format!("/v1/customers/p{n}"),
                None,
            )));
            if n < 5 {
                calls.push(Box::pin(api(
                    reqwest::Method::DELETE,
                    format!("/v1/customers/p{n}"),
                    None,
                )));
            }
        } else if n < 40 {
            let browser = &app.browser;
            calls.push(Box::pin(async move {
                let path = format!("/customers/p{n}/restore");
                let status = browser.post_form(&path, &[]).await.status().as_u16();
                (path, status)
            }));
            if n >= 35 {
                // Deleted again while being restored.
                calls.push(Box::pin(async move {
                    let path = format!("/customers/p{n}/delete");
                    let status = browser.post_form(&path, &[]).await.status().as_u16();
                    (path, status)
                }));
            }
        } else if n < 50 {
            // Re-attribution of already referred customers to another referrer.
            let browser = &app.browser;
            let target = format!("p{}", n - 40 + 10);
            calls.push(Box::pin(async move {
                let path = format!("/customers/{target}/referrer");
                let referrer = format!("r{}", (n + 1) % 5);
                let status = browser
                    .post_form(&path, &[("referring_customer", &referrer), ("confirm", "1")])
                    .await
                    .status()
                    .as_u16();
                (path, status)
            }));
        }
    }
    let started = std::time::Instant::now();
    let answers = join_all(calls).await;
    let took = started.elapsed();
    for (path, status) in &answers {
        let expected = if path == "/v1/customers" {
            201
        } else if path.starts_with("/v1/") {
            200
        } else {
            303
        };
        assert_eq!(*status, expected, "{path}");
    }
    let referred = assert_counts_exact(&app);
    println!(
        "concurrency: {} requests in {took:?}; {referred} active referrals, every count exact",
        answers.len()
    );
    assert!(
        referred >= 200 + 5,
        "the 200 new referrals and the untouched ones count"
    );
}

/// 100 concurrent credits with 50 distinct idempotency keys, each sent twice at once.
#[apply(integration_test!)]
async fn concurrent_duplicate_credits_book_once_per_key() {
    use futures_util::future::join_all;
    use referdesk::db::schema::{audit_events, balance_transactions};
    let app = TestApp::spawn().await;
    let token = app.create_token("default");
    let customer = make(&app, "saver", None);
    let client = reqwest::Client::new();
    let calls = (0..100).map(|n| {
        let key = n % 50;
        let request = client
            .post(app.browser.url("/v1/customers/saver/balance/credit"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("key-{key}"))
            .json(&serde_json::json!({
                "amount": format!("{}.25", key + 1), "amount_units": "EUR", "is_currency": true
            }));
        async move { (key, request.send().await.expect("an answer").status().as_u16()) }
    });
    let answers = join_all(calls).await;
    for key in 0..50 {
        let mut statuses: Vec<u16> = answers
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, status)| *status)
            .collect();
        statuses.sort();
        assert_eq!(statuses, vec![200, 201], "key-{key}: booked once, replayed once");
    }
    let mut conn = app.conn();
    let booked: i64 = balance_transactions::table
        .filter(balance_transactions::customer_id.eq(customer.id))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(booked, 50);
    let events: i64 = audit_events::table
        .filter(audit_events::action.eq("ledger.credit"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(events, 50, "one audit event per booking");
    let expected: f64 = (1..=50).map(|n| n as f64 + 0.25).sum();
    let balance: serde_json::Value = client
        .get(app.browser.url("/v1/customers/saver/balance"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let amount = &balance["data"]["balance"]["currency"][0]["amount"];
    let amount: f64 = amount
        .as_f64()
        .or_else(|| amount.as_str().and_then(|text| text.parse().ok()))
        .unwrap_or_else(|| panic!("{balance}"));
    assert_eq!(amount, expected, "the balance is the sum of the 50 bookings");
}

// --- data safety ---------------------------------------------------------------------------

fn row_counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    use referdesk::db::schema::{balance_transactions, customers, referral_clicks, referral_links};
    let mut conn = app.conn();
    vec![
        (
            "customers",
            customers::table.count().get_result(&mut conn).unwrap(),
        ),
        (
            "balance_transactions",
            balance_transactions::table.count().get_result(&mut conn).unwrap(),
        ),
        (
            "referral_links",
            referral_links::table.count().get_result(&mut conn).unwrap(),
        ),
        (
            "referral_clicks",
            referral_clicks::table.count().get_result(&mut conn).unwrap(),
        ),
    ]
}

fn credit(app: &TestApp, customer_id: i64, amount: &str) {
    use referdesk::domain::ledger::{self, NewEntry};
    let entry = NewEntry::parse("credit", amount, "USD", true, "", None).unwrap();
    ledger::book(
        &mut app.conn(),
        app.default_program().id,
        customer_id,
        &Actor::system(),
        entry,
    )
    .unwrap();
}

/// Deleting customers and links (dashboard and API) keeps every row: customers, their
/// ledger, their links and clicks.
#[apply(integration_test!)]
async fn delete_never_removes_rows() {
    use referdesk::db::schema::{customers, referral_links};
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let token = app.create_token("default");
    let referrer = make(&app, "keeper", None);
    let first = make(&app, "first", Some("keeper"));
    make(&app, "second", Some("keeper"));
    credit(&app, referrer.id, "10.00");
    credit(&app, first.id, "5.00");
    let link = referdesk::domain::referral_links::create(
        &mut app.conn(),
        &app.default_program(),
        &Actor::system(),
        referrer.id,
        "keeper-extra",
    )
    .unwrap();
    assert_eq!(app.get("/r/default/keeper-extra").await.status(), 302, "a click");
    let before = row_counts(&app);

    let response = app
        .post_form(&format!("/customers/keeper/links/{}/delete", link.id), &[])
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(app.post_form("/customers/keeper/delete", &[]).await.status(), 303);
    let response = reqwest::Client::new()
        .delete(app.browser.url("/v1/customers/first"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    assert_eq!(row_counts(&app), before, "no row was removed");
    let mut conn = app.conn();
    let statuses: Vec<(String, String)> = customers::table
        .select((customers::key, customers::status))
        .order(customers::key)
        .load(&mut conn)
        .unwrap();
    assert_eq!(
        statuses,
        vec![
            ("first".to_string(), "deleted".to_string()),
            ("keeper".to_string(), "deleted".to_string()),
            ("second".to_string(), "active".to_string()),
        ]
    );
    let retired: Option<chrono::DateTime<chrono::Utc>> = referral_links::table
        .find(link.id)
        .select(referral_links::deleted_at)
        .first(&mut conn)
        .unwrap();
    assert!(retired.is_some(), "the link is retired, not removed");
    // Restoring brings everything back as it was.
    assert_eq!(
        app.post_form("/customers/keeper/restore", &[]).await.status(),
        303
    );
    let (_, page) = app.browser.get_html("/customers/keeper/credit").await;
    assert!(page.contains("10.00"), "the ledger is still there");
}

/// The admin action that erases a customer's personal data everywhere Referdesk keeps it,
/// and keeps the ledger, links and referral structure.
#[apply(integration_test!)]
async fn erase_personal_data_keeps_ledger_and_structure() {
    use referdesk::db::schema::{audit_events, balance_transactions, customers, invites, mail_outbox};
    use referdesk::domain::customers::{CustomerChanges, ERASED_NAME};
    use referdesk::domain::invites::{self as invite_domain, NewInvite};

    let app = TestApp::spawn().await;
    let program = app.default_program();
    make(&app, "parent", None);
    // An invite to the address before the person became a customer.
    let addressed = invite_domain::create(
        &mut app.conn(),
        &program,
        &Actor::system(),
        None,
        NewInvite::parse("adelheid.private@example.com", "Adelheid", &[]).unwrap(),
    )
    .unwrap();
    let new = NewCustomer::parse(CustomerInput {
        id: Some("ext-ada".into()),
        key: Some("ada".into()),
        email: Some("adelheid.private@example.com".into()),
        name: Some("Adelheid".into()),
        surname: Some("Lovelacewitz".into()),
        date_of_birth: Some("1990-12-10".into()),
        custom_fields: Some(vec![("plan".into(), "gold-secret".into())]),
        referrer_key: Some("parent".into()),
        ..Default::default()
    })
    .unwrap();
    let ada = domain::create(&mut app.conn(), &program, &Actor::system(), new).unwrap();
    let changes = CustomerChanges::parse(CustomerInput {
        name: Some("Adelheidi".into()),
        ..Default::default()
    })
    .unwrap();
    domain::update(&mut app.conn(), &program, &Actor::system(), ada.id, changes).unwrap();
    make(&app, "kid1", Some("ada"));
    make(&app, "kid2", Some("ada"));
    credit(&app, ada.id, "7.50");
    let sent_by_ada = invite_domain::create(
        &mut app.conn(),
        &program,
        &Actor::system(),
        Some(&domain::find(&mut app.conn(), program.id, ada.id).unwrap()),
        NewInvite::parse("friend@example.com", "Friend", &[]).unwrap(),
    )
    .unwrap();
    let counts_before = row_counts(&app);
    let personal = [
        "adelheid.private@example.com",
        "Adelheid",
        "Lovelacewitz",
        "1990-12-10",
        "gold-secret",
    ];

    // Support may not erase; the button is for admins.
    app.login_as(Role::Support).await;
    let (_, page) = app.browser.get_html("/customers/ada").await;
    assert!(!page.contains("/customers/ada/erase"));
    assert_eq!(app.post_form("/customers/ada/erase", &[]).await.status(), 403);
    let browser = app.new_browser();
    let email = "eraser@example.com";
    app.create_member(email, Role::Admin, crate::helpers::PASSWORD);
    assert_eq!(browser.login(email, crate::helpers::PASSWORD).await.status(), 303);
    let (_, page) = browser.get_html("/customers/ada").await;
    assert!(page.contains("action=\"/customers/ada/erase#danger-zone\""));
    assert!(page.contains("Type the email adelheid.private@example.com or the key ada to confirm"));

    // A click alone, or the wrong words, erase nothing: the email or key must be typed.
    let response = browser.post_form("/customers/ada/erase", &[]).await;
    assert_refused(
        response,
        &["Type the customer's email or key to confirm the erasure."],
    )
    .await;
    let response = browser
        .post_form("/customers/ada/erase", &[("confirm", "kid1")])
        .await;
    let body = assert_refused(
        response,
        &["That is not this customer's email or key; nothing was erased."],
    )
    .await;
    assert!(body.contains("value=\"kid1\""), "the typed text comes back");
    assert_eq!(row_counts(&app), counts_before, "nothing changed");
    assert!(domain::find(&mut app.conn(), program.id, ada.id)
        .unwrap()
        .has_personal_data());

    let response = browser
        .post_form(
            "/customers/ada/erase",
            &[("confirm", " ADELHEID.private@example.com ")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(crate::helpers::location(&response), "/customers/ada");

    let mut conn = app.conn();
    let erased = domain::find(&mut conn, program.id, ada.id).unwrap();
    assert_eq!(erased.email, None);
    assert_eq!(erased.name.as_deref(), Some(ERASED_NAME));
    assert_eq!(erased.surname, None);
    assert_eq!(erased.metadata, serde_json::json!({}));
    assert_eq!(erased.custom_fields, serde_json::json!({}));
    assert_eq!(
        (erased.key.as_str(), erased.external_id.as_str()),
        ("ada", "ext-ada")
    );
    assert_eq!(erased.referrer_id, ada.referrer_id, "still referred by parent");
    assert_eq!(erased.referrals_count, 2, "still the referrer of two");
    assert_eq!(row_counts(&app), counts_before, "no row removed");
    let booked: i64 = balance_transactions::table
        .filter(balance_transactions::customer_id.eq(ada.id))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(booked, 1, "the ledger stays");
    assert_counts_exact(&app);

    // Nothing Referdesk stores still holds a personal value: not the audit log, not the
    // invites addressed to her, not the messages carrying her name.
    let events: Vec<(String, Option<serde_json::Value>, Option<serde_json::Value>)> = audit_events::table
        .select((audit_events::action, audit_events::before, audit_events::after))
        .load(&mut conn)
        .unwrap();
    for (action, before, after) in &events {
        let text = format!("{before:?} {after:?}");
        for value in personal {
            assert!(!text.contains(value), "{action} still holds {value}: {text}");
        }
    }
    let erase_events: Vec<&(String, Option<serde_json::Value>, Option<serde_json::Value>)> = events
        .iter()
        .filter(|(action, _, _)| action == "customer.erase")
        .collect();
    assert_eq!(erase_events.len(), 1);
    assert_eq!(
        erase_events[0].2.as_ref().unwrap()["erased"],
        serde_json::json!(["email", "name", "surname", "metadata", "custom_fields"])
    );
    let stored_invites: Vec<(i64, String, Option<String>, String)> = invites::table
        .select((invites::id, invites::email, invites::name, invites::status))
        .order(invites::id)
        .load(&mut conn)
        .unwrap();
    let (_, email, name, _) = &stored_invites[0];
    assert_eq!(email, &format!("erased-{}@erased.invalid", addressed.id));
    assert_eq!(name, &None);
    assert_eq!(
        stored_invites[1].1, "friend@example.com",
        "the friend's own address stays"
    );
    let messages: Vec<(String, String, String, String)> = mail_outbox::table
        .select((
            mail_outbox::recipient,
            mail_outbox::subject,
            mail_outbox::body_text,
            mail_outbox::body_html,
        ))
        .load(&mut conn)
        .unwrap();
    for message in &messages {
        let text = format!("{message:?}");
        for value in personal {
            assert!(!text.contains(value), "an invite message still holds {value}");
        }
    }
    // A cancelled (or failed) erased message is never sent again.
    diesel::update(invites::table.find(sent_by_ada.id))
        .set(invites::status.eq("failed"))
        .execute(&mut conn)
        .unwrap();
    let response = browser
        .post_form(&format!("/invites/{}/retry", sent_by_ada.id), &[])
        .await;
    assert_eq!(response.status(), 303);
    let (_, page) = browser.get_html("/invites").await;
    assert!(
        page.contains("erased with the personal data it carried"),
        "{page}"
    );
    let status: String = invites::table
        .find(sent_by_ada.id)
        .select(invites::status)
        .first(&mut conn)
        .unwrap();
    assert_eq!(status, "failed");

    // The page says what happened and shows none of the values.
    let (status, page) = browser.get_html("/customers/ada").await;
    assert_eq!(status, 200);
    assert!(page.contains("The personal data of this customer was erased <time datetime="));
    assert!(!page.contains("/customers/ada/erase"), "nothing left to erase");
    for value in personal {
        assert!(!page.contains(value), "the page shows {value}");
    }
    // Erasing again (confirmed by the key, the email being gone) changes nothing and
    // records nothing.
    assert_eq!(
        browser
            .post_form("/customers/ada/erase", &[("confirm", "ada")])
            .await
            .status(),
        303
    );
    let erase_events: i64 = audit_events::table
        .filter(audit_events::action.eq("customer.erase"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(erase_events, 1);
    let name: Option<String> = customers::table
        .find(ada.id)
        .select(customers::name)
        .first(&mut conn)
        .unwrap();
    assert_eq!(name.as_deref(), Some(ERASED_NAME));
}

/// The embedded cluster is reached over the Unix-domain socket in its directory, also one
/// whose path needs quoting; a directory too deep for a socket path gets none, and the
/// cluster is reached over TCP instead (PostgreSQL would refuse to start otherwise).
#[apply(integration_test!)]
async fn an_embedded_cluster_is_reached_over_its_socket_or_else_tcp() {
    use referdesk::db::embedded::EmbeddedPostgres;
    let base = std::env::temp_dir().join(format!("rd-sock-{}", referdesk::random::random_token(6)));
    let answers = |url: &str| -> i32 {
        #[derive(QueryableByName)]
        struct One {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            one: i32,
        }
        let mut conn = PgConnection::establish(url).unwrap_or_else(|error| panic!("{url}: {error}"));
        diesel::sql_query("SELECT 1 AS one")
            .get_result::<One>(&mut conn)
            .unwrap()
            .one
    };
    let quoted = base.join("it's here");
    let mut cluster = EmbeddedPostgres::start(&quoted).expect("a cluster in a quoted directory");
    let url = cluster.url("postgres");
    assert!(!url.contains("127.0.0.1"), "over the socket: {url}");
    assert_eq!(answers(&url), 1);
    cluster.stop();

    let deep = base.join("d".repeat(90));
    let mut cluster = EmbeddedPostgres::start(&deep).expect("a cluster in a deep directory");
    let url = cluster.url("postgres");
    assert!(url.contains("@127.0.0.1:"), "over TCP: {url}");
    assert_eq!(answers(&url), 1);
    cluster.stop();
    let _ = std::fs::remove_dir_all(&base);
}
