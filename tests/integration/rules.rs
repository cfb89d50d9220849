//! Reward rules and the program's reward settings: the pages, every validation message,
//! versions on edit, enable/disable, and who may do what.

use bigdecimal::BigDecimal;
use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{programs, reward_rules};
use referdesk::domain::rewards::rules;
use referdesk::domain::team::Role;
use std::str::FromStr;

use crate::fixtures::{count_events, insert_program};
use crate::helpers::TestApp;
use crate::integration_test;
use crate::reward_rows::insert_rule;

fn rule_count(app: &TestApp) -> i64 {
    reward_rules::table.count().get_result(&mut app.conn()).unwrap()
}

/// The form as the browser posts it for "10 USD to the referrer on the friend's first sale,
/// 14-day hold", with `changes` applied.
pub(crate) fn rule_form<'a>(changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("name", "Ten for a first sale"),
        ("trigger", "sale"),
        ("sale_scope", "first"),
        ("sale_count", ""),
        ("within_days", ""),
        ("min_sale_amount", ""),
        ("product_type", ""),
        ("earner", "referrer"),
        ("amount_kind", "fixed"),
        ("referrer_amount", "10"),
        ("friend_amount", ""),
        ("is_currency", "on"),
        ("currency", "USD"),
        ("unit_name", ""),
        ("max_reward", ""),
        ("limit_per_referrer", ""),
        ("limit_per_referrer_month", ""),
        ("budget", ""),
        ("hold_days", "14"),
        ("needs_approval", "on"),
        ("enabled", "on"),
    ];
    for (name, value) in changes {
        match form.iter_mut().find(|(field, _)| field == name) {
            Some(entry) => entry.1 = value,
            None => form.push((name, value)),
        }
    }
    form.retain(|(_, value)| *value != "<absent>");
    form
}

#[apply(integration_test!)]
async fn an_admin_creates_a_rule_and_each_bad_field_gets_its_message() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let (status, body) = app.browser.get_html("/rules/new").await;
    assert_eq!(status, 200);
    assert!(body.contains("Hold period (days)"));

    let refusals: &[(&[(&str, &str)], &str)] = &[
        (&[("name", "")], "Enter a name"),
        (&[("trigger", "payday")], "Choose what fires the rule"),
        (&[("sale_scope", "most")], "Choose which sales count"),
        (
            &[("sale_scope", "first_n")],
            "first sales earn a reward (1 to 1000)",
        ),
        (
            &[("sale_scope", "first_n"), ("sale_count", "1001")],
            "from 1 to 1000",
        ),
        (&[("sale_count", "3")], "the first N sales"),
        (&[("within_days", "0")], "from 1 to 3650"),
        (&[("min_sale_amount", "-5")], "Enter a plain number"),
        (&[("product_type", "a\u{7}b")], "on one line"),
        (&[("earner", "nobody")], "Choose who earns"),
        (&[("earner", "both")], "Enter an amount for the friend"),
        (&[("friend_amount", "5")], "The friend earns nothing"),
        (&[("referrer_amount", "")], "Enter an amount for the referrer"),
        (&[("referrer_amount", "10.555")], "Use at most 2 decimals"),
        (&[("referrer_amount", "2000000")], "Enter at most 1,000,000"),
        (
            &[("amount_kind", "percent"), ("referrer_amount", "150")],
            "Enter at most 100",
        ),
        (&[("amount_kind", "bonus")], "Choose a fixed amount or a percent"),
        (&[("max_reward", "50")], "applies to percent rules only"),
        (
            &[
                ("amount_kind", "percent"),
                ("is_currency", "<absent>"),
                ("unit_name", "points"),
            ],
            "is paid in the sale",
        ),
        (
            &[("trigger", "customer_created"), ("amount_kind", "percent")],
            "needs the sale trigger",
        ),
        (
            &[("trigger", "customer_approved"), ("within_days", "30")],
            "Only sale rules look at days since signup",
        ),
        (&[("currency", "ZZZ")], "Choose a known ISO 4217 currency code"),
        (
            &[("is_currency", "<absent>"), ("unit_name", "")],
            "Enter a unit name",
        ),
        (&[("limit_per_referrer", "0")], "from 1 to 1,000,000"),
        (&[("limit_per_referrer_month", "many")], "from 1 to 1,000,000"),
        (&[("budget", "0")], "Enter an amount above zero"),
        (&[("hold_days", "366")], "from 0 to 365"),
        (&[("hold_days", "")], "from 0 to 365"),
    ];
    for (changes, message) in refusals {
        let response = app.post_form("/rules", &rule_form(changes)).await;
        assert_eq!(response.status(), 422, "{changes:?} must be refused");
        let body = response.text().await.unwrap();
        assert!(body.contains(message), "{changes:?}: expected {message:?}");
    }
    assert_eq!(rule_count(&app), 0, "nothing created by a refused form");

    let response = app.post_form("/rules", &rule_form(&[])).await;
    assert_eq!(response.status(), 303);
    let program = app.default_program();
    let rule = &rules::list(&mut app.conn(), program.id).unwrap()[0];
    assert_eq!(rule.name, "Ten for a first sale");
    assert_eq!(rule.referrer_amount, Some(BigDecimal::from(10)));
    assert_eq!(rule.friend_amount, None);
    assert_eq!(
        (rule.hold_days, rule.needs_approval, rule.enabled, rule.version),
        (14, true, true, 1)
    );
    assert_eq!(count_events(&app, "reward_rule.create", rule.id), 1);
    let (_, body) = app.browser.get_html("/rules").await;
    assert!(body.contains("s first sale</td>"), "the trigger in words");
    assert!(body.contains("Referrer: 10 USD"));
    assert!(body.contains("14-day hold, manual approval"));
}

