//! The balance ledger and the credit form.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use diesel::prelude::*;
use futures_util::future::join_all;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, balance_transactions, customers, programs};
use referdesk::domain::ledger::{self, Kind, NewEntry};
use referdesk::domain::team::Role;
use referdesk::domain::Actor;

use crate::helpers::{assert_refused, location, TestApp};
use crate::integration_test;

/// Inserts a customer of the default program directly; returns its row id.
pub fn insert_customer(app: &TestApp, key: &str, name: &str) -> i64 {
    let mut conn = app.conn();
    let program_id: i64 = programs::table
        .filter(programs::slug.eq("default"))
        .select(programs::id)
        .first(&mut conn)
        .expect("default program");
    diesel::insert_into(customers::table)
        .values((
            customers::program_id.eq(program_id),
            customers::external_id.eq(format!("ext-{key}")),
            customers::key.eq(key),
            customers::email.eq(format!("{key}@example.com")),
            customers::name.eq(name),
        ))
        .returning(customers::id)
        .get_result(&mut conn)
        .expect("customer inserted")
}

fn rows(app: &TestApp, customer_id: i64) -> Vec<(String, BigDecimal, String, bool)> {
    balance_transactions::table
        .filter(balance_transactions::customer_id.eq(customer_id))
        .order(balance_transactions::id)
        .select((
            balance_transactions::kind,
            balance_transactions::amount,
            balance_transactions::amount_units,
            balance_transactions::is_currency,
        ))
        .load(&mut app.conn())
        .expect("ledger rows")
}

fn dec(value: &str) -> BigDecimal {
    BigDecimal::from_str(value).unwrap()
}

/// The one-time token of the credit form in `html`.
fn form_token(html: &str) -> String {
    let marker = "name=\"form_token\" value=\"";
    let at = html.find(marker).expect("the form has a form_token") + marker.len();
    let end = html[at..].find('"').unwrap() + at;
    html[at..end].to_string()
}

async fn fresh_token(app: &TestApp, key: &str) -> String {
    let (status, html) = app.browser.get_html(&format!("/customers/{key}/credit")).await;
    assert_eq!(status, 200);
    form_token(&html)
}

async fn credit(app: &TestApp, key: &str, amount: &str, currency: &str) -> reqwest::Response {
    let token = fresh_token(app, key).await;
    app.post_form(
        &format!("/customers/{key}/credit"),
        &[
            ("kind", "credit"),
            ("amount", amount),
            ("is_currency", "1"),
            ("currency", currency),
            ("note", ""),
            ("form_token", &token),
        ],
    )
    .await
}

