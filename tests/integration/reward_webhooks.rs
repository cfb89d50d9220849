//! The `transaction.*` and `reward.*` webhooks (and `balance.credited` from reward
//! credits): each change emits its event exactly once, in its own database transaction,
//! with `data` as the API shows the object; a refused or rolled-back change emits nothing.

use chrono::{Duration, Utc};
use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{webhook_events, webhook_subscriptions};
use referdesk::domain::rewards::credit::release_due;
use referdesk::domain::rewards::review::{self, Decision, Reviewer};
use referdesk::domain::{transactions, Actor};
use serde_json::{json, Value};

use crate::api::Api;
use crate::integration_test;
use crate::transactions::{add_rule, referral, sale};
use crate::webhooks::{events_of, subscribe};

/// The events emitted since `seen` of them were, by name, with their data.
struct Since {
    events: Vec<(String, Value)>,
}

impl Since {
    fn of(api: &Api, seen: usize) -> Since {
        let all: Vec<(String, Value)> = webhook_events::table
            .order(webhook_events::created_at)
            .select((webhook_events::event, webhook_events::data))
            .load(&mut api.app.conn())
            .unwrap();
        Since {
            events: all.into_iter().skip(seen).collect(),
        }
    }

    /// How many of each name, sorted, for one readable comparison.
    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.events.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        names
    }

    fn data(&self, name: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|(event, _)| event == name)
            .map(|(_, data)| data)
            .collect()
    }
}

fn seen(api: &Api) -> usize {
    events_of(&api.app).len()
}

