//! The life of a reward after it exists: review (approve, deny, in bulk), credit into the
//! ledger, the hold release, reversals owed, the `/rewards` queue page and roles.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use chrono::{Duration, Utc};
use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, balance_transactions, programs, rewards};
use referdesk::domain::ledger;
use referdesk::domain::rewards::credit::release_due;
use referdesk::domain::rewards::RewardStatus;
use referdesk::domain::team::Role;

use crate::helpers::TestApp;
use crate::integration_test;
use crate::reward_fixtures::{insert_many, insert_pair, insert_reward, insert_rule, owe, pending, status_of};

fn dec(value: &str) -> BigDecimal {
    BigDecimal::from_str(value).unwrap()
}

fn usd_balance(app: &TestApp, customer_id: i64) -> BigDecimal {
    ledger::balance_of(&mut app.conn(), customer_id, "USD", true).unwrap()
}

fn audit_actions(app: &TestApp, reward_id: i64) -> Vec<String> {
    audit_events::table
        .filter(audit_events::subject_type.eq("reward"))
        .filter(audit_events::subject_id.eq(reward_id.to_string()))
        .order(audit_events::id)
        .select(audit_events::action)
        .load(&mut app.conn())
        .unwrap()
}

#[apply(integration_test!)]
async fn support_approves_a_due_reward_and_it_is_credited_once_with_its_audit_event() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let rule = insert_rule(&app, "10 USD per friend");
    let pair = insert_pair(&app, "ada");
    let id = insert_reward(&app, rule, pair, pending("10"));

    let (status, html) = app.browser.get_html("/rewards").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("data-id=\"{id}\"")),
        "the queue lists the reward"
    );
    assert!(html.contains("ready for review"));
    assert!(html.contains("10.00 USD"));

    let response = app
        .post_form(
            &format!("/rewards/{id}/approve"),
            &[("next", "/rewards?status=pending")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(crate::helpers::location(&response), "/rewards?status=pending");
    let (status, entry) = status_of(&app, id);
    assert_eq!(status, RewardStatus::Credited);
    let key: Option<String> = balance_transactions::table
        .find(entry.expect("credited rewards name their ledger entry"))
        .select(balance_transactions::idempotency_key)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(key, Some(format!("reward:{id}")));
    assert_eq!(usd_balance(&app, pair.0), dec("10"));
    assert_eq!(audit_actions(&app, id), ["reward.approve", "reward.credit"]);
    let (_, html) = app.browser.get_html("/rewards").await;
    assert!(html.contains(&format!("Reward #{id} approved and credited: 10.00 USD.")));

    // Approving again changes nothing and says why.
    let again = app.post_form(&format!("/rewards/{id}/approve"), &[]).await;
    assert_eq!(again.status(), 303);
    let (_, html) = app.browser.get_html("/rewards").await;
    assert!(html.contains(&format!(
        "Reward #{id} is credited: only pending rewards can be approved."
    )));
    assert_eq!(usd_balance(&app, pair.0), dec("10"));
    let (_, html) = app.browser.get_html("/customers/ada-ref").await;
    assert!(
        html.contains("10.00"),
        "the customer page shows the credited balance"
    );
}

#[apply(integration_test!)]
async fn an_approved_reward_in_hold_is_credited_by_the_release_when_due_exactly_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let rule = insert_rule(&app, "held");
    let pair = insert_pair(&app, "bo");
    let mut seed = pending("12.5");
    seed.hold_until = Utc::now() + Duration::days(14);
    let id = insert_reward(&app, rule, pair, seed);

    assert_eq!(
        app.post_form(&format!("/rewards/{id}/approve"), &[])
            .await
            .status(),
        303
    );
    assert_eq!(status_of(&app, id).0, RewardStatus::Approved);
    assert_eq!(release_due(&mut app.conn(), Utc::now()).unwrap().credited, 0);
    assert_eq!(status_of(&app, id).0, RewardStatus::Approved);

    let later = Utc::now() + Duration::days(15);
    assert_eq!(release_due(&mut app.conn(), later).unwrap().credited, 1);
    assert_eq!(status_of(&app, id).0, RewardStatus::Credited);
    assert_eq!(release_due(&mut app.conn(), later).unwrap().credited, 0);
    assert_eq!(usd_balance(&app, pair.0), dec("12.5"));
}