#[apply(integration_test!)]
async fn support_credits_over_http_and_the_page_shows_the_balance() {
    let app = TestApp::spawn().await;
    let member_id = app.login_as(Role::Support).await;
    let customer_id = insert_customer(&app, "ada", "Ada");

    let (status, html) = app.browser.get_html("/customers/ada/credit").await;
    assert_eq!(status, 200);
    assert!(html.contains("No credits yet."));
    assert!(
        html.contains("<option value=\"EUR\""),
        "the currency picker lists ISO codes"
    );
    assert!(
        !html.contains("value=\"debit\""),
        "support is not offered a debit"
    );
    let token = form_token(&html);

    let response = app
        .post_form(
            "/customers/ada/credit",
            &[
                ("kind", "credit"),
                ("amount", "10.50"),
                ("is_currency", "1"),
                ("currency", "EUR"),
                ("note", "Thanks for <b>referring</b> Bob"),
                ("form_token", &token),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/customers/ada#balance");

    let booked: (
        String,
        BigDecimal,
        String,
        bool,
        Option<String>,
        Option<i64>,
        Option<String>,
    ) = balance_transactions::table
        .filter(balance_transactions::customer_id.eq(customer_id))
        .select((
            balance_transactions::kind,
            balance_transactions::amount,
            balance_transactions::amount_units,
            balance_transactions::is_currency,
            balance_transactions::note,
            balance_transactions::actor_member_id,
            balance_transactions::idempotency_key,
        ))
        .first(&mut app.conn())
        .expect("one booking");
    assert_eq!(booked.0, "credit");
    assert_eq!(booked.1, dec("10.5"));
    assert_eq!(booked.2, "EUR");
    assert!(booked.3);
    assert_eq!(booked.4.as_deref(), Some("Thanks for <b>referring</b> Bob"));
    assert_eq!(booked.5, Some(member_id));
    assert_eq!(booked.6, Some(format!("form:{token}")));

    let audited: Vec<(String, Option<i64>)> = audit_events::table
        .filter(audit_events::action.like("ledger.%"))
        .select((audit_events::action, audit_events::customer_id))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(audited, vec![("ledger.credit".to_string(), Some(customer_id))]);

    // The customer's page shows the flash, the balance and the ledger line.
    let (status, html) = app.browser.get_html("/customers/ada").await;
    assert_eq!(status, 200);
    assert!(html.contains("Credited 10.50 EUR for Ada."), "success flash");
    assert!(html.contains("id=\"balance\""), "the balance panel");
    assert!(html.contains("10.50"));
    let (status, html) = app.browser.get_html("/customers/ada/credit").await;
    assert_eq!(status, 200);
    assert!(html.contains("10.50"));
    assert!(
        html.contains("Thanks for &#60;b&#62;referring&#60;/b&#62; Bob")
            || html.contains("Thanks for &lt;b&gt;referring&lt;/b&gt; Bob"),
        "the note is shown, escaped"
    );
    assert!(
        html.contains("<td data-label=\"By\">support-"),
        "who booked it is shown"
    );
    assert_ne!(form_token(&html), token, "every form gets a new token");
}

#[apply(integration_test!)]
async fn admin_debits_and_a_debit_never_goes_below_zero() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let customer_id = insert_customer(&app, "bob", "Bob");
    assert_eq!(credit(&app, "bob", "10", "USD").await.status(), 303);

    let (_, html) = app.browser.get_html("/customers/bob/credit").await;
    assert!(html.contains("value=\"debit\""), "admins are offered a debit");
    let token = form_token(&html);
    let debit = |amount: &'static str, token: String| {
        let app = &app;
        async move {
            app.post_form(
                "/customers/bob/credit",
                &[
                    ("kind", "debit"),
                    ("amount", amount),
                    ("is_currency", "1"),
                    ("currency", "USD"),
                    ("note", "refund"),
                    ("form_token", &token),
                ],
            )
            .await
        }
    };
    let response = debit("4", token).await;
    assert_eq!(response.status(), 303);

    let token = fresh_token(&app, "bob").await;
    let response = debit("6.01", token).await;
    let html = assert_refused(
        response,
        &["A debit may not take the balance below zero: the USD balance is only 6.00."],
    )
    .await;
    assert!(html.contains("value=\"6.01\""), "the typed amount is kept");

    // A debit in a unit the customer never had is refused too.
    let token = fresh_token(&app, "bob").await;
    let response = app
        .post_form(
            "/customers/bob/credit",
            &[
                ("kind", "debit"),
                ("amount", "1"),
                ("is_currency", "1"),
                ("currency", "EUR"),
                ("form_token", &token),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);

    // Exactly down to zero is fine.
    let token = fresh_token(&app, "bob").await;
    assert_eq!(debit("6", token).await.status(), 303);

    let kinds: Vec<(String, BigDecimal)> = rows(&app, customer_id)
        .into_iter()
        .map(|(kind, amount, ..)| (kind, amount))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("credit".to_string(), dec("10")),
            ("debit".to_string(), dec("4")),
            ("debit".to_string(), dec("6"))
        ]
    );
    let balances = ledger::balances(&mut app.conn(), customer_id).unwrap();
    assert_eq!(balances.len(), 1);
    assert_eq!(balances[0].amount, dec("0"));
    let debits: i64 = audit_events::table
        .filter(audit_events::action.eq("ledger.debit"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(debits, 2);

    // Back at zero, the customer's page still lists every entry of the ledger.
    let (_, page) = app.browser.get_html("/customers/bob").await;
    let panel = &page[page.find("id=\"balance\"").expect("the balance panel")..];
    assert_eq!(panel.matches("badge-red\">debit<").count(), 2, "{panel}");
    assert_eq!(panel.matches("badge-green\">credit<").count(), 1, "{panel}");
    // A customer without entries or referrals: the empty states.
    insert_customer(&app, "newbie", "Newbie");
    let (_, page) = app.browser.get_html("/customers/newbie").await;
    assert!(page.contains("No credits yet."), "{page}");
    assert!(page.contains("No transactions."), "{page}");
}

#[apply(integration_test!)]
async fn bad_amounts_are_refused_and_nothing_is_booked() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let customer_id = insert_customer(&app, "cy", "Cy");
    let cases = [
        ("0", "Enter an amount above zero."),
        ("-1", "Enter an amount above zero."),
        ("1.001", "Currency amounts have at most 2 decimals."),
        ("1e9", "Enter a plain number such as 10 or 10.50."),
        ("abc", "Enter a plain number such as 10 or 10.50."),
        ("", "Enter an amount."),
        ("1000000.01", "One booking may move at most 1,000,000."),
        (
            "99999999999999999999999",
            "One booking may move at most 1,000,000.",
        ),
    ];
    for (amount, message) in cases {
        let response = credit(&app, "cy", amount, "USD").await;
        assert_eq!(response.status(), 422, "amount {amount:?}");
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "amount {amount:?} should say {message:?}");
        assert!(
            html.contains(&format!("value=\"{amount}\"")),
            "amount {amount:?} is kept"
        );
        assert!(html.contains("has-error"));
    }
    assert!(rows(&app, customer_id).is_empty(), "nothing was booked");
    // The ceiling itself is allowed.
    assert_eq!(credit(&app, "cy", "1000000", "USD").await.status(), 303);
    assert_eq!(rows(&app, customer_id).len(), 1);
}

