//! Every dashboard form reports all its problems in one round (the customer and member
//! forms are in `forms`): one submission with two or more bad fields shows every message,
//! with 422, the typed values kept and the fields marked, and writes nothing.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::team_members;
use referdesk::domain::customers::CustomerInput;
use referdesk::domain::team::{self, Role};
use referdesk::domain::Actor;

use crate::helpers::{assert_refused, form_token_in, TestApp, PASSWORD};
use crate::integration_test;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// How many rows a table holds.
fn count(app: &TestApp, table: &str) -> i64 {
    diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
        .get_result::<Count>(&mut app.conn())
        .unwrap()
        .n
}

/// The opening tag of the element with this id.
fn tag_with_id<'a>(html: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = html.find(&marker).unwrap_or_else(|| panic!("no element #{id}"));
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    &html[start..=end]
}

/// Each of these controls says it is in error and names its message.
fn assert_marked(html: &str, ids: &[&str]) {
    for id in ids {
        let tag = tag_with_id(html, id);
        assert!(tag.contains("aria-invalid=\"true\""), "{id}: {tag}");
        assert!(tag.contains(&format!("{id}-error")), "{id}: {tag}");
    }
}

fn ada(app: &TestApp) {
    app.create_customer(CustomerInput {
        key: Some("ada".into()),
        email: Some("ada@example.com".into()),
        name: Some("Ada".into()),
        ..Default::default()
    });
}

#[apply(integration_test!)]
async fn the_invite_form_reports_every_problem_at_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let long_name = "n".repeat(201);
    let response = app
        .post_form(
            "/invites/new",
            &[
                ("email", "not an address"),
                ("name", &long_name),
                ("personalization[0][key]", "bad key!"),
                ("personalization[0][value]", "x"),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &[
            "Enter a valid email address.",
            "Keep the name to 200 characters.",
            "letters, digits or underscores",
        ],
    )
    .await;
    assert_marked(&html, &["email", "name"]);
    assert!(html.contains("value=\"not an address\""), "the typed values stay");
    // The rows of template values name their message too.
    let row = tag_with_id(&html, "personalization-error");
    assert!(row.contains("role=\"alert\""), "{row}");
    assert!(
        html.contains("value=\"bad key!\" aria-label=\"Template value name 1\" aria-describedby=\"personalization-error\" aria-invalid=\"true\""),
        "{html}"
    );
    assert_eq!(count(&app, "invites"), 0);
}

#[apply(integration_test!)]
async fn the_debit_form_reports_a_bad_note_and_a_short_balance_together() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    ada(&app);
    let (_, form) = app.browser.get_html("/customers/ada/credit").await;
    let token = form_token_in(&form).expect("a form token");
    let note = "n".repeat(1001);
    let response = app
        .post_form(
            "/customers/ada/credit",
            &[
                ("kind", "debit"),
                ("amount", "5"),
                ("unit_name", "points"),
                ("note", &note),
                ("form_token", &token),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &[
            "Keep the note to 1000 characters.",
            "A debit may not take the balance below zero: the points balance is only 0.",
        ],
    )
    .await;
    assert_marked(&html, &["amount", "note"]);
    assert_eq!(count(&app, "balance_transactions"), 0);

    // A bad amount and bad units: both named.
    let response = app
        .post_form(
            "/customers/ada/credit",
            &[
                ("kind", "credit"),
                ("amount", "ten"),
                ("unit_name", ""),
                ("form_token", &token),
            ],
        )
        .await;
    let html = assert_refused(response, &["Enter a plain number"]).await;
    assert_marked(&html, &["amount", "unit_name"]);
    assert_eq!(count(&app, "balance_transactions"), 0);
}