#[apply(integration_test!)]
async fn the_release_credits_due_rewards_that_need_no_approval_and_leaves_the_rest() {
    let app = TestApp::spawn().await;
    let rule = insert_rule(&app, "auto");
    let pair = insert_pair(&app, "cy");
    let later = Utc::now() + Duration::days(3);
    let mut auto = pending("5");
    auto.needs_approval = false;
    auto.hold_until = Utc::now() + Duration::days(2);
    let auto = insert_reward(&app, rule, pair, auto);
    let mut review = pending("6");
    review.hold_until = Utc::now() + Duration::days(2);
    let review = insert_reward(&app, rule, pair, review);
    let mut not_due = pending("7");
    not_due.needs_approval = false;
    not_due.hold_until = Utc::now() + Duration::days(30);
    let not_due = insert_reward(&app, rule, pair, not_due);

    assert_eq!(release_due(&mut app.conn(), Utc::now()).unwrap().credited, 0);
    let released = release_due(&mut app.conn(), later).unwrap();
    assert_eq!((released.credited, released.voided), (1, 0));
    assert_eq!(status_of(&app, auto).0, RewardStatus::Credited);
    assert_eq!(
        status_of(&app, review).0,
        RewardStatus::Pending,
        "waits for a reviewer"
    );
    assert_eq!(status_of(&app, not_due).0, RewardStatus::Pending);
    assert_eq!(usd_balance(&app, pair.0), dec("5"));
}

#[apply(integration_test!)]
async fn several_releasing_processes_credit_each_reward_exactly_once() {
    let app = TestApp::spawn().await;
    let rule = insert_rule(&app, "race");
    let pairs: Vec<(i64, i64)> = (0..6).map(|n| insert_pair(&app, &format!("race{n}"))).collect();
    let past = Utc::now() - Duration::minutes(5);
    for pair in &pairs {
        insert_many(
            &app,
            rule,
            *pair,
            200,
            "1",
            past,
            false,
            Utc::now() - Duration::days(1),
        );
    }
    let later = Utc::now() + Duration::minutes(1);
    // Each "process" with a connection of its own.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let pool = referdesk::db::build_pool(&app.database_url, 1);
            std::thread::spawn(move || {
                let mut conn = pool.get().expect("a connection");
                release_due(&mut conn, later).expect("release").credited
            })
        })
        .collect();
    let credited: usize = workers.into_iter().map(|worker| worker.join().unwrap()).sum();
    assert_eq!(credited, 1200);
    let entries: i64 = balance_transactions::table
        .filter(balance_transactions::idempotency_key.like("reward:%"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(entries, 1200);
    for pair in &pairs {
        assert_eq!(usd_balance(&app, pair.0), dec("200"));
    }
}

#[apply(integration_test!)]
async fn a_due_reward_of_a_deleted_beneficiary_is_voided_not_credited() {
    let app = TestApp::spawn().await;
    let rule = insert_rule(&app, "gone");
    let pair = insert_pair(&app, "del");
    let mut seed = pending("3");
    seed.needs_approval = false;
    let id = insert_reward(&app, rule, pair, seed);
    diesel::sql_query("UPDATE customers SET status = 'deleted', deleted_at = now() WHERE id = $1")
        .bind::<diesel::sql_types::BigInt, _>(pair.0)
        .execute(&mut app.conn())
        .unwrap();
    let released = release_due(&mut app.conn(), Utc::now()).unwrap();
    assert_eq!((released.credited, released.voided), (0, 1));
    assert_eq!(status_of(&app, id).0, RewardStatus::Voided);
}

#[apply(integration_test!)]
async fn denying_needs_a_reason_and_records_who_and_why() {
    let app = TestApp::spawn().await;
    let member = app.login_as(Role::Support).await;
    let rule = insert_rule(&app, "deny me");
    let pair = insert_pair(&app, "dee");
    let id = insert_reward(&app, rule, pair, pending("10"));

    let (status, html) = app.browser.get_html(&format!("/rewards/{id}/deny")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Deny reward #"));
    let refused = app
        .post_form(&format!("/rewards/{id}/deny"), &[("reason", "  ")])
        .await;
    assert_eq!(refused.status(), 422);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("Say why the reward is denied."));
    assert_eq!(status_of(&app, id).0, RewardStatus::Pending);

    let long = "x".repeat(1001);
    let refused = app
        .post_form(&format!("/rewards/{id}/deny"), &[("reason", &long)])
        .await;
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap().contains("at most 1000 characters"));

    let done = app
        .post_form(
            &format!("/rewards/{id}/deny"),
            &[("reason", "Self-referral"), ("next", "/rewards")],
        )
        .await;
    assert_eq!(done.status(), 303);
    let (status, reason, decided_by): (RewardStatus, Option<String>, Option<i64>) = rewards::table
        .find(id)
        .select((
            rewards::status,
            rewards::deny_reason,
            rewards::decided_by_member_id,
        ))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(status, RewardStatus::Denied);
    assert_eq!(reason.as_deref(), Some("Self-referral"));
    assert_eq!(decided_by, Some(member));
    assert_eq!(audit_actions(&app, id), ["reward.deny"]);
    let (_, html) = app.browser.get_html("/rewards?status=denied").await;
    assert!(html.contains("Denied: Self-referral"));
}