#[apply(integration_test!)]
async fn bad_units_are_refused_per_field() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let customer_id = insert_customer(&app, "dee", "Dee");
    let response = credit(&app, "dee", "5", "XYZ").await;
    assert_refused(response, &["Choose a known ISO 4217 currency code"]).await;

    for (unit, message) in [
        ("", "Enter a unit name, such as points."),
        (
            "<script>",
            "Use 1 to 32 letters, digits, spaces, dashes or underscores.",
        ),
        (&"p".repeat(33), "Use 1 to 32 letters"),
    ] {
        let token = fresh_token(&app, "dee").await;
        let response = app
            .post_form(
                "/customers/dee/credit",
                &[
                    ("amount", "5"),
                    ("unit_name", unit),
                    ("currency", "USD"),
                    ("form_token", &token),
                ],
            )
            .await;
        assert_eq!(response.status(), 422, "unit {unit:?}");
        assert!(response.text().await.unwrap().contains(message), "unit {unit:?}");
    }

    let token = fresh_token(&app, "dee").await;
    let response = app
        .post_form(
            "/customers/dee/credit",
            &[
                ("amount", "5"),
                ("currency", "USD"),
                ("note", &"n".repeat(1001)),
                ("form_token", &token),
                ("is_currency", "1"),
            ],
        )
        .await;
    assert_refused(response, &["Keep the note to 1000 characters."]).await;

    // A form without its token books nothing and offers a fresh one.
    let response = app
        .post_form(
            "/customers/dee/credit",
            &[("amount", "5"), ("currency", "USD"), ("is_currency", "1")],
        )
        .await;
    let html = assert_refused(response, &["This form is incomplete or expired."]).await;
    assert!(!form_token(&html).is_empty());
    assert!(rows(&app, customer_id).is_empty());
}