#[apply(integration_test!)]
async fn the_program_form_reports_a_bad_name_and_a_taken_slug_together() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let response = app
        .post_form(
            "/programs",
            &[
                ("name", ""),
                ("slug", "default"),
                ("referral_base_url", "ftp://shop.example.com/"),
                ("link_param", "ref"),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &[
            "Enter a name (at most 200 characters, without control characters).",
            "Another program already uses this slug.",
            "Enter a full address starting with https:// or http://.",
        ],
    )
    .await;
    assert_marked(&html, &["name", "slug", "referral_base_url"]);
    assert_eq!(count(&app, "programs"), 1);

    // Editing: the program keeps its own slug, and another's is refused with the rest.
    let program = app.default_program();
    let other = app
        .post_form(
            "/programs",
            &[
                ("name", "Shop"),
                ("slug", "shop"),
                ("referral_base_url", "https://shop.example.com/"),
            ],
        )
        .await;
    assert_eq!(other.status(), 303);
    let response = app
        .post_form(
            &format!("/programs/{}/edit", program.id),
            &[
                ("name", ""),
                ("slug", "shop"),
                ("referral_base_url", "https://a.example.com/"),
            ],
        )
        .await;
    assert_refused(
        response,
        &[
            "Enter a name (at most 200 characters",
            "Another program already uses this slug.",
        ],
    )
    .await;
    assert_eq!(app.default_program().name, program.name, "nothing changed");
}

#[apply(integration_test!)]
async fn the_rule_form_reports_every_problem_at_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let response = app
        .post_form(
            "/rules",
            &crate::rules::rule_form(&[("name", ""), ("hold_days", "366"), ("budget", "0")]),
        )
        .await;
    let html = assert_refused(response, &["from 0 to 365", "Enter an amount above zero"]).await;
    assert_marked(&html, &["name", "hold_days", "budget"]);
    assert_eq!(count(&app, "reward_rules"), 0);
}

#[apply(integration_test!)]
async fn the_webhook_form_reports_every_problem_at_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let (_, form) = app.browser.get_html("/webhooks/new").await;
    let token = form_token_in(&form).expect("a form token");
    let response = app
        .post_form(
            "/webhooks",
            &[
                ("name", ""),
                ("url", "ftp://hooks.example.com/"),
                ("events", "customer.nonsense"),
                ("form_token", &token),
            ],
        )
        .await;
    let html = assert_refused(response, &["Enter a name.", "Unknown events: customer.nonsense."]).await;
    assert_marked(&html, &["name", "url"]);
    assert!(html.contains("aria-describedby=\"events-error\" aria-invalid=\"true\""));
    assert_eq!(count(&app, "webhook_subscriptions"), 0);
}

