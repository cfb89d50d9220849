//! What every dashboard form and error page shares: all of a form's problems in one round,
//! the ARIA attributes of fields in error, post/redirect/get after a success, error pages
//! that name the role needed and keep the navigation, and a customer's address opened
//! while another program is selected.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::customers;
use referdesk::domain::customers::CustomerInput;
use referdesk::domain::team::Role;

use crate::fixtures::{insert_customer, insert_program, seed};
use crate::helpers::{assert_refused, form_token_in, location, TestApp};
use crate::integration_test;

fn ada(app: &TestApp) {
    app.create_customer(CustomerInput {
        key: Some("ada".into()),
        email: Some("ada@example.com".into()),
        name: Some("Ada".into()),
        ..Default::default()
    });
}

fn customer_count(app: &TestApp) -> i64 {
    customers::table.count().get_result(&mut app.conn()).unwrap()
}

/// The opening tag of the element with this id.
fn tag_with_id<'a>(html: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = html.find(&marker).unwrap_or_else(|| panic!("no element #{id}"));
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    &html[start..=end]
}

#[apply(integration_test!)]
async fn the_new_customer_form_reports_every_problem_in_one_round() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    ada(&app);
    // A taken email and an unknown referrer (checks against other customers) together with
    // a date that does not parse (a check of the input alone): all three at once.
    let response = app
        .post_form(
            "/customers",
            &[
                ("email", "ADA@example.com"),
                ("referring_customer", "nobody-by-that-key"),
                ("metadata.date_of_birth", "1990-02-31"),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &[
            "A customer with this email already exists.",
            "No customer with the key or email \"nobody-by-that-key\" in this program.",
        ],
    )
    .await;
    assert!(
        html.contains("id=\"field-metadata.date_of_birth-error\""),
        "{html}"
    );
    assert_eq!(customer_count(&app), 1, "nothing was created");

    // Each field in error says so, and names its message (and its help, where it has one).
    let email = tag_with_id(&html, "field-email");
    assert!(email.contains("aria-invalid=\"true\""), "{email}");
    assert!(
        email.contains("aria-describedby=\"field-email-error\""),
        "{email}"
    );
    let referrer = tag_with_id(&html, "field-referring_customer");
    assert!(referrer.contains("aria-invalid=\"true\""), "{referrer}");
    assert!(
        referrer
            .contains("aria-describedby=\"field-referring_customer-help field-referring_customer-error\""),
        "{referrer}"
    );
    let name = tag_with_id(&html, "field-name");
    assert!(
        !name.contains("aria-invalid"),
        "a field without a problem: {name}"
    );

    // Fixed, the same form goes through.
    let response = app
        .post_form(
            "/customers",
            &[
                ("email", "grace@example.com"),
                ("key", "grace"),
                ("referring_customer", "ada"),
                ("metadata.date_of_birth", "1990-02-28"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/customers/grace");
}

#[apply(integration_test!)]
async fn the_edit_form_reports_a_bad_field_and_a_taken_email_together() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    ada(&app);
    app.create_customer(CustomerInput {
        key: Some("grace".into()),
        email: Some("grace@example.com".into()),
        ..Default::default()
    });
    let response = app
        .post_form(
            "/customers/grace/edit",
            &[
                ("key", "grace"),
                ("email", "ada@example.com"),
                ("name", "Grace\u{7}"),
            ],
        )
        .await;
    let html = assert_refused(response, &["A customer with this email already exists."]).await;
    assert!(html.contains("id=\"field-name-error\""), "{html}");
    let email: Option<String> = customers::table
        .filter(customers::key.eq("grace"))
        .select(customers::email)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(email.as_deref(), Some("grace@example.com"), "nothing changed");
}

#[apply(integration_test!)]
async fn the_new_member_form_reports_every_problem_in_one_round() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    app.create_member("sam@example.com", Role::Support, crate::helpers::PASSWORD);
    let response = app
        .post_form(
            "/team",
            &[
                ("email", "SAM@example.com"),
                ("name", ""),
                ("role", "support"),
                ("password_mode", "password"),
            ],
        )
        .await;
    let html = assert_refused(
        response,
        &[
            "A team member with this email already exists.",
            "Enter a name (at most 200 characters, without control characters).",
            "Enter an initial password, or choose to generate a set-password link.",
        ],
    )
    .await;
    assert!(tag_with_id(&html, "email").contains("aria-invalid=\"true\""));
}

#[apply(integration_test!)]
async fn a_field_framed_by_hand_carries_its_aria_attributes_too() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    ada(&app);
    let (_, html) = app.browser.get_html("/customers/ada/credit").await;
    let amount = tag_with_id(&html, "amount");
    assert!(
        amount.contains("autofocus"),
        "the cursor starts in the amount: {amount}"
    );
    assert!(amount.contains("aria-describedby=\"amount-help\""), "{amount}");
    assert!(!amount.contains("aria-invalid"), "{amount}");
    let token = form_token_in(&html).unwrap();
    let response = app
        .post_form(
            "/customers/ada/credit",
            &[
                ("kind", "credit"),
                ("amount", "ten"),
                ("is_currency", "1"),
                ("currency", "USD"),
                ("form_token", &token),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    let amount = tag_with_id(&html, "amount");
    assert!(amount.contains("aria-invalid=\"true\""), "{amount}");
    assert!(
        amount.contains("aria-describedby=\"amount-help amount-error\""),
        "{amount}"
    );

    let (_, html) = app.browser.get_html("/customers/ada/invite").await;
    assert!(tag_with_id(&html, "email").contains("autofocus"));
}

#[apply(integration_test!)]
async fn a_refused_role_is_told_which_role_is_needed_with_the_navigation() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let response = app.get("/customers/new").await;
    assert_eq!(response.status(), 403);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("This needs the support role or higher; you are signed in with the viewer role."),
        "{html}"
    );
    assert!(html.contains("class=\"mainnav\""), "the navigation stays: {html}");
    assert!(html.contains("Sign out"));

    let support = app.new_browser();
    app.create_member("support@example.com", Role::Support, crate::helpers::PASSWORD);
    support
        .login("support@example.com", crate::helpers::PASSWORD)
        .await;
    let (status, html) = support.get_html("/team").await;
    assert_eq!(status, 403);
    assert!(
        html.contains("This needs the admin role; you are signed in with the support role."),
        "{html}"
    );
    // A POST refused the same way changes nothing and says the same.
    let response = support
        .post_form(
            "/team",
            &[("email", "new@example.com"), ("name", "New"), ("role", "admin")],
        )
        .await;
    assert_eq!(response.status(), 403);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("This needs the admin role"));

    // Other error pages of a signed-in member keep the navigation too.
    let (status, html) = support.get_html("/customers/nobody").await;
    assert_eq!(status, 404);
    assert!(html.contains("class=\"mainnav\""), "{html}");
}

