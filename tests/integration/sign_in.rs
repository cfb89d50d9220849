//! Sign-in budgets: per account across addresses, per address, the device cookie that
//! keeps an account's owner in during an attack, and client addresses behind a proxy.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, login_failures};
use referdesk::domain::team::{Role, MAX_FAILURES_PER_ACCOUNT, MAX_FAILURES_PER_DEVICE};

use crate::helpers::{fresh_database, test_config, Browser, TestApp, PASSWORD};
use crate::integration_test;

const WRONG: &str = "wrong password!!";

async fn spawn_behind_proxy(trusted: &str) -> TestApp {
    let mut config = test_config(&fresh_database());
    config.trusted_proxies = referdesk::config::parse_trusted_proxies(trusted).unwrap();
    TestApp::spawn_with(config).await
}

/// A browser that reaches the server through a proxy naming it `client`.
fn forwarded_browser(app: &TestApp, client: &str) -> Browser {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", client.parse().unwrap());
    Browser::with_client(&app.address, reqwest::Client::builder().default_headers(headers))
}

fn failures_for(app: &TestApp, email: &str) -> i64 {
    login_failures::table
        .filter(login_failures::email.eq(email))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

fn failed_sign_in_events(app: &TestApp) -> Vec<(String, Option<String>)> {
    audit_events::table
        .filter(audit_events::action.eq("auth.sign_in_failed"))
        .order(audit_events::id)
        .select((audit_events::actor_label, audit_events::address))
        .load(&mut app.conn())
        .unwrap()
}

#[apply(integration_test!)]
async fn one_account_is_throttled_across_addresses() {
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Admin, PASSWORD);
    // Twenty real client addresses (all of 127.0.0.0/8 reaches the server), no proxy: each
    // guesses once.
    for n in 0..20u8 {
        let local = std::net::IpAddr::from([127, 0, 0, 2 + n]);
        let browser = Browser::with_client(&app.address, reqwest::Client::builder().local_address(local));
        let response = browser.login("sam@example.com", WRONG).await;
        let expected = if i64::from(n) < MAX_FAILURES_PER_ACCOUNT {
            401
        } else {
            429
        };
        assert_eq!(response.status(), expected, "guess {n} from {local}");
    }
    let addresses: std::collections::HashSet<_> = failed_sign_in_events(&app)
        .into_iter()
        .map(|(_, address)| address)
        .collect();
    assert_eq!(
        addresses.len() as i64,
        MAX_FAILURES_PER_ACCOUNT,
        "each from its own address"
    );
    assert_eq!(failures_for(&app, "sam@example.com"), MAX_FAILURES_PER_ACCOUNT);

    // The right password from yet another address is refused too, with the time to wait.
    let browser = Browser::with_client(
        &app.address,
        reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 99])),
    );
    let response = browser.login("sam@example.com", PASSWORD).await;
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((14 * 60..=15 * 60).contains(&retry), "Retry-After: {retry}");
    let body = response.text().await.unwrap();
    assert!(
        body.contains("Too many failed sign-in attempts. Try again in 15 minutes."),
        "{body}"
    );

    // An unknown email is budgeted the same way (nothing tells the two apart).
    for n in 0..=MAX_FAILURES_PER_ACCOUNT {
        let local = std::net::IpAddr::from([127, 0, 1, 2 + n as u8]);
        let browser = Browser::with_client(&app.address, reqwest::Client::builder().local_address(local));
        let response = browser.login("nobody@example.com", WRONG).await;
        let expected = if n < MAX_FAILURES_PER_ACCOUNT { 401 } else { 429 };
        assert_eq!(response.status(), expected, "guess {n} at an unknown email");
    }
}