#[apply(integration_test!)]
async fn units_that_are_not_a_currency_keep_four_decimals() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let customer_id = insert_customer(&app, "eve", "Eve");
    let token = fresh_token(&app, "eve").await;
    let response = app
        .post_form(
            "/customers/eve/credit",
            &[
                ("amount", "2.5005"),
                ("unit_name", "loyalty points"),
                ("currency", "USD"),
                ("form_token", &token),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let token = fresh_token(&app, "eve").await;
    let response = app
        .post_form(
            "/customers/eve/credit",
            &[
                ("amount", "1.00001"),
                ("unit_name", "loyalty points"),
                ("form_token", &token),
            ],
        )
        .await;
    assert_refused(response, &["Use at most 4 decimals."]).await;
    assert_eq!(
        rows(&app, customer_id),
        vec![(
            "credit".to_string(),
            dec("2.5005"),
            "loyalty points".to_string(),
            false
        )]
    );
    let (_, html) = app.browser.get_html("/customers/eve/credit").await;
    assert!(html.contains("2.5005"));
    assert!(html.contains("loyalty points"));
}

#[apply(integration_test!)]
async fn replayed_form_token_books_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let customer_id = insert_customer(&app, "fay", "Fay");
    let token = fresh_token(&app, "fay").await;
    let fields = [
        ("kind", "credit"),
        ("amount", "7"),
        ("is_currency", "1"),
        ("currency", "USD"),
        ("form_token", token.as_str()),
    ];
    let first = app.post_form("/customers/fay/credit", &fields).await;
    assert_eq!(first.status(), 303);
    let again = app.post_form("/customers/fay/credit", &fields).await;
    assert_eq!(again.status(), 303);
    let (_, html) = app.browser.get_html("/customers/fay/credit").await;
    assert!(html.contains("This form was already submitted: the booking was made once, not twice."));

    // A double-click: the same form sent five times at once.
    let token = fresh_token(&app, "fay").await;
    let fields = [
        ("kind", "credit"),
        ("amount", "3"),
        ("is_currency", "1"),
        ("currency", "USD"),
        ("form_token", token.as_str()),
    ];
    let responses = join_all((0..5).map(|_| app.post_form("/customers/fay/credit", &fields))).await;
    assert!(responses.iter().all(|response| response.status() == 303));

    let booked = rows(&app, customer_id);
    assert_eq!(booked.len(), 2, "each form booked once: {booked:?}");
    assert_eq!(
        ledger::balance_of(&mut app.conn(), customer_id, "USD", true).unwrap(),
        dec("10")
    );
}

#[apply(integration_test!)]
async fn twenty_concurrent_credits_sum_exactly() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let customer_id = insert_customer(&app, "gus", "Gus");
    // A second support member crediting at the same time.
    let other = app.new_browser();
    let email = "second-support@example.com";
    app.create_member(email, Role::Support, crate::helpers::PASSWORD);
    assert_eq!(other.login(email, crate::helpers::PASSWORD).await.status(), 303);

    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(fresh_token(&app, "gus").await);
    }
    let requests = tokens.iter().enumerate().map(|(index, token)| {
        let browser = if index % 2 == 0 { &app.browser } else { &other };
        async move {
            browser
                .post_form(
                    "/customers/gus/credit",
                    &[
                        ("kind", "credit"),
                        ("amount", "1.05"),
                        ("is_currency", "1"),
                        ("currency", "USD"),
                        ("form_token", token.as_str()),
                    ],
                )
                .await
        }
    });
    let responses = join_all(requests).await;
    for response in &responses {
        assert_eq!(response.status(), 303);
    }
    assert_eq!(rows(&app, customer_id).len(), 20);
    assert_eq!(
        ledger::balance_of(&mut app.conn(), customer_id, "USD", true).unwrap(),
        dec("21.00")
    );
}

#[apply(integration_test!)]
async fn concurrent_debits_never_overdraw() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let customer_id = insert_customer(&app, "max", "Max");
    assert_eq!(credit(&app, "max", "10", "USD").await.status(), 303);
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(fresh_token(&app, "max").await);
    }
    let app = &app;
    let responses = join_all(tokens.iter().map(|token| async move {
        app.post_form(
            "/customers/max/credit",
            &[
                ("kind", "debit"),
                ("amount", "3"),
                ("is_currency", "1"),
                ("currency", "USD"),
                ("form_token", token.as_str()),
            ],
        )
        .await
        .status()
        .as_u16()
    }))
    .await;
    let booked = responses.iter().filter(|status| **status == 303).count();
    let refused = responses.iter().filter(|status| **status == 422).count();
    assert_eq!((booked, refused), (3, 5), "{responses:?}");
    assert_eq!(
        ledger::balance_of(&mut app.conn(), customer_id, "USD", true).unwrap(),
        dec("1")
    );
}

#[apply(integration_test!)]
async fn viewer_is_refused() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let customer_id = insert_customer(&app, "hal", "Hal");
    let response = app.get("/customers/hal/credit").await;
    assert_eq!(response.status(), 403);
    let response = app
        .post_form(
            "/customers/hal/credit",
            &[
                ("amount", "5"),
                ("currency", "USD"),
                ("is_currency", "1"),
                ("form_token", &uuid::Uuid::new_v4().to_string()),
            ],
        )
        .await;
    assert_eq!(response.status(), 403);
    assert!(rows(&app, customer_id).is_empty());
}

