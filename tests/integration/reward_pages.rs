//! What staff see of transactions and rewards: the transactions page (filters, paging),
//! the customer page's transactions and rewards panels, and the dashboard's reward totals
//! and referral funnel.

use chrono::{Duration, Utc};
use macro_rules_attribute::apply;
use referdesk::domain::team::Role;
use serde_json::json;

use crate::fixtures::{insert_customer, insert_program, seed, Seed};
use crate::helpers::TestApp;
use crate::integration_test;
use crate::reward_rows::{
    insert_clicks, insert_reward, insert_rule, insert_transaction, set_reward_notes, Earned, Sale,
};

/// A referrer `ada` and her referred friend `bob` in the program; returns their ids.
fn referral(app: &TestApp, program_id: i64, days_ago: i64) -> (i64, i64) {
    let at = Utc::now() - Duration::days(days_ago);
    let ada = insert_customer(app, program_id, seed("ada", at - Duration::days(1)));
    let bob = insert_customer(
        app,
        program_id,
        Seed {
            referrer: Some(ada),
            ..seed("bob", at)
        },
    );
    (ada, bob)
}

fn rows_in(body: &str) -> usize {
    body.matches("<tr id=\"transaction-").count()
}

#[apply(integration_test!)]
async fn the_transactions_page_filters_by_status_dates_and_customer_and_pages() {
    let app = TestApp::spawn().await;
    let program = app.default_program();
    let (ada, bob) = referral(&app, program.id, 60);
    let now = Utc::now();
    for n in 0..30 {
        let status = if n % 10 == 0 { "deleted" } else { "active" };
        let key = format!("txn_{n:02}");
        insert_transaction(
            &app,
            program.id,
            Sale {
                key: &key,
                customer_id: bob,
                amount: "19.99",
                status,
                created_at: now - Duration::days(n),
            },
        );
    }
    insert_transaction(
        &app,
        program.id,
        Sale {
            key: "ada_own",
            customer_id: ada,
            amount: "5",
            status: "archived",
            created_at: now,
        },
    );
    let other = insert_program(&app, "other");
    let stranger = insert_customer(&app, other, seed("zed", now));
    insert_transaction(
        &app,
        other,
        Sale {
            key: "elsewhere",
            customer_id: stranger,
            amount: "1",
            status: "active",
            created_at: now,
        },
    );
    let (_, browser) = app.signed_in_browser("viewer@example.com", Role::Viewer).await;

    let (status, body) = browser.get_html("/transactions").await;
    assert_eq!(status, 200);
    assert_eq!(rows_in(&body), 25, "a page of 25");
    assert!(body.contains("Showing 1–25 of 31"));
    assert!(body.contains("19.99 USD"));
    assert!(!body.contains("elsewhere"), "only the current program");
    let (_, body) = browser.get_html("/transactions?page=2").await;
    assert_eq!(rows_in(&body), 6);

    let (_, body) = browser.get_html("/transactions?status=deleted").await;
    assert_eq!(rows_in(&body), 3);
    let (_, body) = browser.get_html("/transactions?status=archived").await;
    assert_eq!(rows_in(&body), 1);
    assert!(body.contains("ada_own"));
    let (_, body) = browser.get_html("/transactions?customer=ada").await;
    assert_eq!(rows_in(&body), 1);

    let today = now.format("%Y-%m-%d").to_string();
    let week_ago = (now - Duration::days(6)).format("%Y-%m-%d").to_string();
    let (_, body) = browser
        .get_html(&format!("/transactions?customer=bob&from={week_ago}&to={today}"))
        .await;
    assert_eq!(rows_in(&body), 7, "the last seven days, both ends included");

    let (status, body) = browser.get_html("/transactions?from=yesterday&status=gone").await;
    assert_eq!(status, 422);
    assert!(body.contains("Enter a date as YYYY-MM-DD."));
    assert!(body.contains("Choose active, archived or deleted."));
    let (status, body) = browser
        .get_html(&format!("/transactions?from={today}&to={week_ago}"))
        .await;
    assert_eq!(status, 422);
    assert!(body.contains("The end date is before the start date."));
    let (status, body) = browser.get_html("/transactions?customer=zed").await;
    assert_eq!(status, 422, "a customer of another program is unknown here");
    assert!(body.contains("No customer with this key in this program."));
}