/// The reward as `GET /v1/rewards` shows it now.
async fn listed(api: &Api, id: i64) -> Value {
    let (status, answer) = api.get("/rewards?limit=100").await;
    assert_eq!(status, 200, "{answer}");
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|reward| reward["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("reward {id} listed: {answer}"))
}

fn reward_of(api: &Api, transaction_key: &str) -> i64 {
    let sql = format!(
        "SELECT r.id FROM rewards r JOIN transactions t ON t.id = r.transaction_id WHERE t.key = '{transaction_key}'"
    );
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    diesel::sql_query(sql)
        .get_result::<Id>(&mut api.app.conn())
        .expect("one reward")
        .id
}

#[apply(integration_test!)]
async fn sales_reviews_refunds_and_archives_emit_their_events_once() {
    let api = Api::spawn().await;
    subscribe(&api.app, "http://127.0.0.1:9/all", &[]);
    add_rule(&api.app, &[("needs_approval", "true")]);
    referral(&api, &["bob"]).await;

    // A sale with a rule: the transaction and its reward, as the API shows them.
    let before = seen(&api);
    let (status, booked) = sale(&api, "bob", "s1", json!(100)).await;
    assert_eq!(status, 201, "{booked}");
    let since = Since::of(&api, before);
    assert_eq!(since.names(), ["reward.created", "transaction.created"]);
    let created = since.data("transaction.created")[0];
    for field in [
        "key",
        "amount",
        "status",
        "rewards",
        "rewarded",
        "reward_notes",
        "created_at",
    ] {
        assert_eq!(created[field], booked["data"][field], "{field}");
    }
    assert_eq!(created["customer"]["key"], "bob");
    let s1 = reward_of(&api, "s1");
    assert_eq!(since.data("reward.created")[0], &listed(&api, s1).await);

    // The same request again is a replay: nothing new.
    let before = seen(&api);
    assert_eq!(sale(&api, "bob", "s1", json!(100)).await.0, 200);
    assert_eq!(Since::of(&api, before).names(), Vec::<&str>::new());

    // Approved with its hold over: approved, paid and the balance credited.
    let before = seen(&api);
    let (status, approved) = api.post(&format!("/rewards/{s1}/approve"), json!({})).await;
    assert_eq!(status, 200, "{approved}");
    let since = Since::of(&api, before);
    assert_eq!(
        since.names(),
        ["balance.credited", "reward.approved", "reward.paid"]
    );
    assert_eq!(since.data("reward.paid")[0], &approved["data"]);
    assert_eq!(since.data("reward.paid")[0], &listed(&api, s1).await);
    assert_eq!(since.data("reward.approved")[0]["status"], "approved");
    // Approving it again is refused and emits nothing.
    let before = seen(&api);
    assert_eq!(
        api.post(&format!("/rewards/{s1}/approve"), json!({})).await.0,
        422
    );
    assert_eq!(Since::of(&api, before).names(), Vec::<&str>::new());

    // Denied.
    assert_eq!(sale(&api, "bob", "s2", json!(100)).await.0, 201);
    let s2 = reward_of(&api, "s2");
    let before = seen(&api);
    let (status, denied) = api
        .post(&format!("/rewards/{s2}/deny"), json!({"reason": "Test order"}))
        .await;
    assert_eq!(status, 200, "{denied}");
    let since = Since::of(&api, before);
    assert_eq!(since.names(), ["reward.denied"]);
    assert_eq!(since.data("reward.denied")[0], &denied["data"]);

    // Refunded: the transaction deleted, its unpaid reward voided.
    assert_eq!(sale(&api, "bob", "s3", json!(100)).await.0, 201);
    let s3 = reward_of(&api, "s3");
    let before = seen(&api);
    assert_eq!(
        api.call(reqwest::Method::DELETE, "/transactions/s3", None)
            .await
            .0,
        200
    );
    let since = Since::of(&api, before);
    assert_eq!(since.names(), ["reward.voided", "transaction.deleted"]);
    assert_eq!(since.data("transaction.deleted")[0]["status"], "deleted");
    assert_eq!(since.data("reward.voided")[0], &listed(&api, s3).await);
    // A second refund changes nothing and emits nothing.
    let before = seen(&api);
    assert_eq!(
        api.call(reqwest::Method::DELETE, "/transactions/s3", None)
            .await
            .0,
        200
    );
    assert_eq!(Since::of(&api, before).names(), Vec::<&str>::new());

    // Archived, then restored: updated each time; the voided reward comes back.
    assert_eq!(sale(&api, "bob", "s4", json!(100)).await.0, 201);
    let before = seen(&api);
    assert_eq!(api.post("/transactions/s4/archive", json!({})).await.0, 200);
    let since = Since::of(&api, before);
    assert_eq!(since.names(), ["reward.voided", "transaction.updated"]);
    assert_eq!(since.data("transaction.updated")[0]["status"], "archived");
    let before = seen(&api);
    assert_eq!(
        api.post("/transactions/s4/revoke-archive", json!({})).await.0,
        200
    );
    let since = Since::of(&api, before);
    assert_eq!(since.names(), ["reward.created", "transaction.updated"]);
    assert_eq!(since.data("transaction.updated")[0]["status"], "active");
    assert_eq!(since.data("reward.created")[0]["status"], "pending");

    // A refund whose transaction rolls back emits nothing.
    let program = api.app.default_program();
    let before = seen(&api);
    let rolled_back = api
        .app
        .conn()
        .transaction::<(), referdesk::error::Error, _>(|conn| {
            transactions::refund(conn, &program, &Actor::system(), "s4")?;
            Err(referdesk::error::Error::NotFound)
        });
    assert!(rolled_back.is_err());
    assert_eq!(Since::of(&api, before).names(), Vec::<&str>::new());

    // Deleting the friend voids the reward they brought, still unpaid.
    let before = seen(&api);
    assert_eq!(
        api.call(reqwest::Method::DELETE, "/customers/bob", None).await.0,
        200
    );
    let since = Since::of(&api, before);
    assert_eq!(since.names(), ["customer.deleted", "reward.voided"]);
    assert_eq!(since.data("reward.voided")[0]["transaction"], "s4");
    assert_eq!(since.data("reward.voided")[0]["status"], "voided");

    // Without subscriptions, nothing is written at all.
    diesel::delete(webhook_subscriptions::table)
        .execute(&mut api.app.conn())
        .unwrap();
    let before = seen(&api);
    api.create(json!({"key": "cy", "referring_customer": {"key": "ada"}}))
        .await;
    assert_eq!(sale(&api, "cy", "s6", json!(100)).await.0, 201);
    assert_ne!(reward_of(&api, "s6"), 0);
    assert_eq!(Since::of(&api, before).names(), Vec::<&str>::new());
}

#[apply(integration_test!)]
async fn the_hold_release_and_bulk_approvals_announce_every_credit() {
    let api = Api::spawn().await;
    subscribe(&api.app, "http://127.0.0.1:9/all", &[]);
    let held = add_rule(&api.app, &[("hold_days", "3")]);
    referral(&api, &["bob", "cy"]).await;
    assert_eq!(sale(&api, "bob", "b1", json!(100)).await.0, 201);
    assert_eq!(sale(&api, "cy", "c1", json!(100)).await.0, 201);

    // Nothing is due yet.
    let before = seen(&api);
    assert_eq!(release_due(&mut api.app.conn(), Utc::now()).unwrap().credited, 0);
    assert_eq!(Since::of(&api, before).names(), Vec::<&str>::new());

    // Four days later both are credited: one reward.paid and one balance.credited each.
    let later = Utc::now() + Duration::days(4);
    assert_eq!(release_due(&mut api.app.conn(), later).unwrap().credited, 2);
    let since = Since::of(&api, before);
    assert_eq!(
        since.names(),
        [
            "balance.credited",
            "balance.credited",
            "reward.paid",
            "reward.paid"
        ]
    );
    for (key, id) in [("b1", reward_of(&api, "b1")), ("c1", reward_of(&api, "c1"))] {
        let listed = listed(&api, id).await;
        assert_eq!(listed["status"], "credited", "{key}");
        assert!(since.data("reward.paid").contains(&&listed), "{key}: {listed}");
    }
    assert!(since
        .data("balance.credited")
        .iter()
        .all(|credit| credit["customer"]["key"] == "ada" && credit["amount"] == 10.0));

    // A bulk approval of rewards out of hold (the held rule off): approved and paid, each once.
    diesel::sql_query(format!(
        "UPDATE reward_rules SET enabled = false WHERE id = {held}"
    ))
    .execute(&mut api.app.conn())
    .unwrap();
    add_rule(&api.app, &[("needs_approval", "true")]);
    assert_eq!(sale(&api, "bob", "b2", json!(100)).await.0, 201);
    assert_eq!(sale(&api, "cy", "c2", json!(100)).await.0, 201);
    let ids = [reward_of(&api, "b2"), reward_of(&api, "c2")];
    let reviewer = Reviewer {
        actor: Actor::system(),
        is_admin: true,
    };
    let program = api.app.default_program();
    let before = seen(&api);
    let outcome = review::decide_many(
        &mut api.app.conn(),
        program.id,
        &reviewer,
        &ids,
        &Decision::Approve,
        Utc::now(),
    )
    .unwrap();
    assert_eq!(outcome.credited, 2);
    let since = Since::of(&api, before);
    assert_eq!(
        since.names(),
        [
            "balance.credited",
            "balance.credited",
            "reward.approved",
            "reward.approved",
            "reward.paid",
            "reward.paid"
        ]
    );
    // A bulk decision refused as a whole emits nothing.
    let before = seen(&api);
    let refused = review::decide_many(
        &mut api.app.conn(),
        program.id,
        &reviewer,
        &ids,
        &Decision::Approve,
        Utc::now(),
    );
    assert!(refused.is_err());
    assert_eq!(Since::of(&api, before).names(), Vec::<&str>::new());
}