#[apply(integration_test!)]
async fn support_is_refused_a_debit() {
    let app = TestApp::spawn().await;
    let customer_id = insert_customer(&app, "ivy", "Ivy");
    app.login_as(Role::Support).await;
    assert_eq!(credit(&app, "ivy", "10", "USD").await.status(), 303);
    let token = fresh_token(&app, "ivy").await;
    let response = app
        .post_form(
            "/customers/ivy/credit",
            &[
                ("kind", "debit"),
                ("amount", "5"),
                ("currency", "USD"),
                ("is_currency", "1"),
                ("form_token", &token),
            ],
        )
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(rows(&app, customer_id).len(), 1, "only the credit");
}

#[apply(integration_test!)]
async fn deleted_customer_gets_no_booking() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let customer_id = insert_customer(&app, "jo", "Jo");
    let token = fresh_token(&app, "jo").await;
    diesel::update(customers::table.find(customer_id))
        .set((
            customers::status.eq("deleted"),
            customers::deleted_at.eq(diesel::dsl::now),
        ))
        .execute(&mut app.conn())
        .unwrap();
    let (_, html) = app.browser.get_html("/customers/jo/credit").await;
    assert!(html.contains("This customer is deleted."));
    let response = app
        .post_form(
            "/customers/jo/credit",
            &[
                ("amount", "5"),
                ("currency", "USD"),
                ("is_currency", "1"),
                ("form_token", &token),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    assert!(rows(&app, customer_id).is_empty());
}

#[apply(integration_test!)]
async fn unknown_customer_is_a_404() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    assert_eq!(app.get("/customers/nobody/credit").await.status(), 404);
    let response = app
        .post_form(
            "/customers/nobody/credit",
            &[
                ("amount", "5"),
                ("currency", "USD"),
                ("is_currency", "1"),
                ("form_token", &uuid::Uuid::new_v4().to_string()),
            ],
        )
        .await;
    assert_eq!(response.status(), 404);
}

