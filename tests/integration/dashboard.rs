//! The dashboard's figures against counts made straight from the database.

use std::collections::BTreeMap;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{balance_transactions, customers, invites};
use referdesk::domain::team::Role;

use crate::fixtures::{insert_customer, insert_program, recount_referrals, seed, value_after, Seed};
use crate::helpers::TestApp;
use crate::integration_test;

/// key, referrer, status, approved, created at, referrals count.
type CustomerRow = (String, Option<i64>, String, bool, DateTime<Utc>, i32);

fn insert_transaction(
    app: &TestApp,
    program_id: i64,
    customer_id: i64,
    kind: &str,
    amount: &str,
    units: &str,
) {
    diesel::insert_into(balance_transactions::table)
        .values((
            balance_transactions::program_id.eq(program_id),
            balance_transactions::customer_id.eq(customer_id),
            balance_transactions::kind.eq(kind),
            balance_transactions::amount.eq(BigDecimal::from_str(amount).unwrap()),
            balance_transactions::amount_units.eq(units),
            balance_transactions::is_currency
                .eq(units.len() == 3 && units.chars().all(|c| c.is_ascii_uppercase())),
        ))
        .execute(&mut app.conn())
        .unwrap();
}

fn insert_invite(app: &TestApp, program_id: i64, email: &str, status: &str) {
    diesel::insert_into(invites::table)
        .values((
            invites::program_id.eq(program_id),
            invites::email.eq(email),
            invites::status.eq(status),
        ))
        .execute(&mut app.conn())
        .unwrap();
}

