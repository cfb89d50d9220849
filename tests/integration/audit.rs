//! The audit log: filters, sign-in events, paging, the export and its total.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, team_members};
use referdesk::domain::team::Role;

use crate::fixtures::{
    day, event, insert_customer, insert_event, insert_program, listed_event_ids, listed_event_order, seed,
    EventSeed,
};
use crate::helpers::{TestApp, PASSWORD};
use crate::integration_test;

/// id, actor member, actor label, action, customer, created at.
type EventRow = (i64, Option<i64>, String, String, Option<i64>, DateTime<Utc>);

#[apply(integration_test!)]
async fn audit_filters_return_exactly_the_matching_events() {
    let app = TestApp::spawn().await;
    let admin_id = app.login_as(Role::Admin).await;
    let other_id = app.create_member("mo@example.com", Role::Support, PASSWORD);
    let program_a = app.default_program().id;
    let program_b = insert_program(&app, "bee");
    let long_ago = day(2026, 1, 1, 0);
    let c1 = insert_customer(&app, program_a, seed("cust-one", long_ago));
    let c2 = insert_customer(&app, program_a, seed("cust-two", long_ago));
    let cb = insert_customer(&app, program_b, seed("cust-b", long_ago));
    let admin_label: String = team_members::table
        .find(admin_id)
        .select(team_members::email)
        .first(&mut app.conn())
        .unwrap();

    let e1 = insert_event(
        &app,
        EventSeed {
            before: Some(serde_json::json!({"name": "Ada", "email": "ada@example.com"})),
            after: Some(serde_json::json!({"name": "Ada L.", "email": "ada@example.com"})),
            ..event(
                Some(program_a),
                Some(other_id),
                "mo@example.com",
                "customer.update",
                Some(c1),
                day(2026, 1, 10, 9),
            )
        },
    );
    let e2 = insert_event(
        &app,
        event(
            Some(program_a),
            Some(admin_id),
            &admin_label,
            "customer.delete",
            Some(c2),
            day(2026, 1, 15, 12),
        ),
    );
    let e3 = insert_event(
        &app,
        event(
            Some(program_a),
            None,
            "shop backend",
            "customer.create",
            Some(c1),
            day(2026, 2, 1, 8),
        ),
    );
    let e4 = insert_event(
        &app,
        event(
            Some(program_b),
            Some(other_id),
            "mo@example.com",
            "customer.update",
            Some(cb),
            day(2026, 1, 10, 9),
        ),
    );
    let e5 = insert_event(
        &app,
        event(
            None,
            None,
            "=evil@example.com",
            "auth.sign_in_failed",
            None,
            day(2026, 1, 12, 23),
        ),
    );
    let e6 = insert_event(
        &app,
        event(
            None,
            Some(admin_id),
            &admin_label,
            "member.disable",
            None,
            day(2026, 1, 20, 23),
        ),
    );

    // What each filter must return, computed from every row the log may show.
    let visible: Vec<EventRow> = audit_events::table
        .filter(
            audit_events::program_id
                .eq(program_a)
                .or(audit_events::program_id.is_null()),
        )
        .select((
            audit_events::id,
            audit_events::actor_member_id,
            audit_events::actor_label,
            audit_events::action,
            audit_events::customer_id,
            audit_events::created_at,
        ))
        .load(&mut app.conn())
        .unwrap();
    assert!(visible.iter().all(|row| row.0 != e4));
    let expect = |keep: &dyn Fn(&EventRow) -> bool| {
        visible
            .iter()
            .filter(|row| keep(row))
            .map(|row| row.0)
            .collect::<BTreeSet<i64>>()
    };
    let in_days = |at: &DateTime<Utc>, from: (i32, u32, u32), to: (i32, u32, u32)| {
        *at >= day(from.0, from.1, from.2, 0) && *at < day(to.0, to.1, to.2, 0) + Duration::days(1)
    };

    let cases: Vec<(String, BTreeSet<i64>)> = vec![
        (
            "actor=MO%40example".into(),
            expect(&|row| row.2.to_lowercase().contains("mo@example")),
        ),
        (
            format!("member={admin_id}"),
            expect(&|row| row.1 == Some(admin_id)),
        ),
        (
            "action=customer.update".into(),
            expect(&|row| row.3 == "customer.update"),
        ),
        (
            "action=customer.".into(),
            expect(&|row| row.3.starts_with("customer.")),
        ),
        ("customer=cust-one".into(), expect(&|row| row.4 == Some(c1))),
        (
            "from=2026-01-11&to=2026-01-20".into(),
            expect(&|row| in_days(&row.5, (2026, 1, 11), (2026, 1, 20))),
        ),
        (
            "action=customer.&from=2026-01-12".into(),
            expect(&|row| row.3.starts_with("customer.") && row.5 >= day(2026, 1, 12, 0)),
        ),
        (String::new(), expect(&|_| true)),
    ];
    // The expectations are what the seed says, not just whatever the rows happen to be.
    assert_eq!(cases[2].1, BTreeSet::from([e1]));
    assert_eq!(cases[3].1, BTreeSet::from([e1, e2, e3]));
    assert_eq!(cases[4].1, BTreeSet::from([e1, e3]));
    assert_eq!(cases[5].1, BTreeSet::from([e2, e5, e6]));
    assert_eq!(cases[6].1, BTreeSet::from([e2, e3]));
    for (query, expected) in &cases {
        let (status, body) = app.browser.get_html(&format!("/audit?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(&listed_event_ids(&body), expected, "filter {query:?}");

        // The CSV export of the same filter has exactly the same events.
        let response = app.get(&format!("/audit/export?{query}")).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap().get(0), Some("id"));
        let exported: BTreeSet<i64> = reader
            .records()
            .map(|record| record.unwrap()[0].parse().unwrap())
            .collect();
        assert_eq!(&exported, expected, "export {query:?}");
    }

    // Before/after as a per-field table; unchanged fields are not highlighted.
    let (_, body) = app
        .browser
        .get_html("/audit?customer=cust-one&action=customer.update")
        .await;
    assert!(body.contains("<td data-label=\"Before\" class=\"diff-before\">Ada</td>"));
    assert!(body.contains("<td data-label=\"After\" class=\"diff-after\">Ada L.</td>"));
    assert!(body.contains("<td data-label=\"Before\" >ada@example.com</td>"));
    assert!(body.contains("href=\"/customers/cust-one\""));

    // A formula typed as an email cannot run in a spreadsheet.
    let text = app
        .get("/audit/export?action=auth.sign_in_failed")
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("'=evil@example.com"));

    // Bad filter values are reported next to their field.
    let (status, body) = app.browser.get_html("/audit?from=yesterday&to=2026-01-01").await;
    assert_eq!(status, 422);
    assert!(body.contains("Enter a date as YYYY-MM-DD."));
    assert!(body.contains("value=\"yesterday\""));
    let (status, body) = app.browser.get_html("/audit?from=2026-02-02&to=2026-02-01").await;
    assert_eq!(status, 422);
    assert!(body.contains("The end date is before the start date."));
    assert_eq!(app.get("/audit/export?from=nope").await.status(), 422);
}