#[apply(integration_test!)]
async fn transactions_and_customers_show_the_rewards_they_triggered() {
    let app = TestApp::spawn().await;
    let program = app.default_program();
    let (ada, bob) = referral(&app, program.id, 3);
    let rule = insert_rule(&app, program.id, "Ten for a first sale", "10");
    let now = Utc::now();
    let first = insert_transaction(
        &app,
        program.id,
        Sale {
            key: "order_1",
            customer_id: bob,
            amount: "120",
            status: "active",
            created_at: now - Duration::hours(2),
        },
    );
    let second = insert_transaction(
        &app,
        program.id,
        Sale {
            key: "order_2",
            customer_id: bob,
            amount: "30",
            status: "active",
            created_at: now - Duration::hours(1),
        },
    );
    set_reward_notes(
        &app,
        second,
        json!([{"rule_id": rule.id, "rule": "Ten for a first sale", "reason": "not the friend's first sale"}]),
    );
    let reward = |role, amount, status| Earned {
        rule: &rule,
        referrer_id: ada,
        friend_id: bob,
        role,
        transaction_id: Some(first),
        amount,
        units: "USD",
        is_currency: true,
        status,
        at: now,
    };
    insert_reward(&app, reward("referrer", "10", "pending"));
    insert_reward(&app, reward("friend", "2.5", "credited"));

    let (_, browser) = app.signed_in_browser("support@example.com", Role::Support).await;
    let (_, body) = browser.get_html("/transactions").await;
    assert!(body.contains("10.00 USD to <a href=\"/customers/ada\">ada</a> (referrer)"));
    assert!(body.contains("2.50 USD to <a href=\"/customers/bob\">bob</a> (friend)"));
    assert!(body.contains("Ten for a first sale: not the friend"));

    let (status, body) = browser.get_html("/customers/bob").await;
    assert_eq!(status, 200);
    let transactions = &body[body.find("id=\"transactions\"").unwrap()..];
    assert!(transactions.contains("order_1") && transactions.contains("order_2"));
    assert!(transactions.contains("120.00 USD"));
    assert!(transactions.contains("10.00 USD to <a href=\"/customers/ada\">ada</a> (referrer)"));
    let rewards = &body[body.find("id=\"rewards\"").unwrap()..];
    let as_friend = &rewards[rewards.find("Earned as friend").unwrap()..];
    assert!(as_friend.contains("2.50 USD") && as_friend.contains("credited"));
    assert!(
        as_friend.contains("<a href=\"/customers/ada\">ada</a>"),
        "the referrer is named"
    );
    assert!(rewards[..rewards.find("Earned as friend").unwrap()].contains("No rewards yet."));

    let (_, body) = browser.get_html("/customers/ada").await;
    let rewards = &body[body.find("id=\"rewards\"").unwrap()..];
    let as_referrer = &rewards[..rewards.find("Earned as friend").unwrap()];
    assert!(as_referrer.contains("10.00 USD") && as_referrer.contains("pending"));
    assert!(as_referrer.contains("Ten for a first sale") && as_referrer.contains("order_1"));
    assert!(body.contains("No transactions reported for this customer."));
}