#[apply(integration_test!)]
async fn dashboard_numbers_equal_counts_from_the_database() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let program_a = app.default_program().id;
    let program_b = insert_program(&app, "bee");
    let now = Utc::now();
    let ago = |hours: i64| now - Duration::hours(hours);

    let r1 = insert_customer(&app, program_a, seed("r1", ago(24 * 100)));
    let r2 = insert_customer(&app, program_a, seed("r2", ago(24 * 95)));
    let referred = |key, referrer, hours| Seed {
        referrer: Some(referrer),
        ..seed(key, ago(hours))
    };
    for (key, referrer, hours) in [
        ("f1", r1, 1),
        ("f2", r1, 30),
        ("f3", r1, 24 * 3),
        ("f4", r2, 24 * 8),
        ("f5", r2, 24 * 20),
        ("f6", r1, 24 * 40),
        ("f7", r1, 24 * 89),
        ("f8", r2, 24 * 120),
    ] {
        insert_customer(&app, program_a, referred(key, referrer, hours));
    }
    insert_customer(&app, program_a, seed("solo1", ago(2)));
    insert_customer(
        &app,
        program_a,
        Seed {
            approved: false,
            ..seed("pending", ago(50))
        },
    );
    insert_customer(
        &app,
        program_a,
        Seed {
            deleted: true,
            ..referred("gone", r1, 5)
        },
    );
    insert_customer(
        &app,
        program_a,
        Seed {
            deleted: true,
            approved: false,
            ..seed("gone2", ago(5))
        },
    );
    insert_customer(
        &app,
        program_a,
        Seed {
            approved: false,
            ..referred("f9", r2, 10)
        },
    );
    let other = insert_customer(&app, program_b, seed("b1", ago(3)));
    insert_customer(&app, program_b, referred("b2", other, 3));
    recount_referrals(&app);

    insert_transaction(&app, program_a, r1, "credit", "10.50", "USD");
    insert_transaction(&app, program_a, r1, "credit", "5.25", "USD");
    insert_transaction(&app, program_a, r2, "debit", "2.00", "USD");
    insert_transaction(&app, program_a, r2, "credit", "3", "EUR");
    insert_transaction(&app, program_a, r2, "credit", "100", "points");
    insert_transaction(&app, program_a, r1, "credit", "50.5", "points");
    insert_transaction(&app, program_b, other, "credit", "999", "USD");
    insert_invite(&app, program_a, "i1@example.com", "sent");
    insert_invite(&app, program_a, "i2@example.com", "sent");
    insert_invite(&app, program_a, "i3@example.com", "queued");
    insert_invite(&app, program_a, "i4@example.com", "failed");
    insert_invite(&app, program_b, "i5@example.com", "sent");

    // Expected figures, counted in Rust from the rows themselves.
    let rows: Vec<CustomerRow> = customers::table
        .filter(customers::program_id.eq(program_a))
        .select((
            customers::key,
            customers::referrer_id,
            customers::status,
            customers::approved,
            customers::created_at,
            customers::referrals_count,
        ))
        .load(&mut app.conn())
        .unwrap();
    let today = now.date_naive();
    let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let week_start = Utc.from_utc_datetime(&monday.and_hms_opt(0, 0, 0).unwrap());
    let first_of_month = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap();
    let month_start = Utc.from_utc_datetime(&first_of_month.and_hms_opt(0, 0, 0).unwrap());
    let active: Vec<_> = rows.iter().filter(|row| row.2 == "active").collect();
    let count = |keep: &dyn Fn(&&CustomerRow) -> bool| active.iter().filter(|row| keep(row)).count() as i64;
    let customers_total = count(&|_| true);
    let referred_total = count(&|row| row.1.is_some());
    let approved_total = count(&|row| row.3);
    let new_week = count(&|row| row.4 >= week_start);
    let new_month = count(&|row| row.4 >= month_start);
    let referrals_week = count(&|row| row.1.is_some() && row.4 >= week_start);
    let referrals_month = count(&|row| row.1.is_some() && row.4 >= month_start);
    assert_eq!((customers_total, referred_total, approved_total), (13, 9, 11));

    let (status, body) = app.browser.get_html("/").await;
    assert_eq!(status, 200);
    assert_eq!(value_after(&body, "id=\"stat-customers\""), customers_total);
    assert_eq!(value_after(&body, "id=\"stat-referred\""), referred_total);
    assert_eq!(value_after(&body, "id=\"stat-approved\""), approved_total);
    assert_eq!(value_after(&body, "id=\"stat-new\""), new_week);
    assert_eq!(value_after(&body, "this week · <span"), new_month);
    assert_eq!(value_after(&body, "id=\"stat-referrals\""), referrals_week);
    let referrals_block = &body[body.find("id=\"stat-referrals\"").unwrap()..];
    assert_eq!(value_after(referrals_block, "this week · <span"), referrals_month);
    assert_eq!(value_after(&body, "id=\"stat-invites\""), 2);
    assert!(body.contains(">69.2%<"), "9 of 13 referred");
    assert!(body.contains(">84.6%<"), "11 of 13 approved");

    // Credits per unit, exact, debits not counted, currencies with two decimals.
    assert!(body.contains("data-units=\"USD\">15.75<"));
    assert!(body.contains("data-units=\"EUR\">3.00<"));
    assert!(body.contains("data-units=\"points\">150.5<"));

    // Top referrers by their referral counts, linked to their pages.
    let top: Vec<(String, i32)> = {
        let mut top: Vec<_> = active
            .iter()
            .filter(|row| row.5 > 0)
            .map(|row| (row.0.clone(), row.5))
            .collect();
        top.sort_by_key(|row| std::cmp::Reverse(row.1));
        top
    };
    assert_eq!(top, [("r1".to_string(), 5), ("r2".to_string(), 4)]);
    for (key, referrals) in &top {
        assert!(body.contains(&format!(
            "<a href=\"/customers/{key}\">Name {key}</a><span data-key=\"{key}\">{referrals}</span>"
        )));
    }
    assert!(body.find("data-key=\"r1\"").unwrap() < body.find("data-key=\"r2\"").unwrap());

    // The chart: one bar per day over 90 days, each titled with its count.
    let first_day = today - Duration::days(89);
    let mut per_day: BTreeMap<NaiveDate, i64> = BTreeMap::new();
    for row in active.iter().filter(|row| row.1.is_some()) {
        let day = row.4.date_naive();
        if day >= first_day {
            *per_day.entry(day).or_default() += 1;
        }
    }
    // Drawn twice, for a wide screen and a phone; CSS shows one.
    assert_eq!(body.matches("<rect class=\"bar\"").count(), 2 * 90);
    for (day, referrals) in &per_day {
        let plural = if *referrals == 1 { "" } else { "s" };
        assert!(
            body.contains(&format!("<title>{day}: {referrals} referral{plural}</title>")),
            "bar of {day}"
        );
    }
    let total: i64 = per_day.values().sum();
    assert!(body.contains(&format!("{total} referrals from {first_day}")));
    assert!(body.contains("<title id=\"chart-title-wide\">"));
    assert!(body.contains("<title id=\"chart-title-narrow\">"));
    assert!(!body.contains("style="), "no inline styles (CSP)");
}