#[apply(integration_test!)]
async fn the_profile_form_reports_a_wrong_current_password_with_the_rest() {
    let app = TestApp::spawn().await;
    let id = app.login_as(Role::Viewer).await;
    let response = app
        .post_form(
            "/profile",
            &[
                ("name", ""),
                ("current_password", "not my password"),
                ("new_password", "short"),
                ("password_confirmation", "shorter"),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &[
            "Enter a name (at most 200 characters, without control characters).",
            "Your current password is not correct.",
            "Use at least 10 characters.",
            "The two passwords differ.",
        ],
    )
    .await;
    assert_marked(
        &html,
        &[
            "name",
            "current_password",
            "new_password",
            "password_confirmation",
        ],
    );
    let name: String = team_members::table
        .find(id)
        .select(team_members::name)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(name, "Test Member", "nothing changed");
}

#[apply(integration_test!)]
async fn password_forms_report_a_short_password_and_a_differing_one_together() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let lin = app.create_member("lin@example.com", Role::Viewer, PASSWORD);
    let hash_of = |app: &TestApp| -> Option<String> {
        team_members::table
            .find(lin)
            .select(team_members::password_hash)
            .first(&mut app.conn())
            .unwrap()
    };
    let before = hash_of(&app);

    // An admin setting a member's password.
    let response = app
        .post_form(
            &format!("/team/{lin}/password"),
            &[
                ("mode", "set"),
                ("password", "short"),
                ("password_confirmation", "other"),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &["Use at least 10 characters.", "The two passwords differ."],
    )
    .await;
    assert_marked(&html, &["password", "password_confirmation"]);

    // The member's own set-password link.
    let token = team::issue_password_link(&mut app.conn(), &Actor::system(), lin).unwrap();
    let browser = app.new_browser();
    let (status, _) = browser.get_html(&format!("/set-password?token={token}")).await;
    assert_eq!(status, 200);
    let response = browser
        .post_form(
            "/set-password",
            &[
                ("token", &token),
                ("password", "short"),
                ("password_confirmation", "other"),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &["Use at least 10 characters.", "The two passwords differ."],
    )
    .await;
    assert_marked(&html, &["password", "password_confirmation"]);
    assert_eq!(hash_of(&app), before, "no password was set");
}

#[apply(integration_test!)]
async fn the_setup_form_reports_a_bad_email_and_differing_passwords_together() {
    let app = TestApp::spawn().await;
    let setup_url = app
        .setup_url
        .clone()
        .expect("a fresh install prints a setup link");
    let token = setup_url.split("token=").nth(1).unwrap().to_string();
    let response = app
        .post_form(
            "/setup",
            &[
                ("token", &token),
                ("email", "not-an-email"),
                ("name", ""),
                ("password", "long enough password"),
                ("password_confirmation", "another long password"),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &["Enter a valid email address.", "The two passwords differ."],
    )
    .await;
    assert_marked(&html, &["email", "name", "password_confirmation"]);
    assert_eq!(count(&app, "team_members"), 0);
}

#[apply(integration_test!)]
async fn the_sign_in_form_names_both_empty_fields_and_counts_no_failure() {
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Support, PASSWORD);
    let response = app.post_form("/login", &[("email", " "), ("password", "")]).await;
    let html = assert_refused(response, &["Enter your email address.", "Enter your password."]).await;
    assert_marked(&html, &["email", "password"]);
    assert!(html.contains("data-posted"));
    assert_eq!(count(&app, "login_failures"), 0, "no attempt was made");
    // A form with both fields is tried as before.
    let response = app
        .post_form(
            "/login",
            &[("email", "sam@example.com"), ("password", "wrong password")],
        )
        .await;
    assert_eq!(response.status(), 401);
}

#[apply(integration_test!)]
async fn the_bulk_credit_form_reports_every_problem_at_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    ada(&app);
    let note = "n".repeat(1001);
    let response = app
        .post_form(
            "/customers/bulk",
            &[
                ("action", "credit"),
                ("scope", "selected"),
                ("key", "ada"),
                ("stage", "review"),
                ("amount", "ten"),
                ("units", ""),
                ("note", &note),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &["Enter a plain number", "Keep the note to 1000 characters."],
    )
    .await;
    assert_marked(&html, &["field-amount", "field-units", "field-note"]);
    assert_eq!(count(&app, "balance_transactions"), 0);
}

#[apply(integration_test!)]
async fn the_import_mapping_reports_every_problem_at_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let import = crate::fixtures::uploaded_import(&app).await;
    // Both columns as the email, while updating by key (which no column holds).
    let response = app
        .post_form(
            &import,
            &[
                ("column_0", "email"),
                ("column_1", "email"),
                ("mode", "upsert_key"),
                ("policy", "valid_rows"),
                ("action", "dry_run"),
            ],
        )
        .await;
    assert_refused(
        response,
        &[
            "To update customers by key, choose the column that holds it.",
            "Email is chosen for two columns.",
        ],
    )
    .await;
    assert_eq!(count(&app, "customers"), 0);
}

#[apply(integration_test!)]
async fn the_reward_settings_form_reports_both_fields_at_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let response = app
        .post_form(
            "/rules/settings",
            &[
                ("max_referrals_per_hour", "0"),
                ("support_approval_limit", "lots"),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &["Enter a whole number of referrals from 1 to 100,000."],
    )
    .await;
    assert_marked(&html, &["max_referrals_per_hour", "support_approval_limit"]);
    assert!(html.contains("value=\"lots\""), "the typed values stay");
}
