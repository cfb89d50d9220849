//! The customer page as support uses it (issue 22): the header, the plain-language
//! timeline, the referrer change and the erasure, what a deleted customer offers; and the
//! numbers, times and words of the pages around it (audit log, invites).

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{customers, invites};
use referdesk::domain::customers::{Customer, CustomerInput};
use referdesk::domain::team::Role;

use crate::helpers::{assert_refused, form_token_in, TestApp};
use crate::integration_test;

fn named(app: &TestApp, key: &str, name: &str, surname: &str, referrer: Option<&str>) -> Customer {
    app.create_customer(CustomerInput {
        key: Some(key.to_string()),
        email: Some(format!("{key}@example.com")),
        name: Some(name.to_string()),
        surname: Some(surname.to_string()),
        referrer_key: referrer.map(str::to_string),
        ..Default::default()
    })
}

/// Credits through the dashboard's form, as support does.
async fn credit(app: &TestApp, key: &str, fields: &[(&str, &str)]) {
    let (_, html) = app.browser.get_html(&format!("/customers/{key}/credit")).await;
    let token = form_token_in(&html).expect("a form token");
    let mut all = vec![("kind", "credit"), ("form_token", token.as_str())];
    all.extend_from_slice(fields);
    let response = app.post_form(&format!("/customers/{key}/credit"), &all).await;
    assert_eq!(response.status(), 303);
}

/// Only the part of the page between two markers.
fn section<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("{start} not on the page"));
    let rest = &html[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

#[apply(integration_test!)]
async fn header_shows_balances_formatted_and_the_primary_actions() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    named(&app, "linus", "Linus", "Allen", None);
    credit(&app, "linus", &[("amount", "250000"), ("unit_name", "points")]).await;
    credit(
        &app,
        "linus",
        &[
            ("amount", "1234.5"),
            ("is_currency", "1"),
            ("currency", "EUR"),
            ("note", "goodwill (ticket #4711)"),
        ],
    )
    .await;
    let (_, flash_page) = app.browser.get_html("/customers/linus").await;
    assert!(
        flash_page.contains("Credited 1,234.50 EUR for Linus Allen."),
        "{flash_page}"
    );

    let (status, html) = app.browser.get_html("/customers/linus").await;
    assert_eq!(status, 200);
    let header = section(
        &html,
        "<header class=\"page-header customer-header\">",
        "</header>",
    );
    assert!(header.contains("1,234.50 EUR"), "{header}");
    assert!(header.contains("250,000 points"), "{header}");
    assert!(header.contains(">Credit</a>"), "{header}");
    assert!(
        header.contains("href=\"/customers/linus/invite\">Invite</a>"),
        "{header}"
    );
    assert!(
        header.contains("data-copy=\"") && header.contains("Copy referral link"),
        "{header}"
    );
    // The ledger and the timeline say the same, with the exact time on hover.
    let balance = section(&html, "id=\"balance\"", "</section>");
    assert!(balance.contains("250,000"), "{balance}");
    assert!(
        html.contains("Test Member credited 1,234.50 EUR — goodwill (ticket #4711)"),
        "{html}"
    );
    assert!(html.contains("<time datetime=\""), "times as <time>");
    assert!(html.contains("just now</time>") || html.contains("minute ago</time>"));
    // Erase is in the danger zone, for admins only.
    assert!(!html.contains("Danger zone"));
}