#[apply(integration_test!)]
async fn parallel_wrong_attempts_never_exceed_the_budget() {
    use futures_util::future::join_all;
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Admin, PASSWORD);
    let browsers: Vec<Browser> = (0..30).map(|_| app.new_browser()).collect();
    for browser in &browsers {
        browser.csrf().await;
    }
    let statuses: Vec<u16> = join_all(browsers.iter().map(|browser| async move {
        browser
            .post_form("/login", &[("email", "sam@example.com"), ("password", WRONG)])
            .await
            .status()
            .as_u16()
    }))
    .await;
    let checked = statuses.iter().filter(|status| **status == 401).count() as i64;
    let throttled = statuses.iter().filter(|status| **status == 429).count() as i64;
    assert_eq!(checked + throttled, 30, "{statuses:?}");
    assert_eq!(
        checked, MAX_FAILURES_PER_ACCOUNT,
        "passwords checked: {statuses:?}"
    );
    assert_eq!(failures_for(&app, "sam@example.com"), MAX_FAILURES_PER_ACCOUNT);
    assert_eq!(failed_sign_in_events(&app).len() as i64, MAX_FAILURES_PER_ACCOUNT);
}

/// The same race without HTTP in between: 30 attempts released at one instant, each on its
/// own connection, so their counts and inserts overlap as closely as they can.
#[apply(integration_test!)]
async fn simultaneous_attempts_count_one_after_another() {
    use referdesk::domain::team::{self, SignIn};
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Admin, PASSWORD);
    let pool = referdesk::db::build_pool(&app.database_url, 30);
    let start = std::sync::Arc::new(std::sync::Barrier::new(30));
    let attempts: Vec<_> = (0..30)
        .map(|n| {
            let mut conn = pool.get().expect("connection");
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let address = format!("192.0.2.{n}");
                match team::sign_in(&mut conn, "sam@example.com", WRONG, &address, None) {
                    Ok(SignIn::Refused) => 401,
                    Ok(SignIn::Throttled { .. }) => 429,
                    Ok(SignIn::Ok(_)) => 200,
                    Err(error) => panic!("sign-in failed: {error}"),
                }
            })
        })
        .collect();
    let statuses: Vec<u16> = attempts
        .into_iter()
        .map(|attempt| attempt.join().expect("attempt thread"))
        .collect();
    let checked = statuses.iter().filter(|status| **status == 401).count() as i64;
    assert_eq!(
        checked, MAX_FAILURES_PER_ACCOUNT,
        "passwords checked: {statuses:?}"
    );
    assert_eq!(failures_for(&app, "sam@example.com"), MAX_FAILURES_PER_ACCOUNT);
}

#[apply(integration_test!)]
async fn the_device_cookie_lets_its_owner_in_during_an_attack() {
    let app = TestApp::spawn().await;
    app.create_member("owner@example.com", Role::Admin, PASSWORD);
    let owner = app.new_browser();
    let response = owner.login("owner@example.com", PASSWORD).await;
    assert_eq!(response.status(), 303);
    let device_cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("referdesk_device="))
        .expect("a device cookie at sign-in")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/login", "Max-Age=31536000"] {
        assert!(device_cookie.contains(attribute), "{device_cookie}");
    }
    assert!(!device_cookie.contains("Secure"), "plain http: {device_cookie}");
    owner.post_form("/logout", &[]).await;

    // An attacker spends the account's budget (from the owner's own address, even).
    let attacker = app.new_browser();
    for n in 0..MAX_FAILURES_PER_ACCOUNT {
        assert_eq!(
            attacker.login("owner@example.com", WRONG).await.status(),
            401,
            "guess {n}"
        );
    }
    let response = attacker.login("owner@example.com", PASSWORD).await;
    assert_eq!(response.status(), 429, "locked without the device cookie");
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.text().await.unwrap().contains("Try again in 15 minutes"));
    // A browser that never signed in as the owner gets nothing from its own cookie either.
    let other = app.new_browser();
    app.create_member("other@example.com", Role::Viewer, PASSWORD);
    assert_eq!(other.login("other@example.com", PASSWORD).await.status(), 303);
    other.post_form("/logout", &[]).await;
    assert_eq!(other.login("owner@example.com", PASSWORD).await.status(), 429);

    // The owner's browser still gets in.
    let response = owner.login("owner@example.com", PASSWORD).await;
    assert_eq!(
        response.status(),
        303,
        "the device cookie exempts from the account lock"
    );
    let (status, _) = owner.get_html("/").await;
    assert_eq!(status, 200);
    owner.post_form("/logout", &[]).await;

    // A stolen device cookie has its own small budget, then the account's lock applies.
    for n in 0..MAX_FAILURES_PER_DEVICE {
        assert_eq!(
            owner.login("owner@example.com", WRONG).await.status(),
            401,
            "guess {n}"
        );
    }
    assert_eq!(owner.login("owner@example.com", WRONG).await.status(), 429);
    assert_eq!(owner.login("owner@example.com", PASSWORD).await.status(), 429);
}