#[apply(integration_test!)]
async fn every_option_is_stored_and_an_edit_makes_a_new_version() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    app.browser.get_html("/rules/new").await;
    let form = rule_form(&[
        ("name", "Percent of the first three"),
        ("sale_scope", "first_n"),
        ("sale_count", "3"),
        ("within_days", "30"),
        ("min_sale_amount", "20.50"),
        ("product_type", "plan"),
        ("earner", "both"),
        ("amount_kind", "percent"),
        ("referrer_amount", "12.5"),
        ("friend_amount", "5"),
        ("currency", "eur"),
        ("max_reward", "40"),
        ("limit_per_referrer", "10"),
        ("limit_per_referrer_month", "2"),
        ("budget", "1000"),
        ("hold_days", "0"),
        ("needs_approval", "<absent>"),
    ]);
    assert_eq!(app.post_form("/rules", &form).await.status(), 303);
    let program = app.default_program();
    let rule = rules::list(&mut app.conn(), program.id).unwrap().remove(0);
    assert_eq!(rule.sale_count, Some(3));
    assert_eq!(rule.within_days, Some(30));
    assert_eq!(rule.min_sale_amount, Some(BigDecimal::from_str("20.5").unwrap()));
    assert_eq!(rule.product_type.as_deref(), Some("plan"));
    assert_eq!(rule.referrer_amount, Some(BigDecimal::from_str("12.5").unwrap()));
    assert_eq!(rule.friend_amount, Some(BigDecimal::from(5)));
    assert_eq!(rule.amount_units, "EUR");
    assert_eq!(rule.max_reward, Some(BigDecimal::from(40)));
    assert_eq!(
        (rule.limit_per_referrer, rule.limit_per_referrer_month),
        (Some(10), Some(2))
    );
    assert_eq!(rule.budget, Some(BigDecimal::from(1000)));
    assert!(!rule.needs_approval);

    // The edit form shows the stored values; saving them unchanged makes no new version.
    let (status, body) = app.browser.get_html(&format!("/rules/{}/edit", rule.id)).await;
    assert_eq!(status, 200);
    assert!(body.contains("value=\"12.5\"") && body.contains("value=\"20.5\""));
    let edit = format!("/rules/{}/edit", rule.id);
    assert_eq!(app.post_form(&edit, &form).await.status(), 303);
    assert_eq!(
        rules::find(&mut app.conn(), program.id, rule.id).unwrap().version,
        1
    );

    let response = app.post_form(&edit, &rule_form(&[("hold_days", "400")])).await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("from 0 to 365"));
    assert_eq!(
        rules::find(&mut app.conn(), program.id, rule.id).unwrap().version,
        1
    );

    let changed = rule_form(&[("name", "Ten flat"), ("hold_days", "7")]);
    let response = app.post_form(&edit, &changed).await;
    assert_eq!(response.status(), 303);
    let edited = rules::find(&mut app.conn(), program.id, rule.id).unwrap();
    assert_eq!(
        (edited.version, edited.hold_days, edited.name.as_str()),
        (2, 7, "Ten flat")
    );
    assert_eq!(edited.friend_amount, None, "the friend earns nothing any more");
    assert_eq!(count_events(&app, "reward_rule.update", rule.id), 1);

    assert_eq!(
        app.post_form(&format!("/rules/{}/disable", rule.id), &[])
            .await
            .status(),
        303
    );
    let disabled = rules::find(&mut app.conn(), program.id, rule.id).unwrap();
    assert!(!disabled.enabled);
    assert_eq!(
        disabled.version, 2,
        "switching a rule off changes what it pays nothing"
    );
    let (_, body) = app.browser.get_html("/rules").await;
    assert!(body.contains("disabled"));
    assert_eq!(
        app.post_form(&format!("/rules/{}/enable", rule.id), &[])
            .await
            .status(),
        303
    );
    assert!(rules::find(&mut app.conn(), program.id, rule.id).unwrap().enabled);
    assert_eq!(count_events(&app, "reward_rule.disable", rule.id), 1);
    assert_eq!(count_events(&app, "reward_rule.enable", rule.id), 1);
}

