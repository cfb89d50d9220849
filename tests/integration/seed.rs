//! `referdesk seed`: repeatable demo data that every screen shows, consistent with what the
//! application itself keeps (counts, tallies, standings, click counters, balances).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use futures_util::future::join_all;
use referdesk::db::schema::{invites, mail_outbox, programs};
use referdesk::domain::team::Role;
use referdesk::domain::{dashboard, invites as invite_rules, programs as program_rules, tokens, Actor};
use referdesk::seed::plan::Plan;
use serde_json::json;

use macro_rules_attribute::apply;

use crate::helpers::{fresh_database, test_config, TestApp};
use crate::integration_test;

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct SeededCustomer {
    #[diesel(sql_type = Text)]
    external_id: String,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Nullable<Text>)]
    email: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    referrer_key: Option<String>,
    #[diesel(sql_type = Text)]
    status: String,
}

/// Connections to write a seed with, as many as the `seed` command uses.
fn writers(database_url: &str) -> Vec<PgConnection> {
    (0..referdesk::seed::WRITERS)
        .map(|_| PgConnection::establish(database_url).expect("connect"))
        .collect()
}

fn seeded(database_url: &str, customers: i64, seed: u64) -> PgConnection {
    let mut writers = writers(database_url);
    referdesk::seed::seed(&mut writers, "default", customers, Some(seed)).expect("seed");
    writers.swap_remove(0)
}

/// Every customer with their referrer's key, in the order they joined.
fn customers_of(conn: &mut PgConnection) -> Vec<SeededCustomer> {
    diesel::sql_query(
        "SELECT c.external_id, c.key, c.email, r.key AS referrer_key, c.status
         FROM customers c LEFT JOIN customers r ON r.id = c.referrer_id
         ORDER BY c.created_at, c.id",
    )
    .load(conn)
    .expect("customers")
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .n
}

/// What the application keeps besides the rows themselves, checked against the rows.
fn assert_consistent(conn: &mut PgConnection) {
    let checks = [
        (
            "referrals_count is the number of active customers each one referred",
            "SELECT count(*) AS n FROM customers c WHERE c.referrals_count <>
                 (SELECT count(*) FROM customers r WHERE r.referrer_id = c.id AND r.status = 'active')",
        ),
        (
            "a referrer joined before the customers they referred",
            "SELECT count(*) AS n FROM customers c JOIN customers r ON r.id = c.referrer_id
             WHERE r.created_at >= c.created_at",
        ),
        (
            "referral_standings mirror the customers",
            "SELECT count(*) AS n FROM customers c FULL JOIN referral_standings s ON s.customer_id = c.id
             WHERE s.customer_id IS NULL OR c.id IS NULL OR s.referrals_count <> c.referrals_count
                OR s.status <> c.status OR s.referrer_id IS DISTINCT FROM c.referrer_id
                OR s.approved <> c.approved",
        ),
        (
            "customer_tallies count the customers per status and referred",
            "SELECT count(*) AS n FROM
                 (SELECT program_id, status, referrer_id IS NOT NULL AS referred, count(*) AS customers
                  FROM customers GROUP BY 1, 2, 3) actual
             FULL JOIN (SELECT program_id, status, referred, sum(customers) AS customers
                        FROM customer_tallies GROUP BY 1, 2, 3 HAVING sum(customers) <> 0) tallied
             USING (program_id, status, referred)
             WHERE actual.customers IS DISTINCT FROM tallied.customers",
        ),
        (
            "every customer has one default link whose code is the key",
            "SELECT count(*) AS n FROM customers c WHERE NOT EXISTS
                 (SELECT 1 FROM referral_links l WHERE l.customer_id = c.id AND l.is_default AND l.code = c.key)",
        ),
        (
            "link click counters equal their click rows",
            "SELECT count(*) AS n FROM referral_links l
             WHERE l.clicks <> (SELECT count(*) FROM referral_clicks k WHERE k.link_id = l.id)",
        ),
        (
            "no balance below zero",
            "SELECT count(*) AS n FROM (SELECT customer_id, amount_units,
                 sum(CASE WHEN kind = 'credit' THEN amount ELSE -amount END) AS balance
                 FROM balance_transactions GROUP BY 1, 2) b WHERE balance < 0",
        ),
        (
            "every customer, booking and invite has its audit event",
            "SELECT (SELECT count(*) FROM customers)
                  + (SELECT count(*) FROM balance_transactions)
                  + (SELECT count(*) FROM invites)
                  - (SELECT count(*) FROM audit_events
                     WHERE action IN ('customer.create', 'ledger.credit', 'ledger.debit', 'invite.create'))
                 AS n",
        ),
        (
            "every invite has its message in the outbox",
            "SELECT count(*) AS n FROM invites i
             WHERE NOT EXISTS (SELECT 1 FROM mail_outbox m WHERE m.invite_id = i.id AND m.status = i.status)",
        ),
    ];
    for (what, sql) in checks {
        assert_eq!(count(conn, sql), 0, "{what}");
    }
}