fn set_support_limit(app: &TestApp, limit: &str) {
    diesel::update(programs::table.filter(programs::slug.eq("default")))
        .set(programs::rewards_support_approval_limit.eq(Some(dec(limit))))
        .execute(&mut app.conn())
        .unwrap();
}

#[apply(integration_test!)]
async fn support_decides_up_to_the_threshold_admins_above_viewers_only_read() {
    let app = TestApp::spawn().await;
    set_support_limit(&app, "50");
    let rule = insert_rule(&app, "big");
    let pair = insert_pair(&app, "lim");
    let small = insert_reward(&app, rule, pair, pending("50"));
    let big = insert_reward(&app, rule, pair, pending("50.01"));

    let (_, viewer) = app.signed_in_browser("viewer@example.com", Role::Viewer).await;
    let (status, html) = viewer.get_html("/rewards").await;
    assert_eq!(status, 200, "viewers read the queue");
    assert!(!html.contains("/approve"), "viewers are offered no action");
    assert_eq!(
        viewer
            .post_form(&format!("/rewards/{small}/approve"), &[])
            .await
            .status(),
        403
    );
    assert_eq!(
        viewer
            .post_form(&format!("/rewards/{small}/deny"), &[("reason", "no")])
            .await
            .status(),
        403
    );
    assert_eq!(
        viewer
            .post_form(
                "/rewards/decide",
                &[("decision", "approve"), ("ids", &small.to_string())]
            )
            .await
            .status(),
        403
    );

    let (_, support) = app.signed_in_browser("support@example.com", Role::Support).await;
    assert_eq!(
        support
            .post_form(&format!("/rewards/{small}/approve"), &[])
            .await
            .status(),
        303
    );
    assert_eq!(status_of(&app, small).0, RewardStatus::Credited);
    let refused = support.post_form(&format!("/rewards/{big}/approve"), &[]).await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("an admin must decide it"));
    let refused = support
        .post_form(&format!("/rewards/{big}/deny"), &[("reason", "Too much")])
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(status_of(&app, big).0, RewardStatus::Pending);

    let (_, admin) = app.signed_in_browser("admin@example.com", Role::Admin).await;
    assert_eq!(
        admin
            .post_form(&format!("/rewards/{big}/approve"), &[])
            .await
            .status(),
        303
    );
    assert_eq!(status_of(&app, big).0, RewardStatus::Credited);
    assert_eq!(usd_balance(&app, pair.0), dec("100.01"));
}