#[apply(integration_test!)]
async fn support_and_viewers_read_rules_and_only_admins_change_them() {
    let app = TestApp::spawn().await;
    let program = app.default_program();
    let rule = insert_rule(&app, program.id, "Five for a sale", "5");
    let other_program = insert_program(&app, "other");
    let foreign = insert_rule(&app, other_program, "Elsewhere", "1");
    for (email, role) in [
        ("support@example.com", Role::Support),
        ("viewer@example.com", Role::Viewer),
    ] {
        let (_, browser) = app.signed_in_browser(email, role).await;
        let (status, body) = browser.get_html("/rules").await;
        assert_eq!(status, 200, "{role} reads the rules");
        assert!(body.contains("Five for a sale"));
        assert!(!body.contains("Elsewhere"), "only the current program's rules");
        assert!(!body.contains("/rules/new"), "no create button for {role}");
        assert!(
            !body.contains("name=\"max_referrals_per_hour\""),
            "settings are read-only for {role}"
        );
        assert_eq!(browser.get("/rules/new").await.status(), 403);
        assert_eq!(
            browser.get(&format!("/rules/{}/edit", rule.id)).await.status(),
            403
        );
        for path in [
            "/rules".to_string(),
            format!("/rules/{}/edit", rule.id),
            format!("/rules/{}/disable", rule.id),
            "/rules/settings".to_string(),
        ] {
            let response = browser.post_form(&path, &rule_form(&[])).await;
            assert_eq!(response.status(), 403, "{role} may not post {path}");
        }
    }
    assert_eq!(rule_count(&app), 2);
    assert!(rules::find(&mut app.conn(), program.id, rule.id).unwrap().enabled);

    app.login_as(Role::Admin).await;
    let response = app.get(&format!("/rules/{}/edit", foreign.id)).await;
    assert_eq!(response.status(), 404, "another program's rule is not found");
    app.browser.get_html("/rules").await;
    let response = app
        .post_form(&format!("/rules/{}/disable", foreign.id), &[])
        .await;
    assert_eq!(response.status(), 404);
}

#[apply(integration_test!)]
async fn admins_set_the_reward_settings_with_messages_for_bad_values() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let (_, body) = app.browser.get_html("/rules").await;
    assert!(body.contains("name=\"max_referrals_per_hour\" inputmode=\"numeric\" required value=\"20\""));

    let response = app
        .post_form(
            "/rules/settings",
            &[
                ("max_referrals_per_hour", "0"),
                ("support_approval_limit", "12,5"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(body.contains("Enter a whole number of referrals from 1 to 100,000."));
    assert!(body.contains("Enter a plain number"));
    assert!(body.contains("value=\"12,5\""), "typed values are kept");

    let response = app
        .post_form(
            "/rules/settings",
            &[
                ("max_referrals_per_hour", "5"),
                ("support_approval_limit", "50.25"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let program = app.default_program();
    let (max, limit): (i32, Option<BigDecimal>) = programs::table
        .find(program.id)
        .select((
            programs::rewards_max_referrals_per_hour,
            programs::rewards_support_approval_limit,
        ))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(max, 5);
    assert_eq!(limit, Some(BigDecimal::from_str("50.25").unwrap()));
    assert_eq!(count_events(&app, "program.rewards_settings", program.id), 1);

    // Empty means no threshold.
    let response = app
        .post_form(
            "/rules/settings",
            &[("max_referrals_per_hour", "5"), ("support_approval_limit", "")],
        )
        .await;
    assert_eq!(response.status(), 303);
    let limit: Option<BigDecimal> = programs::table
        .find(program.id)
        .select(programs::rewards_support_approval_limit)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(limit, None);
}