/// What the customer page, the dashboard and the API will call.
#[apply(integration_test!)]
async fn domain_functions_for_the_customer_page_and_dashboard() {
    let app = TestApp::spawn().await;
    let kim = insert_customer(&app, "kim", "Kim");
    let lee = insert_customer(&app, "lee", "Lee");
    let mut conn = app.conn();
    let program_id: i64 = customers::table
        .find(kim)
        .select(customers::program_id)
        .first(&mut conn)
        .unwrap();
    let actor = Actor::system();
    let book = |conn: &mut PgConnection,
                customer: i64,
                kind: &str,
                amount: &str,
                units: &str,
                currency: bool,
                key: Option<&str>| {
        let entry = NewEntry::parse(kind, amount, units, currency, "", key).unwrap();
        ledger::book(conn, program_id, customer, &actor, entry).unwrap()
    };
    book(&mut conn, kim, "credit", "5", "USD", true, None);
    book(&mut conn, kim, "credit", "100", "points", false, None);
    book(&mut conn, kim, "debit", "1.25", "USD", true, None);
    let (first, new) = book(&mut conn, lee, "credit", "2", "USD", true, Some("api-1"));
    assert!(new);
    let (again, new) = book(&mut conn, lee, "credit", "2", "USD", true, Some("api-1"));
    assert!(!new, "a replayed key books nothing");
    assert_eq!(first.id, again.id);
    // The same key for another customer is an error, not a silent replay.
    let entry = NewEntry::parse("credit", "2", "USD", true, "", Some("api-1")).unwrap();
    assert!(ledger::book(&mut conn, program_id, kim, &actor, entry).is_err());
    // An entry built by hand is checked as strictly as a parsed one.
    let entry = NewEntry {
        kind: Kind::Credit,
        amount: dec("0.001"),
        units: "USD".into(),
        is_currency: true,
        note: None,
        idempotency_key: None,
    };
    assert!(ledger::book(&mut conn, program_id, kim, &actor, entry).is_err());

    let balances = ledger::balances(&mut conn, kim).unwrap();
    let shown: Vec<(String, String, bool)> = balances
        .iter()
        .map(|balance| {
            (
                balance.amount_display(),
                balance.amount_units.clone(),
                balance.is_currency,
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("3.75".to_string(), "USD".to_string(), true),
            ("100".to_string(), "points".to_string(), false)
        ]
    );

    let (page_one, total) = ledger::transactions(&mut conn, kim, 1, 2).unwrap();
    assert_eq!(total, 3);
    assert_eq!(page_one.len(), 2);
    assert_eq!(page_one[0].kind.as_str(), "debit", "newest first");
    assert_eq!(page_one[0].actor, "system");
    let (page_two, _) = ledger::transactions(&mut conn, kim, 2, 2).unwrap();
    assert_eq!(page_two.len(), 1);
    assert_eq!(page_two[0].amount_display(), "5.00");

    let issued = ledger::credits_issued(&mut conn, program_id).unwrap();
    let issued: Vec<(String, String)> = issued
        .iter()
        .map(|total| (total.amount_display(), total.amount_units.clone()))
        .collect();
    assert_eq!(
        issued,
        vec![
            ("7.00".to_string(), "USD".to_string()),
            ("100".to_string(), "points".to_string())
        ]
    );
}

/// The customer page carries the balance panel (with its "Credit" link for support) and the
/// invites panel; before, both were left out of the page and only the credit page had them.
#[apply(integration_test!)]
async fn customer_page_shows_balance_ledger_and_invites() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    insert_customer(&app, "ada", "Ada");

    let (status, html) = app.browser.get_html("/customers/ada").await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"balance\""), "balance panel");
    assert!(html.contains("No credits yet."));
    assert!(
        html.contains("href=\"/customers/ada/credit\""),
        "support gets the credit link"
    );
    assert!(html.contains("id=\"invites\""), "invites panel");
    assert!(
        html.contains("No invites sent in this customer&#39;s name yet.")
            || html.contains("No invites sent in this customer's name yet.")
    );

    assert_eq!(credit(&app, "ada", "7.25", "USD").await.status(), 303);
    let response = app
        .post_form(
            "/customers/ada/invite",
            &[("email", "friend@example.com"), ("name", "Friend")],
        )
        .await;
    assert_eq!(response.status(), 303);

    let (status, html) = app.browser.get_html("/customers/ada").await;
    assert_eq!(status, 200);
    let balance = &html[html.find("id=\"balance\"").unwrap()..];
    assert!(
        balance.contains("7.25"),
        "the balance is shown on the customer page"
    );
    assert!(balance.contains("USD"));
    let invites = &html[html.find("id=\"invites\"").unwrap()..];
    assert!(
        invites.contains("friend@example.com"),
        "the invite is listed on the customer page"
    );

    let viewer = app.new_browser();
    app.create_member(
        "viewer-ledger@example.com",
        Role::Viewer,
        crate::helpers::PASSWORD,
    );
    assert_eq!(
        viewer
            .login("viewer-ledger@example.com", crate::helpers::PASSWORD)
            .await
            .status(),
        303
    );
    let (status, html) = viewer.get_html("/customers/ada").await;
    assert_eq!(status, 200);
    assert!(html.contains("7.25"), "viewers see the balance");
    assert!(!html.contains("/customers/ada/credit"), "but get no credit link");
    assert!(!html.contains("/customers/ada/invite"), "nor an invite link");
}

/// Every kept balance (balance, credits and entries per customer and unit) against sums
/// over the ledger itself; returns how many kept rows there are.
fn assert_kept_balances_match_the_ledger(conn: &mut PgConnection) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count = |conn: &mut PgConnection, sql: &str| -> i64 {
        diesel::sql_query(sql).get_result::<Count>(conn).expect(sql).n
    };
    let differing = count(
        conn,
        "SELECT count(*) AS n FROM customer_balances kept
         FULL JOIN (SELECT customer_id, amount_units, is_currency,
                           sum(CASE WHEN kind = 'credit' THEN amount ELSE -amount END) AS balance,
                           coalesce(sum(amount) FILTER (WHERE kind = 'credit'), 0) AS credited,
                           count(*) AS entries
                    FROM balance_transactions GROUP BY 1, 2, 3) summed
         USING (customer_id, amount_units, is_currency)
         WHERE kept.balance IS DISTINCT FROM summed.balance
            OR kept.credited IS DISTINCT FROM summed.credited
            OR kept.entries IS DISTINCT FROM summed.entries",
    );
    assert_eq!(differing, 0, "kept balances differ from the ledger's sums");
    count(conn, "SELECT count(*) AS n FROM customer_balances")
}