#[apply(integration_test!)]
async fn sign_ins_and_failed_sign_ins_are_in_the_audit_log() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    app.create_member("una@example.com", Role::Viewer, PASSWORD);
    let una = app.new_browser();
    assert_eq!(
        una.login("una@example.com", "not the password").await.status(),
        401
    );
    assert_eq!(una.login("una@example.com", PASSWORD).await.status(), 303);

    let (_, body) = app.browser.get_html("/audit?action=auth.sign_in_failed").await;
    assert_eq!(listed_event_ids(&body).len(), 1);
    assert!(body.contains("una@example.com"));
    assert!(!body.contains("not the password"), "passwords are never logged");
    let (_, body) = app.browser.get_html("/audit?action=auth.sign_in&actor=una").await;
    assert_eq!(listed_event_ids(&body).len(), 1);

    // Pages of 50 keep the filters in their links.
    for _ in 0..55 {
        insert_event(
            &app,
            EventSeed {
                program_id: None,
                member_id: None,
                label: "bulk",
                action: "auth.sign_in_failed",
                customer_id: None,
                at: Utc::now(),
                before: None,
                after: None,
            },
        );
    }
    let (_, body) = app.browser.get_html("/audit?action=auth.sign_in_failed").await;
    assert_eq!(listed_event_ids(&body).len(), 50);
    assert!(body.contains("Showing 1–50 of 56 events."));
    assert!(body.contains("href=\"/audit?action=auth.sign_in_failed&#38;page=2\""));
    let (_, page_two) = app
        .browser
        .get_html("/audit?action=auth.sign_in_failed&page=2")
        .await;
    assert_eq!(listed_event_ids(&page_two).len(), 6);
    assert!(listed_event_ids(&body).is_disjoint(&listed_event_ids(&page_two)));
}

