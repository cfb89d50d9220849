//! Transactions over `/v1` and the reward rules they (and signups, approvals) fire:
//! triggers, amounts, limits, fraud signals, refunds and archives, idempotency under load.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use futures_util::future::join_all;
use macro_rules_attribute::apply;
use referdesk::db::schema::{balance_transactions, customers, programs, rewards, transactions};
use referdesk::domain::ledger::{self, Kind, NewEntry};
use referdesk::domain::rewards::review::{self, Decision, Reviewer};
use referdesk::domain::rewards::{Reward, RewardStatus};
use referdesk::domain::Actor;
use serde_json::{json, Value};

use crate::api::Api;
use crate::helpers::TestApp;
use crate::integration_test;

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Inserts a reward rule of the default program (the rules pages live elsewhere): a sale
/// rule paying the referrer 10 USD on every sale, no hold, no approval, unless `columns`
/// (SQL literals; `NULL` clears a default) say otherwise.
pub(crate) fn add_rule(app: &TestApp, columns: &[(&str, &str)]) -> i64 {
    let mut all: Vec<(&str, &str)> = vec![
        ("name", "'Rule'"),
        ("trigger", "'sale'"),
        ("sale_scope", "'every'"),
        ("amount_kind", "'fixed'"),
        ("referrer_amount", "10"),
        ("amount_units", "'USD'"),
        ("is_currency", "true"),
        ("hold_days", "0"),
        ("needs_approval", "false"),
    ];
    for (column, value) in columns {
        all.retain(|(name, _)| name != column);
        all.push((column, value));
    }
    let names: Vec<&str> = all.iter().map(|(name, _)| *name).collect();
    let values: Vec<&str> = all.iter().map(|(_, value)| *value).collect();
    let sql = format!(
        "INSERT INTO reward_rules (program_id, {}) SELECT id, {} FROM programs WHERE slug = 'default' RETURNING id",
        names.join(", "),
        values.join(", ")
    );
    diesel::sql_query(sql)
        .get_result::<Id>(&mut app.conn())
        .expect("rule inserted")
        .id
}

fn customer_id(app: &TestApp, key: &str) -> i64 {
    customers::table
        .filter(customers::key.eq(key))
        .select(customers::id)
        .first(&mut app.conn())
        .expect("customer")
}

fn rewards_of_rule(app: &TestApp, rule_id: i64) -> Vec<Reward> {
    rewards::table
        .filter(rewards::rule_id.eq(rule_id))
        .order(rewards::id)
        .select(Reward::as_select())
        .load(&mut app.conn())
        .unwrap()
}

fn dec(value: &str) -> BigDecimal {
    BigDecimal::from_str(value).unwrap()
}

fn balance(app: &TestApp, key: &str) -> BigDecimal {
    ledger::balance_of(&mut app.conn(), customer_id(app, key), "USD", true).unwrap()
}

/// A referrer `ada` and friends referred by her.
pub(crate) async fn referral(api: &Api, friends: &[&str]) {
    api.create(json!({"key": "ada", "email": "ada@example.com"}))
        .await;
    for friend in friends {
        api.create(json!({"key": friend, "email": format!("{friend}@example.com"), "referring_customer": {"key": "ada"}}))
            .await;
    }
}

pub(crate) async fn sale(api: &Api, customer: &str, key: &str, amount: Value) -> (u16, Value) {
    api.post(
        "/transactions",
        json!({"customer": {"key": customer}, "key": key, "amount": amount}),
    )
    .await
}