/// Balances are kept per customer and unit with every booking (the pages read them instead
/// of summing the ledger): they equal the ledger's sums after credits, debits, concurrent
/// bookings and hand edits of the ledger, and a debit beyond the kept balance is still
/// refused.
#[apply(integration_test!)]
async fn kept_balances_equal_the_ledgers_sums() {
    let app = TestApp::spawn().await;
    let ann = insert_customer(&app, "ann", "Ann");
    let ben = insert_customer(&app, "ben", "Ben");
    let mut conn = app.conn();
    let program_id: i64 = customers::table
        .find(ann)
        .select(customers::program_id)
        .first(&mut conn)
        .unwrap();
    let book =
        |conn: &mut PgConnection, customer: i64, kind: &str, amount: &str, units: &str, currency: bool| {
            let entry = NewEntry::parse(kind, amount, units, currency, "", None).unwrap();
            ledger::book(conn, program_id, customer, &Actor::system(), entry)
        };
    book(&mut conn, ann, "credit", "10.50", "USD", true).unwrap();
    book(&mut conn, ann, "credit", "7", "points", false).unwrap();
    book(&mut conn, ann, "debit", "0.50", "USD", true).unwrap();
    book(&mut conn, ben, "credit", "3", "EUR", true).unwrap();
    assert_eq!(assert_kept_balances_match_the_ledger(&mut conn), 3);
    assert_eq!(
        ledger::balance_of(&mut conn, ann, "USD", true).unwrap(),
        dec("10")
    );
    assert_eq!(ledger::balance_of(&mut conn, ann, "EUR", true).unwrap(), dec("0"));

    // A debit beyond the balance is refused and changes nothing; the whole balance may go.
    let refused = book(&mut conn, ann, "debit", "10.01", "USD", true);
    assert!(refused.is_err(), "a debit below zero is refused");
    assert_eq!(rows(&app, ann).len(), 3);
    book(&mut conn, ann, "debit", "10", "USD", true).unwrap();
    assert_eq!(ledger::balance_of(&mut conn, ann, "USD", true).unwrap(), dec("0"));
    assert!(book(&mut conn, ann, "debit", "0.01", "USD", true).is_err());

    // Concurrent bookings from several connections: credits of 2 and more debits of 3 than
    // they cover; the kept balance never lets the debits overdraw, and stays exact.
    book(&mut conn, ben, "credit", "12", "USD", true).unwrap();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let pool = app.pool.clone();
            std::thread::spawn(move || {
                let mut conn = pool.get().expect("connection");
                let (kind, amount) = if i % 2 == 0 {
                    ("credit", "2")
                } else {
                    ("debit", "3")
                };
                (0..5)
                    .filter(|_| {
                        let entry = NewEntry::parse(kind, amount, "USD", true, "", None).unwrap();
                        ledger::book(&mut conn, program_id, ben, &Actor::system(), entry).is_ok()
                    })
                    .count()
            })
        })
        .collect();
    let booked: Vec<usize> = workers.into_iter().map(|worker| worker.join().unwrap()).collect();
    let credits: usize = booked.iter().step_by(2).sum();
    let debits: usize = booked.iter().skip(1).step_by(2).sum();
    assert_eq!(credits, 20, "every credit is booked");
    let balance = ledger::balance_of(&mut conn, ben, "USD", true).unwrap();
    assert_eq!(
        balance,
        BigDecimal::from(12 + 2 * credits as i64 - 3 * debits as i64)
    );
    let zero = BigDecimal::from(0);
    assert!(balance >= zero, "{balance}");
    assert_kept_balances_match_the_ledger(&mut conn);
    let (_, entries) = ledger::transactions(&mut conn, ben, 1, 10).unwrap();
    assert_eq!(entries as usize, 2 + credits + debits);

    // Rows changed or removed by hand (the application only appends) are kept too; a unit
    // whose entries are all gone has no balance left.
    diesel::sql_query("UPDATE balance_transactions SET amount = amount + 1 WHERE kind = 'credit'")
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query("DELETE FROM balance_transactions WHERE amount_units = 'points'")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(assert_kept_balances_match_the_ledger(&mut conn), 3);
    let units: Vec<String> = ledger::balances(&mut conn, ann)
        .unwrap()
        .into_iter()
        .map(|balance| balance.amount_units)
        .collect();
    assert_eq!(units, vec!["USD"]);

    // A ledger truncated by hand leaves no balances behind (CASCADE: rewards name their
    // credits).
    diesel::sql_query("TRUNCATE balance_transactions CASCADE")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(assert_kept_balances_match_the_ledger(&mut conn), 0);
}