#[apply(integration_test!)]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    // (trusted proxies, X-Forwarded-For sent, address recorded)
    let cases = [
        ("", "203.0.113.9", "127.0.0.1"),
        ("10.0.0.0/8", "203.0.113.9", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "6.6.6.6, 203.0.113.9", "203.0.113.9"),
        (
            "127.0.0.0/8, 198.51.100.0/24",
            "203.0.113.9, 198.51.100.7",
            "203.0.113.9",
        ),
    ];
    for (trusted, forwarded, expected) in cases {
        let app = spawn_behind_proxy(trusted).await;
        let browser = forwarded_browser(&app, forwarded);
        assert_eq!(browser.login("sam@example.com", WRONG).await.status(), 401);
        let events = failed_sign_in_events(&app);
        assert_eq!(
            events,
            [("sam@example.com".to_string(), Some(expected.to_string()))],
            "trusted {trusted:?}, X-Forwarded-For {forwarded:?}"
        );

        // The API records (and throttles) the same address.
        let token = {
            use referdesk::db::schema::programs;
            let mut conn = app.conn();
            let program: i64 = programs::table.select(programs::id).first(&mut conn).unwrap();
            referdesk::domain::tokens::create(
                &mut conn,
                program,
                "proxy",
                &referdesk::domain::Actor::system(),
            )
            .unwrap()
            .1
        };
        let response = browser
            .client
            .post(browser.url("/v1/customers"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"email": "friend@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let address: Option<String> = audit_events::table
            .filter(audit_events::action.eq("customer.create"))
            .select(audit_events::address)
            .first(&mut app.conn())
            .unwrap();
        assert_eq!(address.as_deref(), Some(expected), "API, trusted {trusted:?}");
    }
}

#[apply(integration_test!)]
async fn behind_a_trusted_proxy_one_client_cannot_lock_out_another() {
    let app = spawn_behind_proxy("127.0.0.1").await;
    app.create_member("admin@example.com", Role::Admin, PASSWORD);
    // One client sprays many accounts through the proxy until its address is spent.
    let sprayer = forwarded_browser(&app, "203.0.113.66");
    for n in 0..30 {
        let response = sprayer.login(&format!("user{n}@example.com"), WRONG).await;
        assert_eq!(response.status(), 401, "attempt {n}");
    }
    assert_eq!(sprayer.login("user99@example.com", WRONG).await.status(), 429);
    // Another client behind the same proxy signs in.
    let admin = forwarded_browser(&app, "198.51.100.20");
    assert_eq!(admin.login("admin@example.com", PASSWORD).await.status(), 303);
}

#[apply(integration_test!)]
async fn a_huge_email_is_cut_before_it_is_stored() {
    let app = TestApp::spawn().await;
    let huge = format!("{}@example.com", "a".repeat(200_000));
    let response = app.browser.login(&huge, WRONG).await;
    assert_eq!(response.status(), 401);
    let stored: Vec<String> = login_failures::table
        .select(login_failures::email)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(stored, ["a".repeat(254)]);
    let audited = failed_sign_in_events(&app);
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].0, "a".repeat(254));
    // Counted as that account: its budget runs out like any other.
    for _ in 1..MAX_FAILURES_PER_ACCOUNT {
        assert_eq!(app.browser.login(&huge, WRONG).await.status(), 401);
    }
    assert_eq!(app.browser.login(&huge, WRONG).await.status(), 429);
}