#[apply(integration_test!)]
async fn the_queue_counts_filters_and_shows_why_a_reward_is_flagged_oldest_first() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let first = insert_rule(&app, "First sale");
    let second = insert_rule(&app, "Signup bonus");
    let ada = insert_pair(&app, "ada");
    let bob = insert_pair(&app, "bob");
    let mut old = pending("1");
    old.created_at = Utc::now() - Duration::days(40);
    let old = insert_reward(&app, first, ada, old);
    let mut flagged = pending("2");
    flagged.flags = vec!["disposable_email", "same_email"];
    flagged.created_at = Utc::now() - Duration::days(2);
    let flagged = insert_reward(&app, second, bob, flagged);
    let denied = insert_reward(&app, first, bob, pending("3"));
    diesel::update(rewards::table.find(denied))
        .set((
            rewards::status.eq(RewardStatus::Denied),
            rewards::deny_reason.eq("no"),
        ))
        .execute(&mut app.conn())
        .unwrap();

    let (status, html) = app.browser.get_html("/rewards").await;
    assert_eq!(status, 200);
    let at = |id: i64| html.find(&format!("data-id=\"{id}\""));
    assert!(at(old).unwrap() < at(flagged).unwrap(), "oldest pending first");
    assert!(at(denied).is_none(), "pending by default");
    assert!(html.contains("data-status=\"pending\" class=\"active\""));
    assert!(html.contains("email domain is a disposable-mail service."));
    assert!(html.contains("share an email address once normalised"));
    assert!(html.contains("1 pending flagged"));

    let ids = |html: &str| -> Vec<i64> {
        html.split("class=\"reward\" data-id=\"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
            .collect()
    };
    let (_, html) = app.browser.get_html("/rewards?status=all").await;
    assert_eq!(ids(&html), [old, flagged, denied]);
    let (_, html) = app
        .browser
        .get_html(&format!("/rewards?status=all&rule={first}"))
        .await;
    assert_eq!(ids(&html), [old, denied]);
    let (_, html) = app.browser.get_html("/rewards?status=all&flagged=1").await;
    assert_eq!(ids(&html), [flagged]);
    let (_, html) = app
        .browser
        .get_html("/rewards?status=all&beneficiary=bob-ref")
        .await;
    assert_eq!(ids(&html), [flagged, denied]);
    let (_, html) = app
        .browser
        .get_html("/rewards?status=all&beneficiary=nobody")
        .await;
    assert!(html.contains("No customer with the id, key or email"));
    let from = (Utc::now() - Duration::days(10)).format("%Y-%m-%d").to_string();
    let (_, html) = app
        .browser
        .get_html(&format!("/rewards?status=all&from={from}"))
        .await;
    assert_eq!(ids(&html), [flagged, denied]);
    let to = (Utc::now() - Duration::days(10)).format("%Y-%m-%d").to_string();
    let (_, html) = app
        .browser
        .get_html(&format!("/rewards?status=all&to={to}"))
        .await;
    assert_eq!(ids(&html), [old]);

    let (status, html) = app.browser.get_html("/rewards?status=paid&from=yesterday").await;
    assert_eq!(status, 422);
    assert!(html.contains("Choose pending, approved, credited, denied, voided or all."));
    assert!(html.contains("Enter a date as YYYY-MM-DD."));
}

#[apply(integration_test!)]
async fn queue_pages_continue_from_a_row_and_keep_their_order() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let rule = insert_rule(&app, "many");
    let pair = insert_pair(&app, "pg");
    insert_many(
        &app,
        rule,
        pair,
        130,
        "1",
        Utc::now() + Duration::days(1),
        true,
        Utc::now() - Duration::days(5),
    );
    let all: Vec<i64> = rewards::table
        .order((rewards::created_at, rewards::id))
        .select(rewards::id)
        .load(&mut app.conn())
        .unwrap();
    let ids = |html: &str| -> Vec<i64> {
        html.split("class=\"reward\" data-id=\"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
            .collect()
    };
    let (_, html) = app.browser.get_html("/rewards").await;
    assert_eq!(ids(&html), all[..50]);
    assert!(html.contains("Showing 1–50 of 130 rewards."));
    let (_, html) = app.browser.get_html("/rewards?page=3").await;
    assert_eq!(ids(&html), all[100..]);
    let after = format!("/rewards?page=2&after=1_{}", all[49]);
    let (_, html) = app.browser.get_html(&after).await;
    assert_eq!(ids(&html), all[50..100]);
    let before = format!("/rewards?page=2&before=3_{}", all[100]);
    let (_, html) = app.browser.get_html(&before).await;
    assert_eq!(ids(&html), all[50..100]);
    let (_, html) = app.browser.get_html("/rewards?page=99").await;
    assert_eq!(ids(&html), all[100..], "past the end: the last page");
}