#[apply(integration_test!)]
async fn the_dashboard_shows_reward_totals_and_the_funnel_over_a_range() {
    let app = TestApp::spawn().await;
    let program = app.default_program();
    let now = Utc::now();
    let (ada, bob) = referral(&app, program.id, 3);
    let carl = insert_customer(
        &app,
        program.id,
        Seed {
            referrer: Some(ada),
            ..seed("carl", now - Duration::days(20))
        },
    );
    // Dan was referred long ago: outside every preset range.
    insert_customer(
        &app,
        program.id,
        Seed {
            referrer: Some(ada),
            ..seed("dan", now - Duration::days(200))
        },
    );
    insert_clicks(&app, program.id, ada, 12, now - Duration::days(2));
    insert_clicks(&app, program.id, ada, 8, now - Duration::days(25));
    let sale = |key, customer_id, status| Sale {
        key,
        customer_id,
        amount: "50",
        status,
        created_at: now - Duration::days(1),
    };
    let bobs = insert_transaction(&app, program.id, sale("bob_1", bob, "active"));
    insert_transaction(&app, program.id, sale("carl_refunded", carl, "deleted"));
    let rule = insert_rule(&app, program.id, "Ten", "10");
    let points_rule = {
        use referdesk::domain::rewards::rules::{self, RuleFields, RuleInput};
        let fields = RuleFields {
            name: "Points on signup".into(),
            trigger: "customer_created".into(),
            referrer_amount: "100".into(),
            is_currency: None,
            unit_name: "points".into(),
            ..RuleFields::fresh()
        };
        rules::create(
            &mut app.conn(),
            &referdesk::domain::Actor::system(),
            program.id,
            RuleInput::parse(&fields).unwrap(),
        )
        .unwrap()
    };
    let earned = |rule, friend_id, transaction_id, amount, units, is_currency, status, days_ago| Earned {
        rule,
        referrer_id: ada,
        friend_id,
        role: "referrer",
        transaction_id,
        amount,
        units,
        is_currency,
        status,
        at: now - Duration::days(days_ago),
    };
    insert_reward(
        &app,
        earned(&rule, bob, Some(bobs), "10", "USD", true, "credited", 1),
    );
    insert_reward(&app, earned(&rule, carl, None, "10", "USD", true, "pending", 1));
    insert_reward(
        &app,
        earned(&points_rule, bob, None, "100", "points", false, "approved", 1),
    );
    insert_reward(
        &app,
        earned(&points_rule, carl, None, "100", "points", false, "credited", 40),
    );

    app.login_as(Role::Viewer).await;
    let (status, body) = app.browser.get_html("/").await;
    assert_eq!(status, 200);
    let totals = &body[body.find("id=\"reward-totals\"").unwrap()..];
    assert!(totals.contains(
        "<tr data-status=\"pending\" data-units=\"USD\"><td data-label=\"Status\">pending</td><td data-label=\"Rewards\" class=\"num\">1</td><td data-label=\"Amount\" class=\"num\">10.00 USD</td></tr>"
    ));
    assert!(totals.contains("data-status=\"approved\" data-units=\"points\""));
    assert!(totals.contains("<td data-label=\"Amount\" class=\"num\">100 points</td>"));
    assert!(totals.contains(
        "<tr data-status=\"credited\" data-units=\"points\"><td data-label=\"Status\">credited</td><td data-label=\"Rewards\" class=\"num\">1</td>"
    ));

    let funnel = |body: &str| -> Vec<i64> {
        let table = &body[body.find("id=\"funnel\"").unwrap()..];
        table
            .split("data-value=\"")
            .skip(1)
            .take(4)
            .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
            .collect()
    };
    // Last 30 days (the default): 20 clicks, bob and carl signed up, bob's sale counts
    // (carl's was refunded), one reward credited (the points one is 40 days old).
    assert_eq!(funnel(&body), vec![20, 2, 1, 1]);
    let (_, body) = app.browser.get_html("/?range=7").await;
    assert_eq!(funnel(&body), vec![12, 1, 1, 1]);
    let (_, body) = app.browser.get_html("/?range=90").await;
    assert_eq!(funnel(&body), vec![20, 2, 1, 2]);
    let from = (now - Duration::days(45)).format("%Y-%m-%d");
    let to = (now - Duration::days(10)).format("%Y-%m-%d");
    let (status, body) = app
        .browser
        .get_html(&format!("/?range=custom&from={from}&to={to}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(funnel(&body), vec![8, 1, 0, 1], "carl's only sale was refunded");
    assert!(body.contains(&format!("{from} to {to}")));

    let (status, body) = app.browser.get_html("/?range=custom&to=2026-01-01").await;
    assert_eq!(status, 422);
    assert!(body.contains("Enter the first day of the range."));
    let (status, body) = app.browser.get_html("/?range=365").await;
    assert_eq!(status, 422);
    assert!(body.contains("Choose 7, 30 or 90 days, or a custom range."));
    assert_eq!(funnel(&body), vec![20, 2, 1, 1], "the last 30 days instead");
}

/// Past `COUNT_LIMIT` matches the transactions page stops counting: it says "more than"
/// and pages on by whether a next page exists; the customer panel says the same.
#[apply(integration_test!)]
async fn the_transactions_page_caps_its_count() {
    use diesel::RunQueryDsl;
    use referdesk::domain::transactions::browse::COUNT_LIMIT;

    let app = TestApp::spawn().await;
    let program = app.default_program();
    let (_, bob) = referral(&app, program.id, 60);
    diesel::sql_query(format!(
        "INSERT INTO transactions (program_id, customer_id, key, amount, amount_units, action, \
         status, rewardable, reward_notes, request_hash, created_at, updated_at) \
         SELECT {program}, {bob}, 'bulk-' || n, 1, 'USD', 'sale', 'active', false, '[]', 'h', \
         now() - n * interval '1 second', now() FROM generate_series(1, {count}) AS n",
        program = program.id,
        count = COUNT_LIMIT + 30,
    ))
    .execute(&mut app.conn())
    .unwrap();
    let (_, browser) = app.signed_in_browser("viewer@example.com", Role::Viewer).await;

    let (status, body) = browser.get_html("/transactions").await;
    assert_eq!(status, 200);
    assert_eq!(rows_in(&body), 25);
    assert!(body.contains("Showing 1–25 of more than 1,000"), "{body}");
    assert!(body.contains("bulk-1<"), "newest first");
    // A page past the count still lists what is there, and ends the paging.
    let last = (COUNT_LIMIT + 30 + 24) / 25;
    let (_, body) = browser.get_html(&format!("/transactions?page={last}")).await;
    assert_eq!(rows_in(&body), ((COUNT_LIMIT + 30 - 1) % 25 + 1) as usize);
    assert!(
        body.contains(&format!("bulk-{}<", COUNT_LIMIT + 30)),
        "the oldest"
    );
    assert!(!body.contains("rel=\"next\""), "no page after the last");
    let (_, body) = browser.get_html("/transactions?page=2").await;
    assert!(body.contains("rel=\"next\""), "more pages after the second");

    let (_, body) = browser.get_html("/customers/bob").await;
    assert!(
        body.contains("Transactions <span class=\"muted small\">(more than 1,000)</span>"),
        "{body}"
    );
    assert!(body.contains("All transactions</a>"));
}

/// The customer page's "Earned as referrer" heading counts every reward below a full
/// panel, at a full one and past it (the panel shows the latest 20), and stops at the cap;
/// the other side's key is named on each row.
#[apply(integration_test!)]
async fn a_customers_reward_panels_count_below_at_and_past_a_full_panel() {
    use crate::reward_fixtures::{insert_many, insert_pair, insert_rule};
    use referdesk::domain::rewards::figures::EARNED_COUNT_CAP;

    let app = TestApp::spawn().await;
    let rule = insert_rule(&app, "Ten per friend");
    let (_, browser) = app.signed_in_browser("viewer@example.com", Role::Viewer).await;
    let heading = |body: &str| {
        let rewards = &body[body.find("id=\"rewards\"").unwrap()..];
        let start = rewards.find("Earned as referrer").unwrap();
        rewards[start..start + rewards[start..].find("</h3>").unwrap()].to_string()
    };
    let earlier = Utc::now() - Duration::days(30);
    for (prefix, count, said) in [
        ("few", 3, "(3)".to_string()),
        ("full", 20, "(20)".to_string()),
        ("past", 21, "(21, latest 20 shown".to_string()),
        (
            "capped",
            EARNED_COUNT_CAP as i32 + 5,
            "(more than 1,000, latest 20 shown".to_string(),
        ),
    ] {
        let pair = insert_pair(&app, prefix);
        insert_many(&app, rule, pair, count, "10", earlier, true, earlier);
        let (status, body) = browser.get_html(&format!("/customers/{prefix}-ref")).await;
        assert_eq!(status, 200);
        let heading = heading(&body);
        assert!(heading.contains(&said), "{prefix}: {heading}");
        let panel = &body[body.find("Earned as referrer").unwrap()..body.find("Earned as friend").unwrap()];
        assert_eq!(
            panel
                .matches(&format!("<a href=\"/customers/{prefix}-friend\">"))
                .count(),
            count.min(20) as usize,
            "{prefix}: each row names the friend"
        );
    }
}