#[apply(integration_test!)]
async fn the_same_seed_gives_the_same_data_set_and_another_seed_another() {
    let mut first = seeded(&fresh_database(), 200, 1);
    let mut second = seeded(&fresh_database(), 200, 1);
    let customers = customers_of(&mut first);
    assert_eq!(customers.len(), 200);
    let again = customers_of(&mut second);
    let difference = customers.iter().zip(&again).find(|(a, b)| a != b);
    assert!(
        customers.len() == again.len() && difference.is_none(),
        "same seed, same customers and referrals; first difference: {difference:?}"
    );

    let referred = customers.iter().filter(|c| c.referrer_key.is_some()).count();
    assert!(
        (40..=80).contains(&referred),
        "{referred} of 200 referred, not 20–40%"
    );
    assert!(customers.iter().any(|c| c.status == "deleted"));
    assert!(customers.iter().all(|c| c.email.as_deref().is_some_and(|email| {
        email.ends_with(".example") || email.ends_with(".test") || email.contains("@example.")
    })));
    assert_consistent(&mut first);

    let mut other = seeded(&fresh_database(), 200, 2);
    let others = customers_of(&mut other);
    assert_ne!(
        customers.iter().map(|c| &c.key).collect::<Vec<_>>(),
        others.iter().map(|c| &c.key).collect::<Vec<_>>(),
        "another seed, other keys"
    );
    let pairs = |rows: &[SeededCustomer]| -> Vec<(String, Option<String>)> {
        rows.iter()
            .map(|c| (c.external_id.clone(), c.referrer_key.clone()))
            .collect()
    };
    assert_ne!(pairs(&customers), pairs(&others), "another seed, other referrals");
}

