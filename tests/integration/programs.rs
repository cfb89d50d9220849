//! Programs: creating and editing them, and pages that show only the current one.

use chrono::{Duration, Utc};
use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, programs};
use referdesk::domain::team::Role;

use crate::fixtures::{
    count_events, insert_customer, insert_event, insert_program, listed_event_ids, recount_referrals, seed,
    value_after, EventSeed, Seed,
};
use crate::helpers::{assert_refused, TestApp};
use crate::integration_test;

#[apply(integration_test!)]
async fn programs_are_created_and_edited_with_per_field_messages() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    app.browser.get_html("/programs/new").await;

    let response = app
        .post_form(
            "/programs",
            &[
                ("name", ""),
                ("slug", "Not A Slug"),
                ("referral_base_url", "javascript:alert(1)"),
                ("link_param", "a b"),
            ],
        )
        .await;
    let body = assert_refused(
        response,
        &[
            "Enter a name",
            "Use 1 to 63 lowercase letters",
            "Enter a full address starting with https:// or http://.",
            "Use 1 to 64 letters, digits",
        ],
    )
    .await;
    assert!(body.contains("value=\"Not A Slug\""), "typed values are kept");
    let count: i64 = programs::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(count, 1, "nothing created");

    let response = app
        .post_form(
            "/programs",
            &[
                ("name", "Spring shop"),
                ("slug", "spring"),
                ("referral_base_url", "https://spring.example.com/join"),
                ("link_param", "via"),
                ("require_approval", "on"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let (id, base, param, approval): (i64, String, String, bool) = programs::table
        .filter(programs::slug.eq("spring"))
        .select((
            programs::id,
            programs::referral_base_url,
            programs::link_param,
            programs::require_approval,
        ))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(
        (base.as_str(), param.as_str(), approval),
        ("https://spring.example.com/join", "via", true)
    );
    assert_eq!(count_events(&app, "program.create", id), 1);
    let (_, body) = app.browser.get_html("/programs").await;
    assert!(body.contains("Program Spring shop was created."));
    assert!(body.contains("https://spring.example.com/join?via=KEY"));
    // The switcher lists it.
    assert!(body.contains(&format!("<option value=\"{id}\"")));

    // A duplicate slug.
    let response = app
        .post_form(
            "/programs",
            &[
                ("name", "Copy"),
                ("slug", "default"),
                ("referral_base_url", "https://x.example.com/"),
            ],
        )
        .await;
    assert_refused(response, &["Another program already uses this slug."]).await;

    // Edit: the form shows the values; a duplicate slug is refused; a good change is saved.
    let (status, body) = app.browser.get_html(&format!("/programs/{id}/edit")).await;
    assert_eq!(status, 200);
    assert!(body.contains("value=\"spring\""));
    assert!(body.contains("checked"));
    let response = app
        .post_form(
            &format!("/programs/{id}/edit"),
            &[
                ("name", "Spring shop"),
                ("slug", "default"),
                ("referral_base_url", "https://spring.example.com/join"),
            ],
        )
        .await;
    assert_refused(response, &["Another program already uses this slug."]).await;
    let response = app
        .post_form(
            &format!("/programs/{id}/edit"),
            &[
                ("name", "Summer shop"),
                ("slug", "summer"),
                ("referral_base_url", "http://summer.example.com"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let (name, slug, base, param, approval): (String, String, String, String, bool) = programs::table
        .find(id)
        .select((
            programs::name,
            programs::slug,
            programs::referral_base_url,
            programs::link_param,
            programs::require_approval,
        ))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(name, "Summer shop");
    assert_eq!(slug, "summer");
    assert_eq!(base, "http://summer.example.com/");
    assert_eq!(param, "ref", "an empty link parameter means ref");
    assert!(!approval, "an unticked box turns approval off");
    let (before, after): (Option<serde_json::Value>, Option<serde_json::Value>) = audit_events::table
        .filter(audit_events::action.eq("program.update"))
        .select((audit_events::before, audit_events::after))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(before.unwrap()["slug"], "spring");
    assert_eq!(after.unwrap()["slug"], "summer");
    assert_eq!(app.get("/programs/999999/edit").await.status(), 404);
}

#[apply(integration_test!)]
async fn pages_only_show_the_current_program() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let program_a = app.default_program().id;
    let program_b = insert_program(&app, "bee");
    let now = Utc::now();
    let a_referrer = insert_customer(&app, program_a, seed("alpha", now - Duration::days(5)));
    insert_customer(
        &app,
        program_a,
        Seed {
            referrer: Some(a_referrer),
            ..seed("alpha-friend", now)
        },
    );
    let b_referrer = insert_customer(&app, program_b, seed("bravo", now - Duration::days(5)));
    for key in ["bravo-1", "bravo-2"] {
        insert_customer(
            &app,
            program_b,
            Seed {
                referrer: Some(b_referrer),
                ..seed(key, now - Duration::days(1))
            },
        );
    }
    recount_referrals(&app);
    insert_event(
        &app,
        EventSeed {
            program_id: Some(program_b),
            member_id: None,
            label: "b-token",
            action: "customer.update",
            customer_id: Some(b_referrer),
            at: now,
            before: None,
            after: None,
        },
    );

    // The customer page of program B's customer is a 404 while A is current (that page
    // belongs to the customers area; without it the route is unknown, a 404 as well).
    assert_eq!(app.get("/customers/bravo").await.status(), 404);

    let (_, body) = app.browser.get_html("/").await;
    assert!(body.contains("data-key=\"alpha\""));
    assert!(!body.contains("bravo"), "no trace of program B on A's dashboard");
    assert_eq!(value_after(&body, "id=\"stat-customers\""), 2);
    assert_eq!(value_after(&body, "id=\"stat-referred\""), 1);
    let (status, body) = app.browser.get_html("/audit?customer=bravo").await;
    assert_eq!(status, 200);
    assert!(body.contains("No customer with the key"));
    assert!(listed_event_ids(&body).is_empty());
    let (_, body) = app.browser.get_html("/audit?action=customer.update").await;
    assert!(!body.contains("b-token"));

    // Switching makes B current.
    let response = app
        .post_form("/program", &[("program", &program_b.to_string()), ("next", "/")])
        .await;
    assert_eq!(response.status(), 303);
    let (_, body) = app.browser.get_html("/").await;
    assert!(body.contains("data-key=\"bravo\""));
    assert!(!body.contains("data-key=\"alpha\""));
    assert_eq!(value_after(&body, "id=\"stat-customers\""), 3);
    assert_eq!(value_after(&body, "id=\"stat-referred\""), 2);
    let (_, body) = app.browser.get_html("/audit?customer=bravo").await;
    assert_eq!(listed_event_ids(&body).len(), 1);
    assert!(body.contains("b-token"));
}