#[apply(integration_test!)]
async fn timeline_tells_signups_referrals_and_edits_in_words() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    named(&app, "linus", "Linus", "Allen", None);
    named(&app, "mia", "Mia", "Friend", Some("linus"));
    let response = app
        .post_form(
            "/customers/mia/edit",
            &[
                ("key", "mia"),
                ("email", "mia.friend@example.com"),
                ("name", "Mia"),
                ("surname", "Friend"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);

    let (_, mia) = app.browser.get_html("/customers/mia").await;
    let activity = section(&mia, "id=\"activity\"", "</section>");
    assert!(
        activity.contains("Mia Friend signed up through Linus Allen&#39;s link"),
        "{activity}"
    );
    assert!(
        activity.contains("Email changed from mia@example.com to mia.friend@example.com"),
        "{activity}"
    );
    assert!(activity.contains("<details"), "the full change one click away");
    assert!(!activity.contains(">customer.update<"), "no raw action names");

    // The referrer's own page shows the referral they gained.
    let (_, linus) = app.browser.get_html("/customers/linus").await;
    let activity = section(&linus, "id=\"activity\"", "</section>");
    assert!(!activity.contains("No recorded changes"));
    assert!(
        activity.contains("Mia Friend signed up through Linus Allen&#39;s link"),
        "{activity}"
    );

    // Mia moves to Ada: Linus's page tells that she left, Ada's that she came.
    named(&app, "ada", "Ada", "Lovelace", None);
    let moved = app
        .post_form(
            "/customers/mia/referrer",
            &[("referring_customer", "ada"), ("confirm", "1")],
        )
        .await;
    assert_eq!(moved.status(), 303);
    let (_, linus) = app.browser.get_html("/customers/linus").await;
    let activity = section(&linus, "id=\"activity\"", "</section>");
    assert!(
        activity.contains("Mia Friend&#39;s referrer changed from Linus Allen to Ada Lovelace"),
        "{activity}"
    );
    let (_, ada) = app.browser.get_html("/customers/ada").await;
    let activity = section(&ada, "id=\"activity\"", "</section>");
    assert!(
        activity.contains("made Ada Lovelace the referrer of Mia Friend"),
        "{activity}"
    );
    assert!(!activity.contains("referrer changed from"), "{activity}");
}

#[apply(integration_test!)]
async fn a_deleted_customer_offers_only_restore() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    named(&app, "linus", "Linus", "Allen", None);
    named(&app, "nia", "Nia", "Extra", None);
    assert_eq!(
        app.post_form("/customers/nia/links", &[("code", "nia-extra")])
            .await
            .status(),
        303
    );
    let (_, html) = app.browser.get_html("/customers/nia").await;
    assert!(
        html.contains("/links/") && html.contains("/delete\""),
        "an extra link can be deleted"
    );
    assert!(html.contains("id=\"danger-zone\""));
    assert_eq!(app.post_form("/customers/nia/delete", &[]).await.status(), 303);

    let (_, html) = app.browser.get_html("/customers/nia").await;
    for gone in [
        "/customers/nia/edit",
        "/customers/nia/invite",
        "/customers/nia/credit",
        "action=\"/customers/nia/referrer",
        "/customers/nia/links\"",
        "Copy referral link",
        "/customers/nia/approve",
        "/customers/nia/unapprove",
        "/customers/nia/delete",
        "Share a referral link above",
    ] {
        assert!(!html.contains(gone), "{gone} offered for a deleted customer");
    }
    assert!(!html.contains("/links/") || !html.contains("/delete\" data-confirm=\"Delete the link"));
    assert!(html.contains("action=\"/customers/nia/restore\""));
    assert_eq!(
        html.matches("class=\"flash flash-info\"").count(),
        1,
        "one banner"
    );
    // The erasure is still offered (a deleted customer may ask for it); afterwards the
    // one banner says both.
    let response = app.post_form("/customers/nia/erase", &[("confirm", "nia")]).await;
    assert_eq!(response.status(), 303);
    let (_, html) = app.browser.get_html("/customers/nia").await;
    assert_eq!(
        html.matches("class=\"flash flash-info\"").count(),
        1,
        "one banner: {html}"
    );
    assert!(html.contains("their personal data was erased"));
    assert!(!html.contains("Danger zone"), "nothing left to erase or delete");
}

#[apply(integration_test!)]
async fn an_erased_customer_is_not_edited_invited_or_re_attributed() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    named(&app, "linus", "Linus", "Allen", None);
    let response = app
        .post_form("/customers/linus/erase", &[("confirm", "linus@example.com")])
        .await;
    assert_eq!(response.status(), 303);
    let (_, html) = app.browser.get_html("/customers/linus").await;
    for gone in [
        "/customers/linus/edit",
        "/customers/linus/invite",
        "action=\"/customers/linus/referrer",
        "Share a referral link above",
        "/customers/linus/erase",
    ] {
        assert!(!html.contains(gone), "{gone} offered for an erased customer");
    }
    assert!(
        html.contains("Erased customer has not referred anyone."),
        "{html}"
    );
    assert_eq!(
        html.matches("class=\"flash flash-info\"").count(),
        1,
        "one banner"
    );
}