#[apply(integration_test!)]
async fn a_seeded_program_shows_referrals_on_every_screen() {
    let database_url = fresh_database();
    let mut conn = seeded(&database_url, 200, 1);
    let app = TestApp::spawn_with(test_config(&database_url)).await;
    app.login_as(Role::Admin).await;
    let program_id: i64 = programs::table
        .filter(programs::slug.eq("default"))
        .select(programs::id)
        .first(&mut conn)
        .unwrap();

    // The dashboard: a referred share, top referrers, and bars in the 90-day chart.
    let (status, page) = app.browser.get_html("/").await;
    assert_eq!(status, 200);
    let totals = dashboard::totals(&mut conn, program_id, Utc::now()).unwrap();
    assert!(totals.referred > 0 && !totals.credits.is_empty() && totals.invites_sent > 0);
    assert!(page.contains(&totals.referred_share()) && totals.referred_share() != "0%");
    let top = dashboard::top_referrers(&mut conn, program_id).unwrap();
    assert!(
        top.len() >= 3 && top[0].referrals_count > top[2].referrals_count,
        "a few refer many"
    );
    assert!(page.contains(&format!(
        "data-key=\"{}\">{}<",
        top[0].key, top[0].referrals_count
    )));
    let days = dashboard::referrals_per_day(&mut conn, program_id, Utc::now()).unwrap();
    assert!(
        days.iter().filter(|day| day.referrals > 0).count() >= 5,
        "{days:?}"
    );

    // The list's referred filter, the top referrer's page (balance, clicks), the invites.
    let (_, referred) = app.browser.get_html("/customers?refer_status=referred").await;
    let listed = customers_of(&mut conn)
        .into_iter()
        .filter(|c| c.referrer_key.is_some() && c.status == "active")
        .filter(|c| referred.contains(&c.key))
        .count();
    assert!(listed > 0, "the referred filter lists referred customers");
    let (status, _) = app.browser.get_html(&format!("/customers/{}", top[0].key)).await;
    assert_eq!(status, 200);
    let (_, invites_page) = app.browser.get_html("/invites").await;
    for status in ["queued", "sent", "failed"] {
        assert!(
            invites_page.contains(&format!(">{status}</span>")),
            "an invite {status}"
        );
    }

    // Queued invites are held: once the mail worker has sent a real invite made after the
    // seed, the seeded ones are still queued and were never handed to the transport.
    let program = program_rules::find_by_slug(&mut conn, "default").unwrap();
    let new = invite_rules::NewInvite::parse("friend@example.com", "Friend", &[]).unwrap();
    let real = invite_rules::create(&mut conn, &program, &Actor::system(), None, new).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: String = invites::table
            .find(real.id)
            .select(invites::status)
            .first(&mut conn)
            .unwrap();
        if status == "sent" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mail worker did not send the new invite"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held: i64 = mail_outbox::table
        .filter(mail_outbox::status.eq("queued"))
        .filter(mail_outbox::attempts.eq(0))
        .count()
        .get_result(&mut conn)
        .unwrap();
    let queued: i64 = invites::table
        .filter(invites::status.eq("queued"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert!(
        queued > 0 && held == queued,
        "{held} of {queued} queued invites held"
    );

    // A second seed into the same program adds to it, numbered after the first.
    referdesk::seed::seed(std::slice::from_mut(&mut conn), "default", 50, Some(1)).expect("second seed");
    let mut numbers: Vec<i64> = customers_of(&mut conn)
        .iter()
        .map(|c| c.external_id.trim_start_matches("seed-").parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=250).collect::<Vec<i64>>());
    assert_consistent(&mut conn);
    app.stop().await;
}

/// An API token of the default program.
fn api_token(conn: &mut PgConnection) -> String {
    let program_id: i64 = programs::table
        .filter(programs::slug.eq("default"))
        .select(programs::id)
        .first(conn)
        .unwrap();
    tokens::create(conn, program_id, "seed tests", &Actor::system())
        .unwrap()
        .1
}

/// `POST /v1/customers` on a new HTTP connection: its status and how long it took.
async fn sign_up(address: &str, token: &str, body: serde_json::Value) -> (u16, Duration) {
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{address}/v1/customers"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST /v1/customers");
    (response.status().as_u16(), started.elapsed())
}

#[derive(QueryableByName)]
struct Slot {
    #[diesel(sql_type = Integer)]
    slot: i32,
}