#[apply(integration_test!)]
async fn a_customer_of_another_program_offers_to_switch_to_it() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let other = insert_program(&app, "second");
    insert_customer(&app, other, seed("linus", chrono::Utc::now()));

    let (status, html) = app.browser.get_html("/customers/linus").await;
    assert_eq!(status, 404);
    assert!(html.contains("Customer “linus” is in another program"), "{html}");
    assert!(
        html.contains("It belongs to <strong>Program second</strong>."),
        "{html}"
    );
    assert!(html.contains(&format!("name=\"program\" value=\"{other}\"")));
    assert!(html.contains("Switch to Program second and open"));

    // The button switches and opens the customer.
    let response = app
        .post_form(
            "/program",
            &[
                ("program", &other.to_string()),
                ("next", "/customers/linus"),
                ("open", "1"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/customers/linus");
    let (status, html) = app.browser.get_html("/customers/linus").await;
    assert_eq!(status, 200);
    assert!(html.contains("Name linus"));

    // A key no program has is the plain 404.
    let (status, html) = app.browser.get_html("/customers/nobody").await;
    assert_eq!(status, 404);
    assert!(!html.contains("another program"));
}

/// A form's fields, as posted.
type Fields<'a> = Vec<(&'a str, &'a str)>;

/// Every form refused once, then accepted: the refusal is a 422 page, the success a 303
/// to a page (post/redirect/get), never a page drawn as the POST's answer.
#[apply(integration_test!)]
async fn successful_posts_redirect_after_a_refusal() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    ada(&app);
    let (_, credit_page) = app.browser.get_html("/customers/ada/credit").await;
    let credit_token = form_token_in(&credit_page).unwrap();
    let (_, tokens_page) = app.browser.get_html("/api-tokens").await;
    let api_token = form_token_in(&tokens_page).unwrap();
    #[rustfmt::skip]
    let forms: Vec<(&str, Fields, Fields)> = vec![
        ("/customers", vec![("email", "not an email")], vec![("email", "newcomer@example.com"), ("key", "newcomer")]),
        ("/customers/ada/edit", vec![("key", "a b")], vec![("key", "ada"), ("name", "Ada L.")]),
        ("/customers/ada/credit",
         vec![("kind", "credit"), ("amount", "-1"), ("is_currency", "1"), ("currency", "USD"), ("form_token", &credit_token)],
         vec![("kind", "credit"), ("amount", "10"), ("is_currency", "1"), ("currency", "USD"), ("form_token", &credit_token)]),
        ("/customers/ada/invite", vec![("email", "nope")], vec![("email", "friend@example.com")]),
        ("/invites/new", vec![("email", "")], vec![("email", "other@example.com")]),
        ("/team",
         vec![("email", "x"), ("name", ""), ("role", "support"), ("password_mode", "link")],
         vec![("email", "sam@example.com"), ("name", "Sam"), ("role", "support"), ("password_mode", "link")]),
        ("/programs",
         vec![("name", "Shop"), ("slug", "Not A Slug"), ("referral_base_url", "https://shop.example.com/")],
         vec![("name", "Shop"), ("slug", "shop"), ("referral_base_url", "https://shop.example.com/")]),
        ("/api-tokens", vec![("name", ""), ("form_token", &api_token)], vec![("name", "backend"), ("form_token", &api_token)]),
        ("/profile", vec![("name", "")], vec![("name", "Admin Person")]),
    ];
    for (path, refused, accepted) in forms {
        let response = app.post_form(path, &refused).await;
        assert_eq!(response.status(), 422, "{path} refuses {refused:?}");
        let response = app.post_form(path, &accepted).await;
        assert_eq!(
            response.status(),
            303,
            "{path} accepts {accepted:?}: {}",
            response.text().await.unwrap()
        );
        let next = location(&response);
        let followed = app.get(&next).await;
        assert_eq!(followed.status(), 200, "{path} leads to {next}");
    }
}
