//! Sign-in, setup, sessions, CSRF, roles and the security headers.

use macro_rules_attribute::apply;
use referdesk::domain::team::Role;

use crate::helpers::{assert_refused, location, Browser, TestApp, PASSWORD};
use crate::integration_test;

#[apply(integration_test!)]
async fn setup_link_creates_the_first_admin_once() {
    let app = TestApp::spawn().await;
    let setup_url = app
        .setup_url
        .clone()
        .expect("a fresh install prints a setup link");
    let path = &setup_url[setup_url.find("/setup").unwrap()..];
    let token = path.split("token=").nth(1).unwrap();

    let (status, body) = app.browser.get_html(path).await;
    assert_eq!(status, 200);
    assert!(body.contains("Create the first admin"));

    // Invalid input re-renders with the message next to the field.
    let response = app
        .post_form(
            "/setup",
            &[
                ("token", token),
                ("email", "not-an-email"),
                ("name", "Ada"),
                ("password", "short"),
                ("password_confirmation", "short"),
            ],
        )
        .await;
    let body = assert_refused(response, &["Enter a valid email address."]).await;
    assert!(body.contains("value=\"not-an-email\""), "typed values are kept");

    let response = app
        .post_form(
            "/setup",
            &[
                ("token", token),
                ("email", "ada@example.com"),
                ("name", "Ada"),
                ("password", PASSWORD),
                ("password_confirmation", PASSWORD),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let (status, body) = app.browser.get_html("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("Welcome! Your admin account is ready."));
    assert!(body.contains("ada@example.com"));

    // The link works once.
    let other = app.new_browser();
    let (status, _) = other.get_html(path).await;
    assert_eq!(status, 400);
    let response = other
        .post_form(
            "/setup",
            &[
                ("token", token),
                ("email", "eve@example.com"),
                ("name", "Eve"),
                ("password", PASSWORD),
                ("password_confirmation", PASSWORD),
            ],
        )
        .await;
    assert_eq!(response.status(), 400);
    let admins: i64 = {
        use diesel::prelude::*;
        use referdesk::db::schema::team_members;
        team_members::table.count().get_result(&mut app.conn()).unwrap()
    };
    assert_eq!(admins, 1);
}

#[apply(integration_test!)]
async fn sign_in_with_the_right_password_reaches_the_dashboard() {
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Support, PASSWORD);
    let response = app.browser.login("Sam@Example.com", PASSWORD).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/");
    let (status, body) = app.browser.get_html("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("Dashboard"));
    assert!(body.contains("sam@example.com"));

    // `next` brings the member back where they were going, but never off-site.
    let other = app.new_browser();
    other.get_html("/login?next=/customers").await;
    let response = other
        .post_form(
            "/login",
            &[
                ("email", "sam@example.com"),
                ("password", PASSWORD),
                ("next", "//evil.example"),
            ],
        )
        .await;
    assert_eq!(location(&response), "/");
}

/// `next` as an attacker would write it (each value arrives at the server as written here),
/// and where a browser may be sent with it.
const NEXT_CASES: &[(&str, &str)] = &[
    ("/%09/x.example", "/"),
    ("/\t/x.example", "/"),
    ("/%0d%0aSet-Cookie:x", "/"),
    ("/\r\nSet-Cookie:x", "/"),
    ("/\u{0b}/x.example", "/"),
    ("//x.example", "/"),
    ("/\\x.example", "/"),
    ("\\/x.example", "/"),
    ("https://x.example", "/"),
    ("/%2F%2Fx.example", "/"),
    ("/%252F%252Fx.example", "/"),
    ("javascript:alert(1)", "/"),
    (" /customers", "/"),
    ("/customers", "/customers"),
    ("/customers?q=a&page=2", "/customers?q=a&page=2"),
    ("/customers?q=ada+lovelace", "/customers?q=ada+lovelace"),
];

#[apply(integration_test!)]
async fn next_never_leads_off_site() {
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Support, PASSWORD);
    let signed_in = app.new_browser();
    assert_eq!(signed_in.login("sam@example.com", PASSWORD).await.status(), 303);
    for &(next, expected) in NEXT_CASES {
        // Already signed in: the login page sends the browser on at once.
        let response = signed_in
            .client
            .get(signed_in.url("/login"))
            .query(&[("next", next)])
            .send()
            .await
            .expect("GET /login");
        assert_eq!(response.status(), 303, "GET /login?next={next:?}");
        assert_eq!(location(&response), expected, "GET /login?next={next:?}");

        // Signing in with the form's hidden `next`.
        let browser = app.new_browser();
        let response = browser
            .post_form(
                "/login",
                &[
                    ("email", "sam@example.com"),
                    ("password", PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(response.status(), 303, "POST /login next={next:?}");
        assert_eq!(location(&response), expected, "POST /login next={next:?}");
    }
}

#[apply(integration_test!)]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Support, PASSWORD);
    let wrong = app.browser.login("sam@example.com", "wrong password!!").await;
    assert_eq!(wrong.status(), 401);
    let wrong_body = wrong.text().await.unwrap();
    let unknown = app.browser.login("nobody@example.com", "wrong password!!").await;
    assert_eq!(unknown.status(), 401);
    let unknown_body = unknown.text().await.unwrap();
    assert!(wrong_body.contains("The email or password is incorrect."));
    assert!(unknown_body.contains("The email or password is incorrect."));
    let (status, _) = app.browser.get_html("/").await;
    assert_ne!(status, 200, "still signed out");
}

#[apply(integration_test!)]
async fn repeated_failures_are_throttled() {
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Support, PASSWORD);
    for _ in 0..referdesk::domain::team::MAX_FAILURES_PER_ACCOUNT {
        let response = app.browser.login("sam@example.com", "wrong password!!").await;
        assert_eq!(response.status(), 401);
    }
    // Even the right password is refused while throttled.
    let response = app.browser.login("sam@example.com", PASSWORD).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Too many failed sign-in attempts"));
}

#[apply(integration_test!)]
async fn anonymous_visitors_are_sent_to_login() {
    let app = TestApp::spawn().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login?next=%2F");
}

#[apply(integration_test!)]
async fn post_without_csrf_token_changes_nothing() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let response = app
        .browser
        .client
        .post(app.browser.url("/logout"))
        .form(&[("x", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = app.post_form("/logout", &[("csrf_token", "forged")]).await;
    assert_eq!(response.status(), 403);
    let (status, _) = app.browser.get_html("/").await;
    assert_eq!(status, 200, "the session survived the forged logouts");
}

#[apply(integration_test!)]
async fn cross_origin_post_is_refused() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let csrf = app.browser.csrf().await;
    let response = app
        .browser
        .client
        .post(app.browser.url("/logout"))
        .header("Origin", "https://evil.example")
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let (status, _) = app.browser.get_html("/").await;
    assert_eq!(status, 200);
}

#[apply(integration_test!)]
async fn viewer_cannot_reach_an_admin_page() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let response = app.get("/team").await;
    assert_eq!(response.status(), 403);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("This needs the admin role; you are signed in with the viewer role."));

    let admin = app.new_browser();
    app.create_member("boss@example.com", Role::Admin, PASSWORD);
    admin.login("boss@example.com", PASSWORD).await;
    let (status, body) = admin.get_html("/team").await;
    assert_eq!(status, 200);
    assert!(body.contains("boss@example.com"));
}

#[apply(integration_test!)]
async fn logout_ends_the_session_for_the_old_cookie() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    let cookie = session_cookie(&app.browser).expect("signed-in cookie");

    let response = app.post_form("/logout", &[]).await;
    assert_eq!(response.status(), 303);

    // Replaying the old cookie, as a stolen copy would, no longer works.
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = replay
        .get(app.browser.url("/"))
        .header("Cookie", format!("referdesk_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert!(location(&response).starts_with("/login"));
}

fn session_cookie(browser: &Browser) -> Option<String> {
    browser
        .cookies()
        .split("; ")
        .find_map(|pair| pair.strip_prefix("referdesk_session="))
        .map(str::to_string)
}

/// A fresh browser signs in on its first POST; the session id is renewed at every sign-in,
/// so a session cookie held before (as a fixation attempt would plant) is not signed in
/// after.
#[apply(integration_test!)]
async fn session_id_changes_at_sign_in() {
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Support, PASSWORD);
    app.create_member("kim@example.com", Role::Viewer, PASSWORD);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(app.browser.url("/login")).send().await.unwrap();
    assert_eq!(set_cookie(&response), None, "no session before sign-in");
    let form_cookie = cookie_set(&response, "referdesk_form").expect("the form's cookie");
    let body = response.text().await.unwrap();
    let csrf = crate::helpers::csrf_in(&body).unwrap();
    let response = client
        .post(app.browser.url("/login"))
        .header("Cookie", format!("referdesk_form={form_cookie}"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", "sam@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie_header = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .find(|value| value.starts_with("referdesk_session="))
        .expect("a session cookie at sign-in");
    assert!(cookie_header.contains("HttpOnly"));
    assert!(cookie_header.contains("SameSite=Lax"));
    let before = set_cookie(&response).unwrap();

    // Signing in again from that session (as someone else) gives a new session id.
    let cookies = format!("referdesk_session={before}; referdesk_form={form_cookie}");
    let response = client
        .get(app.browser.url("/"))
        .header("Cookie", &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let csrf = crate::helpers::csrf_in(&response.text().await.unwrap()).unwrap();
    let response = client
        .post(app.browser.url("/login"))
        .header("Cookie", &cookies)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", "kim@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let after = set_cookie(&response).expect("a new cookie at sign-in");
    assert_ne!(before, after);

    // The earlier cookie is not signed in any more.
    let response = client
        .get(app.browser.url("/"))
        .header("Cookie", format!("referdesk_session={before}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let response = client
        .get(app.browser.url("/"))
        .header("Cookie", format!("referdesk_session={after}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("kim@example.com"));
}

fn set_cookie(response: &reqwest::Response) -> Option<String> {
    cookie_set(response, "referdesk_session")
}

/// The value of the cookie `name` that a response sets.
fn cookie_set(response: &reqwest::Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix(prefix.as_str()))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_string())
}

#[apply(integration_test!)]
async fn disabled_member_cannot_sign_in() {
    use diesel::prelude::*;
    use referdesk::db::schema::team_members;
    let app = TestApp::spawn().await;
    let id = app.login_as(Role::Support).await;
    diesel::update(team_members::table.find(id))
        .set(team_members::disabled.eq(true))
        .execute(&mut app.conn())
        .unwrap();
    let response = app.get("/").await;
    assert_eq!(
        response.status(),
        303,
        "a disabled member's session stops working"
    );
}

#[apply(integration_test!)]
async fn security_headers_are_set() {
    let app = TestApp::spawn().await;
    let response = app.get("/login").await;
    let headers = response.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert!(headers.contains_key("referrer-policy"));
}

#[apply(integration_test!)]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let css = app.get("/static/style.css").await;
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[apply(integration_test!)]
async fn unknown_pages_get_a_styled_404() {
    let app = TestApp::spawn().await;
    let response = app.get("/no/such/page").await;
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().contains("/static/style.css"));
}

#[apply(integration_test!)]
async fn flash_messages_survive_a_second_post() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let program_id: i64 = {
        use diesel::prelude::*;
        use referdesk::db::schema::programs;
        programs::table
            .select(programs::id)
            .first(&mut app.conn())
            .unwrap()
    };
    // Two POSTs in a row, each queueing a message, before any page is shown.
    let (_, form) = app.browser.get_html("/api-tokens").await;
    let form_token = crate::helpers::form_token_in(&form).unwrap();
    let response = app
        .post_form("/api-tokens", &[("name", "first"), ("form_token", &form_token)])
        .await;
    assert_eq!(response.status(), 303);
    let id: i64 = {
        use diesel::prelude::*;
        use referdesk::db::schema::api_tokens;
        api_tokens::table
            .select(api_tokens::id)
            .first(&mut app.conn())
            .unwrap()
    };
    app.post_form(&format!("/api-tokens/{id}/revoke"), &[]).await;
    app.post_form("/program", &[("program", &program_id.to_string())])
        .await;
    let (_, body) = app.browser.get_html("/").await;
    assert!(
        body.contains("Token &#34;first&#34; is revoked")
            || body.contains("Token \"first\" is revoked")
            || body.contains("Token &quot;first&quot; is revoked"),
        "{body}"
    );
    assert!(body.contains("Now working in"));
}

/// The login, setup and set-password forms work without a session, and still refuse a
/// POST whose token is missing, wrong, another browser's, or sent without its cookie.
#[apply(integration_test!)]
async fn public_forms_need_the_token_of_their_own_browser() {
    use diesel::prelude::*;
    use referdesk::db::schema::{sessions, team_members};
    use referdesk::domain::{team, Actor};

    let app = TestApp::spawn().await;
    let setup_path = {
        let url = app.setup_url.clone().expect("a setup link");
        url[url.find("/setup").unwrap()..].to_string()
    };
    let setup_token = setup_path.split("token=").nth(1).unwrap().to_string();
    let members = || -> i64 { team_members::table.count().get_result(&mut app.conn()).unwrap() };
    let session_rows = || -> i64 { sessions::table.count().get_result(&mut app.conn()).unwrap() };

    let ada = app.new_browser();
    let (status, body) = ada.get_html(&setup_path).await;
    assert_eq!(status, 200);
    let ada_token = crate::helpers::csrf_in(&body).unwrap();
    let stranger = app.new_browser();
    let (_, body) = stranger.get_html("/login").await;
    let stranger_token = crate::helpers::csrf_in(&body).unwrap();
    assert_ne!(ada_token, stranger_token);
    assert_eq!(session_rows(), 0);

    let setup_fields = [
        ("token", setup_token.as_str()),
        ("email", "ada@example.com"),
        ("name", "Ada"),
        ("password", PASSWORD),
        ("password_confirmation", PASSWORD),
    ];
    for (case, token) in [
        ("missing", None),
        ("wrong", Some("0".repeat(64))),
        ("another browser's", Some(stranger_token.clone())),
    ] {
        let response = post_with_token(&ada, "/setup", &setup_fields, token.as_deref()).await;
        assert_eq!(response.status(), 403, "setup with a {case} token");
    }
    // The right token without the cookie it is bound to.
    let cookieless = Browser::new(&app.address);
    let response = post_with_token(&cookieless, "/setup", &setup_fields, Some(&ada_token)).await;
    assert_eq!(response.status(), 403, "setup with a token but no cookie");
    assert_eq!(members(), 0, "a refused setup creates nobody");

    let response = post_with_token(&ada, "/setup", &setup_fields, Some(&ada_token)).await;
    assert_eq!(response.status(), 303);
    assert_eq!(ada.get_html("/").await.0, 200, "signed in after setup");
    assert_eq!(members(), 1);
    assert_eq!(session_rows(), 1, "one row: the signed-in admin's");

    // Sign-in.
    let sam = app.new_browser();
    app.create_member("sam@example.com", Role::Viewer, PASSWORD);
    let (_, body) = sam.get_html("/login").await;
    let sam_token = crate::helpers::csrf_in(&body).unwrap();
    let login_fields = [("email", "sam@example.com"), ("password", PASSWORD)];
    for (case, token) in [
        ("missing", None),
        ("wrong", Some(format!("{sam_token}x"))),
        ("another browser's", Some(stranger_token.clone())),
    ] {
        let response = post_with_token(&sam, "/login", &login_fields, token.as_deref()).await;
        assert_eq!(response.status(), 403, "sign-in with a {case} token");
    }
    let response = post_with_token(&cookieless, "/login", &login_fields, Some(&sam_token)).await;
    assert_eq!(response.status(), 403, "sign-in with a token but no cookie");
    assert_eq!(session_rows(), 1, "refused sign-ins store nothing");
    let response = post_with_token(&sam, "/login", &login_fields, Some(&sam_token)).await;
    assert_eq!(response.status(), 303);
    assert_eq!(sam.get_html("/").await.0, 200, "signed in");

    // A set-password link.
    let lin_id = team::create_member(
        &mut app.conn(),
        &Actor::system(),
        team::NewMember::parse("lin@example.com", "Lin", "viewer", None).unwrap(),
    )
    .unwrap()
    .id;
    let link_token = team::issue_password_link(&mut app.conn(), &Actor::system(), lin_id).unwrap();
    let lin = app.new_browser();
    let (status, body) = lin.get_html(&format!("/set-password?token={link_token}")).await;
    assert_eq!(status, 200);
    let lin_token = crate::helpers::csrf_in(&body).unwrap();
    let password_fields = [
        ("token", link_token.as_str()),
        ("password", PASSWORD),
        ("password_confirmation", PASSWORD),
    ];
    for (case, token) in [
        ("missing", None),
        ("another browser's", Some(stranger_token.clone())),
    ] {
        let response = post_with_token(&lin, "/set-password", &password_fields, token.as_deref()).await;
        assert_eq!(response.status(), 403, "set-password with a {case} token");
    }
    let response = post_with_token(&lin, "/set-password", &password_fields, Some(&lin_token)).await;
    assert_eq!(response.status(), 303);
    let (status, body) = lin.get_html("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("Your password is set"));
}

/// POSTs a form from `browser` (with its cookies) with exactly this CSRF token, or none.
async fn post_with_token(
    browser: &Browser,
    path: &str,
    fields: &[(&str, &str)],
    token: Option<&str>,
) -> reqwest::Response {
    let mut fields = fields.to_vec();
    if let Some(token) = token {
        fields.push(("csrf_token", token));
    }
    browser
        .client
        .post(browser.url(path))
        .form(&fields)
        .send()
        .await
        .unwrap()
}