#[apply(integration_test!)]
async fn signups_are_not_held_up_by_a_running_seed() {
    let database_url = fresh_database();
    let mut config = test_config(&database_url);
    // A signup waiting behind the seed fails fast instead of after the default 5 s.
    config.statement_timeout_ms = 1_000;
    let pool_size = config.pool_size as usize;
    let app = TestApp::spawn_with(config).await;
    let token = api_token(&mut app.conn());
    // As many signups at once as the server has connections, so that all of them write.
    let burst = |round: usize| {
        join_all((0..pool_size).map(|i| {
            let n = round * pool_size + i;
            sign_up(
                &app.address,
                &token,
                json!({"id": format!("live-{n}"), "email": format!("live.{n}@example.com")}),
            )
        }))
    };
    for (status, _) in burst(0).await {
        assert_eq!(status, 201);
    }

    // The tallies' slot is the writing backend's pid mod 16: the seed gets a connection
    // that shares its slot with a server connection that has just signed customers up.
    let mut conn = PgConnection::establish(&database_url).expect("connect");
    let slots: HashSet<i32> = diesel::sql_query(
        "SELECT pid % 16 AS slot FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE '%INSERT INTO customers%'",
    )
    .load::<Slot>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|row| row.slot)
    .collect();
    assert!(!slots.is_empty());
    let mut spare = Vec::new();
    let seed_conn = loop {
        let mut candidate = PgConnection::establish(&database_url).expect("connect");
        let own = diesel::sql_query("SELECT pg_backend_pid() % 16 AS slot")
            .get_result::<Slot>(&mut candidate)
            .unwrap();
        if slots.contains(&own.slot) {
            break candidate;
        }
        assert!(spare.len() < 100, "no connection in the server's slots");
        spare.push(candidate);
    };
    drop(spare);

    let customers = 4 * referdesk::seed::BATCH as i64;
    // With a second writer, as the `seed` command writes.
    let mut seed_writers = vec![
        seed_conn,
        PgConnection::establish(&database_url).expect("connect"),
    ];
    let seeding =
        std::thread::spawn(move || referdesk::seed::seed(&mut seed_writers, "default", customers, Some(1)));
    let mut round = 1;
    let mut slow = Vec::new();
    while !seeding.is_finished() {
        for (status, took) in burst(round).await {
            if status != 201 || took > Duration::from_secs(2) {
                slow.push((status, took));
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seeding.join().expect("seed thread").expect("seed");
    let signups = round * pool_size;
    assert!(round > 5, "the seed ran for a few rounds of signups ({round})");
    assert!(
        slow.is_empty(),
        "{} of {signups} signups during the seed failed or waited: {slow:?}",
        slow.len()
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM customers"),
        customers + signups as i64
    );
    assert_consistent(&mut conn);
    app.stop().await;
}

#[apply(integration_test!)]
async fn an_interrupted_seed_leaves_whole_consistent_batches() {
    let database_url = fresh_database();
    let app = TestApp::spawn_with(test_config(&database_url)).await;
    let token = api_token(&mut app.conn());
    // A customer signed up with the key the seed draws for a customer of its second batch:
    // that batch fails on the key, after the first one was written.
    let batch = referdesk::seed::BATCH;
    let customers = 3 * batch as u32;
    let plan = Plan::draw(1, 0, customers, Utc::now());
    let taken = plan.people[batch + batch / 2].key().to_string();
    let (status, _) = sign_up(&app.address, &token, json!({"id": "taken", "key": taken})).await;
    assert_eq!(status, 201);

    let mut writers = writers(&database_url);
    let result = referdesk::seed::seed(&mut writers, "default", i64::from(customers), Some(1));
    assert!(result.is_err(), "the seed stops at the taken key");
    let mut conn = writers.swap_remove(0);
    // The first batch, whole, and of the second the shares without the taken key.
    let seeded = "SELECT count(*) AS n FROM customers WHERE external_id LIKE 'seed-%'";
    let written = count(&mut conn, seeded);
    assert!(
        (batch as i64..2 * batch as i64).contains(&written),
        "{written} customers written"
    );
    let first_batch = format!(
        "SELECT count(*) AS n FROM customers WHERE external_id LIKE 'seed-%'
         AND substr(external_id, 6)::bigint <= {batch}"
    );
    assert_eq!(
        count(&mut conn, &first_batch),
        batch as i64,
        "the first batch, whole"
    );
    assert!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM customers WHERE referrals_count > 0"
        ) > 0
            && count(&mut conn, "SELECT count(*) AS n FROM referral_clicks") > 0
            && count(&mut conn, "SELECT count(*) AS n FROM balance_transactions") > 0
            && count(&mut conn, "SELECT count(*) AS n FROM invites") > 0,
        "with its referrals, clicks, ledger entries and invites"
    );
    assert_consistent(&mut conn);

    // Run again, the seed adds after the customers written.
    let last =
        "SELECT max(substr(external_id, 6)::bigint) AS n FROM customers WHERE external_id LIKE 'seed-%'";
    let before = count(&mut conn, last);
    referdesk::seed::seed(std::slice::from_mut(&mut conn), "default", 100, Some(1)).expect("a second seed");
    assert_eq!(count(&mut conn, seeded), written + 100);
    assert_eq!(count(&mut conn, last), before + 100);
    assert_consistent(&mut conn);
    app.stop().await;
}