#[apply(integration_test!)]
async fn referrer_change_to_an_unknown_customer_is_refused_before_confirming() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    named(&app, "linus", "Linus", "Allen", None);
    let mia = named(&app, "mia", "Mia", "Friend", Some("linus"));
    let response = app
        .post_form("/customers/mia/referrer", &[("referring_customer", "nobody")])
        .await;
    assert_refused(
        response,
        &["No customer with the key or email \"nobody\" in this program."],
    )
    .await;
    let response = app
        .post_form("/customers/mia/referrer", &[("referring_customer", "linus")])
        .await;
    assert_refused(response, &["Linus Allen already is this customer's referrer."]).await;
    let referrer: Option<i64> = customers::table
        .find(mia.id)
        .select(customers::referrer_id)
        .first(&mut app.conn())
        .unwrap();
    assert!(referrer.is_some());
}

#[apply(integration_test!)]
async fn audit_log_names_customers_and_words_actions() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let linus = named(&app, "linus", "Linus", "Allen", None);
    assert_eq!(app.post_form("/customers/linus/approve", &[]).await.status(), 303);
    assert_eq!(
        app.post_form("/customers/linus/unapprove", &[]).await.status(),
        303
    );
    let (_, html) = app.browser.get_html("/audit").await;
    let table = section(&html, "id=\"audit-events\"", "</table>");
    assert!(table.contains("customer Linus Allen"), "{table}");
    assert!(
        !table.contains(&format!("#{}", linus.id)),
        "no customer ids: {table}"
    );
    assert!(table.contains("Approval withdrawn"), "{table}");
    assert!(table.contains(">Linus Allen</a>"), "{table}");
    assert!(table.contains("Test Member"), "the member by name: {table}");
    assert!(html.contains("class=\"date-range\""));
}

#[apply(integration_test!)]
async fn invites_show_joined_the_inviter_and_the_personal_note() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    named(&app, "linus", "Linus", "Allen", None);

    // An address whose domain has no dot is refused, and nothing is written.
    let response = app
        .post_form(
            "/customers/linus/invite",
            &[("email", "friend@example"), ("name", "Friend")],
        )
        .await;
    assert_refused(response, &["has no dot, so no email can reach it"]).await;
    let count: i64 = invites::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(count, 0);

    let (_, form) = app.browser.get_html("/customers/linus/invite").await;
    assert!(form.contains("Personal note"));
    assert!(!form.contains("named <span class=\"mono\">message</span>"));
    let response = app
        .post_form(
            "/customers/linus/invite",
            &[
                ("email", "mia@example.com"),
                ("name", "Mia"),
                ("note", "Come join us!"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let personalization: serde_json::Value = invites::table
        .select(invites::personalization)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(personalization, serde_json::json!({"message": "Come join us!"}));

    let (_, list) = app.browser.get_html("/invites").await;
    assert!(
        list.contains(">Linus Allen</a>"),
        "From names the referrer: {list}"
    );
    assert!(!list.contains(">joined<"));
    // The address becomes a customer (any way: here the domain call the API makes).
    named(&app, "mia", "Mia", "Friend", Some("linus"));
    let (_, list) = app.browser.get_html("/invites").await;
    assert!(list.contains(">joined</span>"), "{list}");
    assert!(
        list.contains("href=\"/customers/mia\""),
        "linked to the new customer: {list}"
    );
    // The inviter's own page says the same in its invites panel.
    let (_, page) = app.browser.get_html("/customers/linus").await;
    let panel = section(&page, "id=\"invites\"", "</section>");
    assert!(panel.contains(">joined</span>"), "{panel}");
    assert!(panel.contains("href=\"/customers/mia\""), "{panel}");
}