#[apply(integration_test!)]
async fn bulk_approve_of_a_thousand_matching_rewards_is_confirmed_with_totals_and_atomic() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let rule = insert_rule(&app, "bulk");
    let pairs: Vec<(i64, i64)> = (0..4).map(|n| insert_pair(&app, &format!("bk{n}"))).collect();
    for pair in &pairs {
        insert_many(
            &app,
            rule,
            *pair,
            250,
            "2.5",
            Utc::now() - Duration::hours(1),
            true,
            Utc::now() - Duration::days(3),
        );
    }
    let rule_text = rule.to_string();
    let confirm = app
        .post_form(
            "/rewards/confirm",
            &[
                ("decision", "approve_all"),
                ("status", "pending"),
                ("rule", &rule_text),
            ],
        )
        .await;
    assert_eq!(confirm.status(), 200);
    let html = confirm.text().await.unwrap();
    assert!(html.contains("Approve 1,000 rewards?"), "{html}");
    assert!(html.contains("<li>2,500.00 USD</li>"));
    assert!(html.contains("name=\"expected\" value=\"1000\""));

    let started = std::time::Instant::now();
    let decided = app
        .post_form(
            "/rewards/decide",
            &[
                ("decision", "approve"),
                ("scope", "all"),
                ("expected", "1000"),
                ("status", "pending"),
                ("rule", &rule_text),
            ],
        )
        .await;
    assert_eq!(decided.status(), 303);
    eprintln!("bulk approve of 1000 due rewards: {:?}", started.elapsed());
    let credited: i64 = rewards::table
        .filter(rewards::status.eq(RewardStatus::Credited))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(credited, 1000);
    for pair in &pairs {
        assert_eq!(usd_balance(&app, pair.0), dec("625"));
    }
    let (_, html) = app.browser.get_html("/rewards").await;
    assert!(html.contains("Approved 1,000 rewards (1,000 credited at once: their hold was over)."));
}

