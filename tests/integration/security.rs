//! Reliability and security properties that cut across every area.

use macro_rules_attribute::apply;
use referdesk::domain::team::Role;
use referdesk::routes::{self, Access};

use crate::helpers::{fresh_database, location, test_config, Browser, TestApp, PASSWORD};
use crate::integration_test;

/// A concrete URL for a rule's pattern: ids that exist nowhere, so allowed actions find
/// nothing to change.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{file}" => "style.css".to_string(),
            "{program}" => "default".to_string(),
            s if s.starts_with('{') => "999999".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

enum Outcome {
    Allowed,
    Refused,
}

async fn try_route(browser: &Browser, method: &str, path: &str, bearer: Option<&str>) -> (Outcome, u16) {
    try_route_from(browser, method, path, bearer, None).await
}

/// [`try_route`] as if from `client` (an `X-Forwarded-For` the test server trusts).
async fn try_route_from(
    browser: &Browser,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    client: Option<&str>,
) -> (Outcome, u16) {
    let url = browser.url(&concrete(path));
    let request = match method {
        "GET" => browser.client.get(&url),
        "POST" if bearer.is_none() && !path.starts_with("/v1") => {
            let csrf = browser.csrf().await;
            browser.client.post(&url).form(&[("csrf_token", csrf.as_str())])
        }
        "POST" => browser.client.post(&url).json(&serde_json::json!({})),
        "PUT" => browser.client.put(&url).json(&serde_json::json!({})),
        "DELETE" => browser.client.delete(&url),
        other => panic!("method {other} in the route table"),
    };
    let request = match bearer {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let request = match client {
        Some(address) => request.header("X-Forwarded-For", address),
        None => request,
    };
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let target = location(&response);
    let to_login = status == 303 && (target == "/login" || target.starts_with("/login?next="));
    // The dashboard refuses with 403 or a trip to the login page (its 401 is the login
    // form's "wrong password"); the API refuses with 401 or 403.
    let refused = if path.starts_with("/v1") {
        status == 401 || status == 403
    } else {
        status == 403 || to_login
    };
    (
        if refused {
            Outcome::Refused
        } else {
            Outcome::Allowed
        },
        status,
    )
}

#[apply(integration_test!)]
async fn authorization_matrix_matches_the_rules_table() {
    // Refused tokens are throttled per address, and the table has more API routes than the
    // throttle lets one address try: each refused call comes from its own address.
    let mut config = test_config(&fresh_database());
    config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let app = TestApp::spawn_with(config).await;
    let mut addresses = (0u32..).map(|n| format!("198.51.{}.{}", n / 250, n % 250 + 1));
    let mut browsers: Vec<(Option<Role>, Browser)> = vec![(None, app.new_browser())];
    for role in Role::ALL {
        let browser = app.new_browser();
        let email = format!("matrix-{role}@example.com");
        app.create_member(&email, role, PASSWORD);
        assert_eq!(browser.login(&email, PASSWORD).await.status(), 303);
        browsers.push((Some(role), browser));
    }
    let (token, revoked) = {
        use referdesk::domain::{programs, tokens, Actor};
        let mut conn = app.conn();
        let program = programs::find_by_slug(&mut conn, "default").unwrap();
        let (_, live) = tokens::create(&mut conn, program.id, "matrix", &Actor::system()).unwrap();
        let (dead, dead_secret) = tokens::create(&mut conn, program.id, "revoked", &Actor::system()).unwrap();
        tokens::revoke(&mut conn, program.id, dead.id, &Actor::system()).unwrap();
        (live, dead_secret)
    };

    // Sign-out last, or it would end the sessions the other rows use.
    let mut rules: Vec<_> = routes::rules().iter().collect();
    rules.sort_by_key(|rule| rule.path == "/logout");
    let mut checked = 0;
    for rule in rules {
        match rule.access {
            Access::ApiToken => {
                let browser = &browsers[0].1;
                for (bearer, name) in [(None, "no token"), (Some(revoked.as_str()), "a revoked token")] {
                    let client = addresses.next();
                    let (outcome, status) = try_route_from(
                        browser,
                        rule.method.as_str(),
                        rule.path,
                        bearer,
                        client.as_deref(),
                    )
                    .await;
                    assert!(
                        matches!(outcome, Outcome::Refused),
                        "{} {} with {name}: {status}",
                        rule.method,
                        rule.path
                    );
                    assert_eq!(status, 401, "{} {} with {name}", rule.method, rule.path);
                }
                let (outcome, status) =
                    try_route(browser, rule.method.as_str(), rule.path, Some(&token)).await;
                assert!(
                    matches!(outcome, Outcome::Allowed),
                    "{} {} with a live token: {status}",
                    rule.method,
                    rule.path
                );
                checked += 3;
            }
            access => {
                for (role, browser) in &browsers {
                    let allowed = match access {
                        Access::Public | Access::Sessionless => true,
                        Access::Member(needed) => role.is_some_and(|role| role >= needed),
                        Access::ApiToken => unreachable!(),
                    };
                    let (outcome, status) = try_route(browser, rule.method.as_str(), rule.path, None).await;
                    let who = role
                        .map(|role| role.to_string())
                        .unwrap_or_else(|| "anonymous".into());
                    match (allowed, outcome) {
                        (true, Outcome::Allowed) | (false, Outcome::Refused) => {}
                        (true, Outcome::Refused) => {
                            panic!("{who} refused on {} {} ({status})", rule.method, rule.path)
                        }
                        (false, Outcome::Allowed) => {
                            panic!("{who} allowed on {} {} ({status})", rule.method, rule.path)
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    println!("authorization matrix: {checked} route/role pairs checked");
}

#[apply(integration_test!)]
async fn wrong_methods_get_a_styled_405() {
    let app = TestApp::spawn().await;
    // With a valid CSRF token (else the CSRF check answers first, with 403).
    let csrf = app.browser.csrf().await;
    let response = app
        .browser
        .client
        .delete(app.browser.url("/login"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.text().await.unwrap().contains("/static/style.css"));
    let response = app
        .browser
        .client
        .post(app.browser.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("method"));
}

#[apply(integration_test!)]
async fn expired_sessions_do_not_sign_in() {
    use diesel::prelude::*;
    use referdesk::db::schema::sessions;
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    assert_eq!(app.get("/").await.status(), 200);
    diesel::update(sessions::table)
        .set(sessions::expires_at.eq(chrono::Utc::now() - chrono::Duration::minutes(1)))
        .execute(&mut app.conn())
        .unwrap();
    let response = app.get("/").await;
    assert_eq!(response.status(), 303);
    assert!(location(&response).starts_with("/login"));
}

#[apply(integration_test!)]
async fn login_throttling_also_holds_per_address() {
    let app = TestApp::spawn().await;
    app.create_member("last@example.com", Role::Viewer, PASSWORD);
    // Spraying many accounts from one address: each email only fails once.
    for n in 0..30 {
        let response = app
            .browser
            .login(&format!("user{n}@example.com"), "wrong password!!")
            .await;
        assert_eq!(response.status(), 401, "attempt {n}");
    }
    let response = app.browser.login("last@example.com", PASSWORD).await;
    assert_eq!(
        response.status(),
        429,
        "the address is throttled, whatever the email"
    );
}

#[apply(integration_test!)]
async fn csp_forbids_inline_script() {
    let app = TestApp::spawn().await;
    let response = app.get("/login").await;
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let script = csp
        .split(';')
        .map(str::trim)
        .find(|directive| directive.starts_with("script-src"))
        .expect("a script-src directive");
    assert!(!script.contains("'unsafe-inline'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"));
    let body = response.text().await.unwrap();
    assert!(!body.contains("<script>"), "pages carry no inline script");
}

#[apply(integration_test!)]
async fn database_outage_gives_503_and_recovers() {
    use referdesk::db::embedded::EmbeddedPostgres;
    use std::time::{Duration, Instant};

    let dir = std::env::temp_dir().join(format!("rd-outage-{}", referdesk::random::random_token(8)));
    let mut cluster = EmbeddedPostgres::start(&dir).expect("a private cluster for this test");
    let config = crate::helpers::test_config(&cluster.url("outage"));
    let app = TestApp::spawn_with(config).await;
    app.login_as(Role::Admin).await;
    let token = {
        use referdesk::domain::{programs, tokens, Actor};
        let mut conn = app.conn();
        let program = programs::find_by_slug(&mut conn, "default").unwrap();
        tokens::create(&mut conn, program.id, "outage", &Actor::system())
            .unwrap()
            .1
    };
    assert_eq!(app.get("/").await.status(), 200);

    cluster.stop();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = Instant::now();
    let page = app.get("/").await;
    assert_eq!(page.status(), 503);
    let body = page.text().await.unwrap();
    assert!(body.contains("The database is unavailable"), "{body}");
    assert!(body.contains("/static/style.css"), "a styled page");
    let api = client
        .get(app.browser.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200, "the API description needs no database");
    let api = client
        .get(app.browser.url("/v1/customers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 503);
    assert_eq!(api.headers()["content-type"], "application/json");
    let ready = client.get(app.browser.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        client
            .get(app.browser.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    println!("outage answers took {:?} in all", started.elapsed());

    cluster.restart_stopped().expect("PostgreSQL starts again");
    let mut recovered = false;
    for _ in 0..60 {
        if client
            .get(app.browser.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(recovered, "ready again without a restart");
    assert_eq!(app.get("/").await.status(), 200, "the same session works again");
    drop(app);
    drop(cluster);
    let _ = std::fs::remove_dir_all(dir);
}