fn reasons(answer: &Value) -> Vec<String> {
    answer["data"]["reward_notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|note| note["reason"].as_str().unwrap().to_string())
        .collect()
}

#[apply(integration_test!)]
async fn a_first_sale_books_once_and_rewards_the_referrer() {
    let api = Api::spawn().await;
    let rule = add_rule(
        &api.app,
        &[
            ("name", "'First sale'"),
            ("sale_scope", "'first'"),
            ("hold_days", "14"),
        ],
    );
    referral(&api, &["bob"]).await;
    let (status, first) = sale(&api, "bob", "txn_1", json!(99.99)).await;
    assert_eq!(status, 201, "{first}");
    let data = &first["data"];
    assert_eq!(data["key"], "txn_1");
    assert_eq!(data["amount"], json!(99.99));
    assert_eq!(data["amount_units"], "USD");
    assert_eq!(data["action"], "sale");
    assert_eq!(data["status"], "active");
    assert_eq!(
        (data["rewardable"].clone(), data["rewarded"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(data["customer"]["key"], "bob");
    let reward = &data["rewards"][0];
    assert_eq!(data["rewards"].as_array().unwrap().len(), 1);
    assert_eq!(
        (reward["customer"].as_str(), reward["role"].as_str()),
        (Some("ada"), Some("referrer"))
    );
    assert_eq!(
        (reward["amount"].clone(), reward["status"].clone()),
        (json!(10.0), json!("pending"))
    );
    assert_eq!(reward["rule"], json!({"id": rule, "name": "First sale"}));
    let hold = chrono::DateTime::parse_from_rfc3339(reward["hold_until"].as_str().unwrap()).unwrap();
    let days = (hold.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((335..=336).contains(&days), "a 14-day hold: {days} hours");
    // The rule as it fired is kept with the reward.
    let stored = rewards_of_rule(&api.app, rule);
    assert_eq!(stored[0].rule_snapshot["hold_days"], json!(14));
    assert_eq!(
        stored[0].event_key,
        format!("transaction:{}", stored[0].transaction_id.unwrap())
    );

    // A retry answers the same transaction; another body under the key is refused.
    let (status, again) = sale(&api, "bob", "txn_1", json!("99.990")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["rewards"][0]["id"], reward["id"]);
    let (status, other) = sale(&api, "bob", "txn_1", json!(5)).await;
    assert_eq!(status, 422, "{other}");
    assert!(other["errors"]["key"][0]
        .as_str()
        .unwrap()
        .contains("already booked"));

    // The second sale is not the first: no reward, and the transaction says why.
    let (status, second) = sale(&api, "bob", "txn_2", json!(20)).await;
    assert_eq!(status, 201);
    assert_eq!(second["data"]["rewards"], json!([]));
    assert_eq!(second["data"]["rewarded"], json!(false));
    assert_eq!(reasons(&second), ["Only the friend's first sale counts."]);
    assert_eq!(rewards_of_rule(&api.app, rule).len(), 1);

    let (status, shown) = api.get("/transactions/txn_2").await;
    assert_eq!((status, shown["data"]["amount"].clone()), (200, json!(20.0)));
    let (status, listed) = api.get("/transactions?customer=bob&limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        (listed["meta"]["total"].clone(), listed["data"][0]["key"].clone()),
        (json!(2), json!("txn_2"))
    );
    let (_, none) = api.get("/transactions?customer=nobody").await;
    assert_eq!(none["data"], json!([]));
    assert_eq!(api.get("/transactions/nope").await.0, 404);
    let (status, earned) = api.get("/customers/ada/rewards").await;
    assert_eq!((status, earned["meta"]["total"].clone()), (200, json!(1)));
    assert_eq!(earned["data"][0]["transaction"], "txn_1");

    let (_, stats) = api.get("/customers/bob/stats").await;
    assert_eq!(
        stats["data"]["sales"],
        json!([{"amount": 119.99, "amount_units": "USD", "count": 2}])
    );
    let (_, stats) = api.get("/customers/ada/stats").await;
    assert_eq!(
        stats["data"]["rewards"],
        json!([{"amount": 10.0, "amount_units": "USD", "count": 1, "is_currency": true, "status": "pending"}])
    );
}

#[apply(integration_test!)]
async fn percent_rewards_round_half_up_and_respect_the_maximum() {
    let api = Api::spawn().await;
    let rule = add_rule(
        &api.app,
        &[
            ("amount_kind", "'percent'"),
            ("referrer_amount", "12.5"),
            ("friend_amount", "10"),
            ("max_reward", "0.5"),
        ],
    );
    referral(&api, &["bob"]).await;
    // 12.5 % of 9.96 is 1.245: half up gives 1.25 (half even would give 1.24); 10 % is
    // 0.996, capped at 0.50.
    let (status, answer) = sale(&api, "bob", "t1", json!(9.96)).await;
    assert_eq!(status, 201, "{answer}");
    let stored = rewards_of_rule(&api.app, rule);
    let amounts: Vec<(String, BigDecimal)> = stored
        .iter()
        .map(|reward| (reward.role.to_string(), reward.amount.clone()))
        .collect();
    assert_eq!(
        amounts,
        [
            ("referrer".to_string(), dec("0.50")),
            ("friend".to_string(), dec("0.50"))
        ]
    );
    let uncapped = add_rule(
        &api.app,
        &[
            ("amount_kind", "'percent'"),
            ("referrer_amount", "12.5"),
            ("product_type", "'book'"),
        ],
    );
    let body = json!({"customer": {"key": "bob"}, "key": "t2", "amount": 9.96, "product_type": "book"});
    assert_eq!(api.post("/transactions", body).await.0, 201);
    assert_eq!(rewards_of_rule(&api.app, uncapped)[0].amount, dec("1.25"));
    // A percentage is of sales in the rule's currency only.
    let body = json!({"customer": {"key": "bob"}, "key": "t3", "amount": 50, "amount_units": "eur", "product_type": "book"});
    let (status, euro) = api.post("/transactions", body).await;
    assert_eq!(
        (status, euro["data"]["amount_units"].clone()),
        (201, json!("EUR"))
    );
    assert!(
        reasons(&euro)
            .iter()
            .all(|reason| reason.contains("USD sales only")),
        "{euro}"
    );
    assert_eq!(rewards_of_rule(&api.app, uncapped).len(), 1);
}

#[apply(integration_test!)]
async fn sale_conditions_minimum_first_n_and_days_since_signup() {
    let api = Api::spawn().await;
    let rule = add_rule(
        &api.app,
        &[
            ("sale_scope", "'first_n'"),
            ("sale_count", "2"),
            ("min_sale_amount", "50"),
            ("within_days", "30"),
        ],
    );
    referral(&api, &["bob", "cy"]).await;
    // Sales are numbered among all the friend's counted sales: the small first one uses
    // up a place of the first two.
    let (_, small) = sale(&api, "bob", "s1", json!(40)).await;
    assert_eq!(reasons(&small), ["The sale is below the minimum of 50.00."]);
    let (_, second) = sale(&api, "bob", "s2", json!(60)).await;
    assert_eq!(second["data"]["rewards"].as_array().unwrap().len(), 1, "{second}");
    let (_, third) = sale(&api, "bob", "s3", json!(60)).await;
    assert_eq!(reasons(&third), ["Only the friend's first 2 sales count."]);
    // Refunded sales no longer count: with the first and third refunded, the next is the
    // second again.
    for key in ["s1", "s3"] {
        assert_eq!(
            api.call(reqwest::Method::DELETE, &format!("/transactions/{key}"), None)
                .await
                .0,
            200
        );
    }
    let (_, again) = sale(&api, "bob", "s4", json!(60)).await;
    assert_eq!(again["data"]["rewards"].as_array().unwrap().len(), 1, "{again}");
    // A friend who signed up 40 days ago is past the 30 days.
    diesel::update(customers::table.filter(customers::key.eq("cy")))
        .set(customers::created_at.eq(chrono::Utc::now() - chrono::Duration::days(40)))
        .execute(&mut api.app.conn())
        .unwrap();
    let (_, late) = sale(&api, "cy", "c1", json!(60)).await;
    assert_eq!(
        reasons(&late),
        ["The sale came more than 30 days after the friend signed up."]
    );
    assert_eq!(rewards_of_rule(&api.app, rule).len(), 2);
}

#[apply(integration_test!)]
async fn signup_and_approval_rules_fire_once_per_friend() {
    let api = Api::spawn().await;
    let created = add_rule(
        &api.app,
        &[
            ("trigger", "'customer_created'"),
            ("sale_scope", "NULL"),
            ("referrer_amount", "NULL"),
            ("friend_amount", "5"),
            ("amount_units", "'points'"),
            ("is_currency", "false"),
            ("needs_approval", "true"),
        ],
    );
    let approved = add_rule(
        &api.app,
        &[
            ("trigger", "'customer_approved'"),
            ("sale_scope", "NULL"),
            ("referrer_amount", "3"),
        ],
    );
    diesel::update(programs::table.filter(programs::slug.eq("default")))
        .set(programs::require_approval.eq(true))
        .execute(&mut api.app.conn())
        .unwrap();
    referral(&api, &["bob"]).await;
    let signup = rewards_of_rule(&api.app, created);
    assert_eq!(signup.len(), 1);
    assert_eq!(
        (signup[0].role.to_string(), signup[0].amount.clone()),
        ("friend".into(), dec("5.0000"))
    );
    assert_eq!(
        (signup[0].amount_units.as_str(), signup[0].needs_approval),
        ("points", true)
    );
    assert!(
        rewards_of_rule(&api.app, approved).is_empty(),
        "bob awaits approval"
    );
    // Approving (over the dashboard), unapproving and approving again: one reward.
    let (_, browser) = api
        .app
        .signed_in_browser("support@example.com", referdesk::domain::team::Role::Support)
        .await;
    for path in [
        "/customers/bob/approve",
        "/customers/bob/unapprove",
        "/customers/bob/approve",
    ] {
        let response = browser.post_form(path, &[]).await;
        assert!(
            response.status().is_redirection() || response.status().is_success(),
            "{path}"
        );
    }
    let approval = rewards_of_rule(&api.app, approved);
    assert_eq!(approval.len(), 1);
    assert_eq!(
        (approval[0].beneficiary_id, approval[0].amount.clone()),
        (customer_id(&api.app, "ada"), dec("3.00"))
    );
    assert_eq!(
        approval[0].event_key,
        format!("customer_approved:{}", customer_id(&api.app, "bob"))
    );
    // An unreferred customer fires nothing.
    api.create(json!({"key": "solo"})).await;
    assert_eq!(rewards_of_rule(&api.app, created).len(), 1);
}

#[apply(integration_test!)]
async fn limits_per_referrer_per_month_and_budget_refuse_with_a_reason() {
    let api = Api::spawn().await;
    let total = add_rule(&api.app, &[("product_type", "'a'"), ("limit_per_referrer", "2")]);
    let monthly = add_rule(
        &api.app,
        &[("product_type", "'b'"), ("limit_per_referrer_month", "1")],
    );
    let budget = add_rule(&api.app, &[("product_type", "'c'"), ("budget", "25")]);
    referral(&api, &["f1", "f2", "f3"]).await;
    let mut notes = Vec::new();
    for product in ["a", "b", "c"] {
        for friend in ["f1", "f2", "f3"] {
            let body = json!({"customer": {"key": friend}, "key": format!("{product}-{friend}"), "amount": 30, "product_type": product});
            let (status, answer) = api.post("/transactions", body).await;
            assert_eq!(status, 201, "{answer}");
            notes.push(
                reasons(&answer)
                    .into_iter()
                    .filter(|r| !r.starts_with("Only sales"))
                    .collect::<Vec<_>>(),
            );
        }
    }
    assert_eq!(rewards_of_rule(&api.app, total).len(), 2);
    assert_eq!(notes[2], ["The referrer reached this rule's limit of 2 rewards."]);
    assert_eq!(rewards_of_rule(&api.app, monthly).len(), 1);
    assert_eq!(
        notes[4],
        ["The referrer reached this rule's limit of 1 rewards this month."]
    );
    assert_eq!(rewards_of_rule(&api.app, budget).len(), 2);
    assert_eq!(
        notes[8],
        ["The rule's budget of 25.00 is spent; no reward for the referrer."]
    );
    // A voided reward frees its place: refunding one "a" sale lets the next one earn.
    assert_eq!(
        api.call(reqwest::Method::DELETE, "/transactions/a-f1", None)
            .await
            .0,
        200
    );
    let body = json!({"customer": {"key": "f3"}, "key": "a-again", "amount": 30, "product_type": "a"});
    let (_, answer) = api.post("/transactions", body).await;
    assert_eq!(answer["data"]["rewards"].as_array().unwrap().len(), 1, "{answer}");
}

#[apply(integration_test!)]
async fn limits_and_budget_hold_under_concurrent_sales() {
    let api = Api::spawn().await;
    let limited = add_rule(&api.app, &[("limit_per_referrer", "3")]);
    let budgeted = add_rule(&api.app, &[("budget", "40")]);
    let friends: Vec<String> = (0..10).map(|n| format!("friend{n}")).collect();
    referral(&api, &friends.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let answers = join_all(friends.iter().map(|friend| sale(&api, friend, friend, json!(10)))).await;
    assert!(answers.iter().all(|(status, _)| *status == 201), "{answers:?}");
    assert_eq!(rewards_of_rule(&api.app, limited).len(), 3);
    assert_eq!(rewards_of_rule(&api.app, budgeted).len(), 4);
}

/// The budget is a running total kept with the rewards: it holds under concurrent sales,
/// a denial or a void gives its amount back (and only that), and the total always equals
/// the sum of the rule's rewards that are not denied or voided.
#[apply(integration_test!)]
async fn a_budget_holds_under_concurrent_sales_and_after_denials() {
    let api = Api::spawn().await;
    let budgeted = add_rule(
        &api.app,
        &[("budget", "45"), ("hold_days", "14"), ("needs_approval", "true")],
    );
    let friends: Vec<String> = (0..24).map(|n| format!("friend{n}")).collect();
    referral(&api, &friends.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let counted = |app: &TestApp| -> BigDecimal {
        rewards_of_rule(app, budgeted)
            .iter()
            .filter(|reward| !matches!(reward.status, RewardStatus::Denied | RewardStatus::Voided))
            .map(|reward| reward.amount.clone())
            .sum()
    };
    let running = |app: &TestApp| -> BigDecimal {
        use referdesk::db::schema::reward_tallies;
        reward_tallies::table
            .filter(reward_tallies::rule_id.eq(budgeted))
            .filter(reward_tallies::status.ne_all(["denied", "voided"]))
            .select(diesel::dsl::sum(reward_tallies::amount))
            .get_result::<Option<BigDecimal>>(&mut app.conn())
            .unwrap()
            .unwrap_or_default()
    };

    let answers = join_all(
        friends[..8]
            .iter()
            .map(|friend| sale(&api, friend, friend, json!(10))),
    )
    .await;
    assert!(answers.iter().all(|(status, _)| *status == 201), "{answers:?}");
    let given = rewards_of_rule(&api.app, budgeted);
    assert_eq!(given.len(), 4, "four rewards of 10 fit a budget of 45");
    assert_eq!(counted(&api.app), dec("40"));
    assert_eq!(running(&api.app), dec("40"));

    // Two denials give 20 back: the next concurrent sales earn exactly two rewards.
    for reward in &given[..2] {
        let (status, answer) = api
            .post(&format!("/rewards/{}/deny", reward.id), json!({"reason": "test"}))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(running(&api.app), dec("20"));
    let answers = join_all(
        friends[8..16]
            .iter()
            .map(|friend| sale(&api, friend, friend, json!(10))),
    )
    .await;
    assert!(answers.iter().all(|(status, _)| *status == 201), "{answers:?}");
    assert_eq!(rewards_of_rule(&api.app, budgeted).len(), 6);
    assert_eq!(counted(&api.app), dec("40"));
    assert_eq!(running(&api.app), dec("40"));

    // A refund voids a pending reward: its 10 come back for one more sale, and no more.
    let pending = rewards_of_rule(&api.app, budgeted)
        .into_iter()
        .find(|reward| reward.status == RewardStatus::Pending || reward.status == RewardStatus::Approved)
        .expect("a reward not yet credited");
    let refunded = format!(
        "friend{}",
        friends
            .iter()
            .position(|f| customer_id(&api.app, f) == pending.friend_id)
            .unwrap()
    );
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/transactions/{refunded}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(running(&api.app), dec("30"));
    let answers = join_all(
        friends[16..]
            .iter()
            .map(|friend| sale(&api, friend, friend, json!(10))),
    )
    .await;
    assert!(answers.iter().all(|(status, _)| *status == 201), "{answers:?}");
    assert_eq!(rewards_of_rule(&api.app, budgeted).len(), 7);
    assert_eq!(counted(&api.app), dec("40"));
    assert_eq!(running(&api.app), dec("40"));
}

#[apply(integration_test!)]
async fn fifty_identical_concurrent_posts_book_one_transaction() {
    let api = Api::spawn().await;
    let rule = add_rule(&api.app, &[("friend_amount", "5")]);
    api.create(json!({"key": "ada", "email": "ada@example.com"}))
        .await;
    let body = json!({
        "customer": {"key": "newbie", "email": "newbie@example.com", "referring_customer": {"key": "ada"}},
        "key": "order-1", "amount": "42.50", "action": "subscription", "product_id": 7,
        "options": {"create_customer": true}
    });
    let answers = join_all((0..50).map(|_| api.post("/transactions", body.clone()))).await;
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(
        answers.iter().all(|(status, _)| *status == 201 || *status == 200),
        "{answers:?}"
    );
    let ids = |answer: &Value| -> Vec<Value> {
        answer["data"]["rewards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect()
    };
    let first = ids(&answers[0].1);
    assert_eq!(first.len(), 2);
    assert!(answers.iter().all(|(_, answer)| ids(answer) == first));
    assert_eq!(answers[0].1["data"]["product_id"], "7");
    let mut conn = api.app.conn();
    let booked: i64 = transactions::table.count().get_result(&mut conn).unwrap();
    let amount: BigDecimal = transactions::table
        .select(transactions::amount)
        .first(&mut conn)
        .unwrap();
    assert_eq!((booked, amount), (1, dec("42.50")));
    assert_eq!(rewards_of_rule(&api.app, rule).len(), 2);
    let referred: Option<i64> = customers::table
        .filter(customers::key.eq("newbie"))
        .select(customers::referrer_id)
        .first(&mut conn)
        .unwrap();
    assert_eq!(referred, Some(customer_id(&api.app, "ada")));
}

#[apply(integration_test!)]
async fn refunds_void_unpaid_rewards_and_reverse_credited_ones() {
    let api = Api::spawn().await;
    let rule = add_rule(&api.app, &[]);
    referral(&api, &["bob"]).await;
    for key in ["unpaid", "paid", "spent"] {
        assert_eq!(sale(&api, "bob", key, json!(100)).await.0, 201);
    }
    let [unpaid, paid, spent] = rewards_of_rule(&api.app, rule).try_into().unwrap();
    // Credited through the review flow: approved by an admin, their hold (none) over.
    let reviewer = Reviewer {
        actor: Actor::system(),
        is_admin: true,
    };
    for reward in [&paid, &spent] {
        let credited = review::decide(
            &mut api.app.conn(),
            reward.program_id,
            &reviewer,
            reward.id,
            &Decision::Approve,
            chrono::Utc::now(),
        )
        .unwrap();
        assert_eq!(credited.status, RewardStatus::Credited);
    }
    assert_eq!(balance(&api.app, "ada"), dec("20.00"));

    assert_eq!(
        api.call(reqwest::Method::DELETE, "/transactions/unpaid", None)
            .await,
        (200, json!({"status": 1}))
    );
    let reward = |id: i64| {
        rewards_of_rule(&api.app, rule)
            .into_iter()
            .find(|r| r.id == id)
            .unwrap()
    };
    assert_eq!(
        (reward(unpaid.id).status, reward(unpaid.id).void_reason.as_deref()),
        (RewardStatus::Voided, Some("The transaction was refunded."))
    );

    // Credited and covered by the balance: a reversing debit.
    api.call(reqwest::Method::DELETE, "/transactions/paid", None)
        .await;
    assert_eq!(
        reward(paid.id).reversal.map(|r| r.to_string()).as_deref(),
        Some("reversed")
    );
    assert_eq!(balance(&api.app, "ada"), dec("10.00"));
    let reversal_key: Option<String> = balance_transactions::table
        .filter(balance_transactions::kind.eq(Kind::Debit))
        .select(balance_transactions::idempotency_key)
        .first(&mut api.app.conn())
        .unwrap();
    assert_eq!(reversal_key, Some(format!("reward-reversal:{}", paid.id)));

    // Credited but spent: the reversal is owed, the balance never goes negative.
    let debit = NewEntry::parse("debit", "7", "USD", true, "spent", None).unwrap();
    ledger::book(
        &mut api.app.conn(),
        paid.program_id,
        customer_id(&api.app, "ada"),
        &Actor::system(),
        debit,
    )
    .unwrap();
    api.call(reqwest::Method::DELETE, "/transactions/spent", None)
        .await;
    let owed = reward(spent.id);
    assert_eq!(owed.reversal.map(|r| r.to_string()).as_deref(), Some("owed"));
    assert_eq!(
        (owed.status, owed.reversal_owed),
        (RewardStatus::Credited, Some(dec("10.00")))
    );
    assert_eq!(balance(&api.app, "ada"), dec("3.00"));
    // A second refund changes nothing.
    assert_eq!(
        api.call(reqwest::Method::DELETE, "/transactions/spent", None)
            .await
            .0,
        200
    );
    assert_eq!(balance(&api.app, "ada"), dec("3.00"));
    let (_, shown) = api.get("/transactions/spent").await;
    assert_eq!(shown["data"]["status"], "deleted");
}

#[apply(integration_test!)]
async fn archiving_voids_and_revoking_brings_the_same_reward_back() {
    let api = Api::spawn().await;
    let rule = add_rule(&api.app, &[("hold_days", "3")]);
    referral(&api, &["bob"]).await;
    sale(&api, "bob", "t1", json!(10)).await;
    let (status, archived) = api.post("/transactions/t1/archive", json!({})).await;
    assert_eq!(
        (status, archived["data"]["status"].clone()),
        (200, json!("archived"))
    );
    assert_eq!(archived["data"]["rewards"][0]["status"], "voided");
    assert_eq!(archived["data"]["rewarded"], json!(false));
    let (status, revived) = api.post("/transactions/t1/revoke-archive", json!({})).await;
    assert_eq!(
        (status, revived["data"]["status"].clone()),
        (200, json!("active"))
    );
    assert_eq!(revived["data"]["rewards"][0]["status"], "pending");
    assert_eq!(
        revived["data"]["rewards"][0]["id"],
        archived["data"]["rewards"][0]["id"]
    );
    assert_eq!(rewards_of_rule(&api.app, rule).len(), 1);
    // A refund is final.
    api.call(reqwest::Method::DELETE, "/transactions/t1", None).await;
    let (status, refused) = api.post("/transactions/t1/revoke-archive", json!({})).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(api.post("/transactions/t1/archive", json!({})).await.0, 422);
    assert_eq!(api.post("/transactions/nope/archive", json!({})).await.0, 404);
}

#[apply(integration_test!)]
async fn deleting_a_friend_voids_their_unpaid_rewards() {
    let api = Api::spawn().await;
    let rule = add_rule(&api.app, &[("friend_amount", "2")]);
    referral(&api, &["bob"]).await;
    sale(&api, "bob", "t1", json!(10)).await;
    assert_eq!(
        api.call(reqwest::Method::DELETE, "/customers/bob", None).await.0,
        200
    );
    let voided = rewards_of_rule(&api.app, rule);
    assert_eq!(voided.len(), 2);
    assert!(voided.iter().all(|r| r.status == RewardStatus::Voided
        && r.void_reason.as_deref() == Some("The referred customer was deleted.")));
    // A deleted customer books nothing.
    let (status, refused) = sale(&api, "bob", "t2", json!(10)).await;
    assert_eq!(status, 422, "{refused}");
}

#[apply(integration_test!)]
async fn fraud_signals_hold_rewards_for_review() {
    let api = Api::spawn().await;
    let rule = add_rule(
        &api.app,
        &[("trigger", "'customer_created'"), ("sale_scope", "NULL")],
    );
    diesel::update(programs::table.filter(programs::slug.eq("default")))
        .set(programs::rewards_max_referrals_per_hour.eq(2))
        .execute(&mut api.app.conn())
        .unwrap();
    api.create(json!({"key": "ada", "email": "Ada.Love@gmail.com"}))
        .await;
    let friends = [
        ("same", "adalove+friend@googlemail.com"),
        ("throwaway", "x@mailinator.com"),
        ("third", "third@example.com"),
    ];
    for (key, email) in friends {
        api.create(json!({"key": key, "email": email, "referring_customer": {"key": "ada"}}))
            .await;
    }
    let flags: Vec<(Vec<String>, bool)> = rewards_of_rule(&api.app, rule)
        .into_iter()
        .map(|reward| (reward.flags, reward.needs_approval))
        .collect();
    assert_eq!(
        flags,
        [
            (vec!["same_email".to_string()], true),
            (vec!["disposable_email".to_string()], true),
            (vec!["referral_velocity".to_string()], true),
        ]
    );
    let (_, earned) = api.get("/customers/ada/rewards").await;
    assert_eq!(earned["data"][0]["flags"], json!(["referral_velocity"]));
}

#[apply(integration_test!)]
async fn bad_transactions_are_refused_field_by_field_and_book_nothing() {
    let api = Api::spawn().await;
    referral(&api, &["bob"]).await;
    let cases = [
        (
            json!({"customer": {"key": "bob"}, "key": "k", "amount": 0}),
            "amount",
        ),
        (
            json!({"customer": {"key": "bob"}, "key": "k", "amount": -5}),
            "amount",
        ),
        (
            json!({"customer": {"key": "bob"}, "key": "k", "amount": 1.005}),
            "amount",
        ),
        (
            json!({"customer": {"key": "bob"}, "key": "k", "amount": "ten"}),
            "amount",
        ),
        (
            json!({"customer": {"key": "bob"}, "key": "k", "amount": 100000000.01}),
            "amount",
        ),
        (
            json!({"customer": {"key": "bob"}, "key": "k", "amount": true}),
            "amount",
        ),
        (
            json!({"customer": {"key": "bob"}, "key": "k", "amount": 5, "action": "gift"}),
            "action",
        ),
        (
            json!({"customer": {"key": "bob"}, "key": "k", "amount": 5, "amount_units": "gold"}),
            "amount_units",
        ),
        (json!({"customer": {"key": "bob"}, "amount": 5}), "key"),
        (json!({"key": "k", "amount": 5}), "customer"),
        (json!({"customer": "bob", "key": "k", "amount": 5}), "customer"),
        (
            json!({"customer": {"key": "nobody"}, "key": "k", "amount": 5}),
            "customer.key",
        ),
        (
            json!({"customer": {"key": "new one"}, "key": "k", "amount": 5, "options": {"create_customer": true}}),
            "customer.key",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = api.post("/transactions", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(answer["errors"][field].is_array(), "{body}: {answer}");
    }
    let booked: i64 = transactions::table
        .count()
        .get_result(&mut api.app.conn())
        .unwrap();
    assert_eq!(booked, 0);
    // Digits beyond what a float holds are read exactly (and refused, not rounded).
    let raw = r#"{"customer": {"key": "bob"}, "key": "k", "amount": 10.0000000000000000001}"#;
    let response = api
        .client
        .post(api.url("/transactions"))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let raw = r#"{"customer": {"key": "bob"}, "key": "k", "amount": 12345678.91}"#;
    let response = api
        .client
        .post(api.url("/transactions"))
        .bearer_auth(&api.token)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let stored: BigDecimal = transactions::table
        .select(transactions::amount)
        .first(&mut api.app.conn())
        .unwrap();
    assert_eq!(stored, dec("12345678.91"));
}

#[apply(integration_test!)]
async fn concurrent_first_sales_of_one_friend_reward_once() {
    let api = Api::spawn().await;
    let rule = add_rule(&api.app, &[("sale_scope", "'first'")]);
    referral(&api, &["bob"]).await;
    let keys: Vec<String> = (0..10).map(|n| format!("t{n}")).collect();
    let answers = join_all(keys.iter().map(|key| sale(&api, "bob", key, json!(10)))).await;
    assert!(answers.iter().all(|(status, _)| *status == 201), "{answers:?}");
    assert_eq!(rewards_of_rule(&api.app, rule).len(), 1);
    let noted = answers
        .iter()
        .filter(|(_, answer)| reasons(answer) == ["Only the friend's first sale counts."])
        .count();
    assert_eq!(noted, 9);
}

#[apply(integration_test!)]
async fn the_customer_is_named_by_key_id_or_email() {
    let api = Api::spawn().await;
    let bob = api
        .create(json!({"id": "user-7", "key": "bob", "email": "bob@example.com"}))
        .await;
    assert_eq!(bob["id"], "user-7");
    let named = [
        json!({"key": "bob"}),
        json!({"id": "user-7"}),
        json!({"email": "BOB@example.com"}),
    ];
    for (n, customer) in named.into_iter().enumerate() {
        let body = json!({"customer": customer, "key": format!("k{n}"), "amount": 1});
        let (status, answer) = api.post("/transactions", body).await;
        assert_eq!(
            (status, answer["data"]["customer"]["key"].clone()),
            (201, json!("bob")),
            "{answer}"
        );
        assert_eq!(answer["data"]["rewardable"], json!(false));
    }
}