#[apply(integration_test!)]
async fn a_bulk_decision_is_all_or_nothing_and_names_what_it_could_not_decide() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let rule = insert_rule(&app, "mixed");
    let pair = insert_pair(&app, "mx");
    let a = insert_reward(&app, rule, pair, pending("1"));
    let b = insert_reward(&app, rule, pair, pending("1"));
    let voided = insert_reward(&app, rule, pair, pending("1"));
    diesel::update(rewards::table.find(voided))
        .set((
            rewards::status.eq(RewardStatus::Voided),
            rewards::void_reason.eq("refunded"),
        ))
        .execute(&mut app.conn())
        .unwrap();

    let (a_text, b_text, v_text) = (a.to_string(), b.to_string(), voided.to_string());
    let confirm = app
        .post_form(
            "/rewards/confirm",
            &[
                ("decision", "deny"),
                ("ids", &a_text),
                ("ids", &b_text),
                ("ids", &v_text),
            ],
        )
        .await;
    assert_eq!(confirm.status(), 200);
    let html = confirm.text().await.unwrap();
    assert!(html.contains("Deny 3 rewards?"));
    assert!(html.contains("<li>3.00 USD</li>"));

    let pairs = [
        ("decision", "deny"),
        ("ids", a_text.as_str()),
        ("ids", b_text.as_str()),
        ("ids", v_text.as_str()),
    ];
    let no_reason = app.post_form("/rewards/decide", &pairs).await;
    assert_eq!(no_reason.status(), 422);
    assert!(no_reason
        .text()
        .await
        .unwrap()
        .contains("Say why the reward is denied."));

    let mut with_reason = pairs.to_vec();
    with_reason.push(("reason", "Duplicate accounts"));
    let refused = app.post_form("/rewards/decide", &with_reason).await;
    assert_eq!(refused.status(), 422);
    let html = refused.text().await.unwrap();
    assert!(html.contains("Nothing was decided"));
    assert!(html.contains(&format!(
        "Reward #{voided} is voided: only pending or approved rewards can be denied."
    )));
    assert_eq!(status_of(&app, a).0, RewardStatus::Pending);
    assert_eq!(status_of(&app, b).0, RewardStatus::Pending);

    let ok = app
        .post_form(
            "/rewards/decide",
            &[
                ("decision", "deny"),
                ("ids", &a_text),
                ("ids", &b_text),
                ("reason", "Duplicate accounts"),
            ],
        )
        .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(status_of(&app, a).0, RewardStatus::Denied);
    assert_eq!(status_of(&app, b).0, RewardStatus::Denied);

    // "All matching" with a count that changed since the confirmation decides nothing.
    let c = insert_reward(&app, rule, pair, pending("1"));
    insert_reward(&app, rule, pair, pending("1"));
    let stale = app
        .post_form(
            "/rewards/decide",
            &[
                ("decision", "approve"),
                ("scope", "all"),
                ("expected", "1"),
                ("status", "pending"),
            ],
        )
        .await;
    assert_eq!(stale.status(), 422);
    assert!(stale.text().await.unwrap().contains("2 match now"));
    assert_eq!(status_of(&app, c).0, RewardStatus::Pending);
}

#[apply(integration_test!)]
async fn admins_book_what_the_balance_holds_of_a_reversal_owed_or_write_off_the_rest() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let rule = insert_rule(&app, "refunded");
    let pair = insert_pair(&app, "rv");
    let id = insert_reward(&app, rule, pair, pending("10"));
    assert_eq!(
        app.post_form(&format!("/rewards/{id}/approve"), &[])
            .await
            .status(),
        303
    );
    // The customer spent 6 of the 10; then the sale was refunded.
    diesel::sql_query(
        "INSERT INTO balance_transactions (program_id, customer_id, kind, amount, amount_units, is_currency) \
         SELECT program_id, id, 'debit', 6, 'USD', true FROM customers WHERE id = $1",
    )
    .bind::<diesel::sql_types::BigInt, _>(pair.0)
    .execute(&mut app.conn())
    .unwrap();
    owe(&app, id, "10");

    let (_, html) = app.browser.get_html("/rewards?owed=1&status=all").await;
    assert!(html.contains("Reversal owed: 10.00 USD owed"));
    assert!(html.contains("Book from balance"));

    let (_, support) = app.signed_in_browser("support@example.com", Role::Support).await;
    assert_eq!(
        support
            .post_form(&format!("/rewards/{id}/collect"), &[])
            .await
            .status(),
        403
    );
    assert_eq!(
        support
            .post_form(&format!("/rewards/{id}/write-off"), &[])
            .await
            .status(),
        403
    );

    assert_eq!(
        app.post_form(&format!("/rewards/{id}/collect"), &[])
            .await
            .status(),
        303
    );
    assert_eq!(usd_balance(&app, pair.0), dec("0"));
    let (reversal, owed): (Option<String>, Option<BigDecimal>) = rewards::table
        .find(id)
        .select((rewards::reversal, rewards::reversal_owed))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!((reversal.as_deref(), owed), (Some("owed"), Some(dec("6"))));
    // Nothing left to collect: said, and nothing booked.
    assert_eq!(
        app.post_form(&format!("/rewards/{id}/collect"), &[])
            .await
            .status(),
        303
    );
    let (_, html) = app.browser.get_html("/rewards?owed=1&status=all").await;
    assert!(html.contains("balance is empty: nothing to collect yet"));

    assert_eq!(
        app.post_form(&format!("/rewards/{id}/write-off"), &[])
            .await
            .status(),
        303
    );
    let (reversal, owed): (Option<String>, Option<BigDecimal>) = rewards::table
        .find(id)
        .select((rewards::reversal, rewards::reversal_owed))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!((reversal.as_deref(), owed), (Some("written_off"), None));
    let actions = audit_actions(&app, id);
    assert!(actions.ends_with(&[
        "reward.reversal_collect".to_string(),
        "reward.reversal_write_off".to_string()
    ]));
}