/// The program's events and the program-less ones are read from their own indexes and
/// merged: every page shows exactly SQL's order of both (ties in time broken by id), other
/// programs' events never, the total is exact up to 1,000 and "more than" beyond, and the
/// export holds every event once.
#[apply(integration_test!)]
async fn a_long_audit_log_merges_both_scopes_in_order_and_counts_to_a_limit() {
    use diesel::sql_types::BigInt;
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let program = app.default_program().id;
    let other = insert_program(&app, "other");
    // Two events a second (pairs share a time), every third one program-less.
    diesel::sql_query(
        "INSERT INTO audit_events (program_id, actor_label, action, subject_type, created_at)
         SELECT CASE WHEN n % 3 = 0 THEN NULL ELSE $1 END, 'bulk',
                CASE WHEN n % 3 = 0 THEN 'auth.sign_in_failed' ELSE 'customer.update' END,
                'customer', now() - interval '1 hour' - (n / 2) * interval '1 second'
         FROM generate_series(1, 1200) AS n
         UNION ALL
         SELECT $2, 'elsewhere', 'customer.update', 'customer', now() - interval '1 hour' - n * interval '1 second'
         FROM generate_series(1, 300) AS n",
    )
    .bind::<BigInt, _>(program)
    .bind::<BigInt, _>(other)
    .execute(&mut app.conn())
    .unwrap();
    let expected: Vec<i64> = audit_events::table
        .filter(
            audit_events::program_id
                .eq(program)
                .or(audit_events::program_id.is_null()),
        )
        .order((audit_events::created_at.desc(), audit_events::id.desc()))
        .select(audit_events::id)
        .load(&mut app.conn())
        .unwrap();
    assert!(expected.len() > 1200, "the bulk events and the sign-in");
    let pages = (expected.len() as i64 + 49) / 50;

    let (_, first) = app.browser.get_html("/audit").await;
    assert_eq!(listed_event_order(&first), expected[..50]);
    assert!(
        first.contains("Showing 1–50 of more than 1,000 events."),
        "{first}"
    );
    assert!(first.contains("href=\"/audit?page=2\" rel=\"next\""));
    for page in [2, 13, pages - 1, pages] {
        let (_, body) = app.browser.get_html(&format!("/audit?page={page}")).await;
        let from = ((page - 1) * 50) as usize;
        let to = (from + 50).min(expected.len());
        assert_eq!(listed_event_order(&body), expected[from..to], "page {page}");
        assert_eq!(
            body.contains(&format!("href=\"/audit?page={}\" rel=\"next\"", page + 1)),
            page < pages,
            "Next link on page {page}"
        );
    }
    let (_, past) = app.browser.get_html(&format!("/audit?page={}", pages + 3)).await;
    assert!(past.contains("No events on this page."));

    // Few enough to count: an exact total and a last page.
    let (_, failed) = app.browser.get_html("/audit?action=auth.sign_in_failed").await;
    assert!(failed.contains("Showing 1–50 of 400 events."), "{failed}");
    assert!(failed.contains("href=\"/audit?action=auth.sign_in_failed&#38;page=8\""));

    let export = app.get("/audit/export").await.text().await.unwrap();
    assert_eq!(
        export.lines().count(),
        expected.len() + 1,
        "header and every event once"
    );
    assert!(!export.contains("elsewhere"));
}