#[apply(integration_test!)]
async fn the_server_releases_due_rewards_in_the_background() {
    let config = referdesk::config::Config {
        reward_release_secs: 1,
        ..crate::helpers::test_config(&crate::helpers::fresh_database())
    };
    let app = TestApp::spawn_with(config).await;
    let rule = insert_rule(&app, "background");
    let pair = insert_pair(&app, "bg");
    let mut seed = pending("4");
    seed.needs_approval = false;
    let id = insert_reward(&app, rule, pair, seed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while status_of(&app, id).0 != RewardStatus::Credited {
        assert!(std::time::Instant::now() < deadline, "not released in 15 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(usd_balance(&app, pair.0), dec("4"));
}

#[apply(integration_test!)]
async fn the_api_lists_approves_and_denies_rewards() {
    let app = TestApp::spawn().await;
    let token = app.create_token("default");
    let rule = insert_rule(&app, "api rule");
    let other = insert_rule(&app, "other rule");
    let pair = insert_pair(&app, "api");
    let first = insert_reward(&app, rule, pair, pending("10"));
    let mut held = pending("2.5");
    held.hold_until = Utc::now() + Duration::days(3);
    let second = insert_reward(&app, other, pair, held);
    let client = reqwest::Client::new();
    let get = |path: String| {
        client
            .get(format!("{}/v1{path}", app.address))
            .bearer_auth(&token)
            .send()
    };

    let list: serde_json::Value = get("/rewards".into()).await.unwrap().json().await.unwrap();
    assert_eq!(list["meta"]["total"], 2);
    assert_eq!(list["data"][0]["id"], first);
    assert_eq!(list["data"][0]["amount"], 10.0);
    assert_eq!(list["data"][0]["customer"], "api-ref");
    assert_eq!(list["data"][0]["rule"]["name"], "api rule");
    let list: serde_json::Value = get(format!("/rewards?rule={other}&status=pending"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["meta"]["total"], 1);
    assert_eq!(list["data"][0]["id"], second);
    let bad = get("/rewards?status=paid&limit=0".into()).await.unwrap();
    assert_eq!(bad.status(), 422);
    let bad: serde_json::Value = bad.json().await.unwrap();
    assert!(bad["errors"]["limit"].is_array(), "{bad}");

    let post = |path: String, body: serde_json::Value| {
        client
            .post(format!("{}/v1{path}", app.address))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let approved = post(format!("/rewards/{first}/approve"), serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let approved: serde_json::Value = approved.json().await.unwrap();
    assert_eq!(approved["data"]["status"], "credited");
    assert_eq!(usd_balance(&app, pair.0), dec("10"));
    let held: serde_json::Value = post(format!("/rewards/{second}/approve"), serde_json::json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        held["data"]["status"], "approved",
        "in hold: credited when it ends"
    );

    let missing = post(
        format!("/rewards/{second}/deny"),
        serde_json::json!({"reason": " "}),
    )
    .await
    .unwrap();
    assert_eq!(missing.status(), 422);
    let missing: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(missing["errors"]["reason"][0], "Say why the reward is denied.");
    let denied: serde_json::Value = post(
        format!("/rewards/{second}/deny"),
        serde_json::json!({"reason": "Fraud"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(denied["data"]["status"], "denied");
    assert_eq!(denied["data"]["deny_reason"], "Fraud");
    let credited_again = post(
        format!("/rewards/{first}/deny"),
        serde_json::json!({"reason": "late"}),
    )
    .await
    .unwrap();
    assert_eq!(credited_again.status(), 422);
    assert_eq!(
        post("/rewards/abc/approve".into(), serde_json::json!({}))
            .await
            .unwrap()
            .status(),
        404
    );
}

/// The queue's counts by status, rule, flag and reversal owed come from `reward_tallies`,
/// kept by triggers: they must equal a count over the rewards after inserts (one by one and
/// set-based), decisions, the release, flag and reversal changes and deletes.
#[apply(integration_test!)]
async fn kept_reward_counts_equal_the_rewards() {
    use referdesk::domain::rewards::queue::{self, QueueFilter};

    let app = TestApp::spawn().await;
    let program_id = app.default_program().id;
    let (first, second) = (insert_rule(&app, "Tally one"), insert_rule(&app, "Tally two"));
    let pair = insert_pair(&app, "tally");
    let due = Utc::now() - Duration::hours(1);
    insert_many(
        &app,
        first,
        pair,
        40,
        "3",
        due,
        false,
        Utc::now() - Duration::days(2),
    );
    insert_many(
        &app,
        second,
        pair,
        25,
        "4",
        due,
        true,
        Utc::now() - Duration::days(1),
    );
    let mut flagged = pending("5");
    flagged.flags = vec!["same_email"];
    let flagged = insert_reward(&app, second, pair, flagged);
    let owing = insert_reward(&app, first, pair, pending("6"));

    let check = |stage: &str| {
        let mut conn = app.conn();
        let statuses = [None].into_iter().chain(RewardStatus::ALL.into_iter().map(Some));
        for status in statuses {
            for rule_id in [None, Some(first), Some(second)] {
                for (flagged, owed) in [(false, false), (true, false), (false, true)] {
                    let filter = QueueFilter {
                        status,
                        rule_id,
                        flagged,
                        owed,
                        ..QueueFilter::default()
                    };
                    let mut counted = rewards::table
                        .filter(rewards::program_id.eq(program_id))
                        .into_boxed();
                    if let Some(status) = status {
                        counted = counted.filter(rewards::status.eq(status));
                    }
                    if let Some(rule_id) = rule_id {
                        counted = counted.filter(rewards::rule_id.eq(rule_id));
                    }
                    if flagged {
                        counted =
                            counted.filter(diesel::dsl::sql::<diesel::sql_types::Bool>("flags <> '{}'"));
                    }
                    if owed {
                        counted =
                            counted.filter(rewards::reversal.eq(referdesk::domain::rewards::Reversal::Owed));
                    }
                    let expected: i64 = counted.count().get_result(&mut conn).unwrap();
                    let (_, total) = queue::list(&mut conn, program_id, &filter, 1, 10).unwrap();
                    assert_eq!(total, expected, "{stage}: {filter:?}");
                    assert_eq!(
                        queue::count(&mut conn, program_id, &filter).unwrap(),
                        expected,
                        "{stage}: {filter:?}"
                    );
                }
            }
        }
    };
    check("inserted");

    // The release credits the 40 that need no approval; an admin approves the owing one and
    // denies the flagged one.
    release_due(&mut app.conn(), Utc::now()).unwrap();
    let (_, admin) = app
        .signed_in_browser("tally-admin@example.com", Role::Admin)
        .await;
    let approved = admin.post_form(&format!("/rewards/{owing}/approve"), &[]).await;
    assert_eq!(approved.status(), 303);
    let denied = admin
        .post_form(&format!("/rewards/{flagged}/deny"), &[("reason", "Same person")])
        .await;
    assert_eq!(denied.status(), 303);
    check("decided");

    owe(&app, owing, "6");
    diesel::sql_query(
        "UPDATE rewards SET flags = '{disposable_email}' WHERE status = 'pending' AND id % 2 = 0",
    )
    .execute(&mut app.conn())
    .unwrap();
    check("flags and reversals changed");

    diesel::sql_query("DELETE FROM rewards WHERE status = 'pending' AND id % 3 = 0")
        .execute(&mut app.conn())
        .unwrap();
    check("deleted");
}
