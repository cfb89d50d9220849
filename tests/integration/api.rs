//! The `/v1` API, replaying the request shapes of the original service's clients.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, balance_transactions, customers, programs};
use referdesk::domain::team::Role;
use referdesk::domain::{tokens, Actor};
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::integration_test;

/// A token-bearing client of the default program (also used by other areas' tests).
pub(crate) struct Api {
    pub(crate) app: TestApp,
    pub(crate) token: String,
    pub(crate) client: reqwest::Client,
}

fn new_token(app: &TestApp, slug: &str) -> String {
    let mut conn = app.conn();
    let program_id: i64 = programs::table
        .filter(programs::slug.eq(slug))
        .select(programs::id)
        .first(&mut conn)
        .unwrap();
    tokens::create(&mut conn, program_id, "tests", &Actor::system())
        .unwrap()
        .1
}

impl Api {
    pub(crate) async fn spawn() -> Api {
        let app = TestApp::spawn().await;
        let token = new_token(&app, "default");
        Api {
            app,
            token,
            client: reqwest::Client::new(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/v1{}", self.app.address, path)
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{path}"
        );
        (status, response.json().await.unwrap())
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn create(&self, body: Value) -> Value {
        let (status, answer) = self.post("/customers", body).await;
        assert_eq!(status, 201, "{answer}");
        answer["data"].clone()
    }
}

#[apply(integration_test!)]
async fn create_get_and_list_have_the_original_shapes() {
    let api = Api::spawn().await;
    let created = api
        .create(json!({
            "id": "user-1", "key": "ada-key", "email": "ada@example.com", "name": "Ada", "surname": "Lovelace",
            "metadata": {"date_of_birth": "1990-12-10"}, "unknown_field": "ignored"
        }))
        .await;
    for field in [
        "id",
        "email",
        "name",
        "surname",
        "status",
        "approved",
        "referring_customer",
        "referrals_count",
        "metadata",
        "referral_link",
        "referral_links",
        "custom_fields",
        "created_at",
        "updated_at",
    ] {
        assert!(created.get(field).is_some(), "customer has {field}: {created}");
    }
    assert_eq!(created["id"], "user-1");
    assert_eq!(created["status"], "active");
    assert_eq!(created["approved"], true);
    assert_eq!(created["referring_customer"], Value::Null);
    assert_eq!(created["referrals_count"], 0);
    assert_eq!(created["metadata"]["date_of_birth"], "1990-12-10");
    assert_eq!(created["referral_link"], "https://example.com/?ref=ada-key");
    assert_eq!(
        created["referral_links"][0]["url"],
        "https://example.com/?ref=ada-key"
    );
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    // Key and id are generated when absent: short, URL-safe, not counters.
    let generated = api.create(json!({"email": "grace@example.com"})).await;
    let key = generated["key"].as_str().unwrap();
    assert!(
        key.len() >= 8
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{key}"
    );
    assert!(!generated["id"].as_str().unwrap().is_empty());

    let (status, list) = api.get("/customers").await;
    assert_eq!(status, 200);
    assert_eq!(list["status"], 1);
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    for link in ["first", "last", "prev", "next"] {
        assert!(list["links"].get(link).is_some(), "links.{link}");
    }
    for meta in ["current_page", "from", "to", "per_page", "path"] {
        assert!(list["meta"].get(meta).is_some(), "meta.{meta}");
    }
    assert_eq!(list["meta"]["per_page"], 15);
    assert_eq!(list["meta"]["from"], 1);
    assert_eq!(list["meta"]["to"], 2);

    // Every change by a token is audited under the token's name.
    let label: String = audit_events::table
        .filter(audit_events::actor_token_id.is_not_null())
        .select(audit_events::actor_label)
        .first(&mut api.app.conn())
        .unwrap();
    assert!(label.contains("tests"), "{label}");
}

#[apply(integration_test!)]
async fn referred_customers_count_and_unknown_referrers_are_refused() {
    let api = Api::spawn().await;
    api.create(json!({"id": "ref-1", "key": "referrer"})).await;
    let referred = api
        .create(json!({"email": "friend@example.com", "referring_customer": {"key": "referrer"}}))
        .await;
    assert_eq!(referred["referring_customer"]["key"], "referrer");
    assert_eq!(referred["referring_customer"]["id"], "ref-1");
    // The answer to a create is built from what the signup wrote; it is exactly what
    // reading the customer back gives.
    let (_, read_back) = api
        .get(&format!("/customers/{}", referred["id"].as_str().unwrap()))
        .await;
    assert_eq!(read_back["data"], referred);
    // id wins over key when both are given.
    api.create(json!({"id": "ref-2", "key": "other"})).await;
    let by_id = api
        .create(json!({"referring_customer": {"id": "ref-2", "key": "referrer"}}))
        .await;
    assert_eq!(by_id["referring_customer"]["id"], "ref-2");
    let (_, referrer) = api.get("/customers/ref-1").await;
    assert_eq!(referrer["data"]["referrals_count"], 1);

    let before: i64 = customers::table.count().get_result(&mut api.app.conn()).unwrap();
    let (status, answer) = api
        .post(
            "/customers",
            json!({"email": "x@example.com", "referring_customer": {"key": "nobody"}}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(answer["errors"]["referring_customer.key"].is_array(), "{answer}");
    // Self-referral is impossible: a customer cannot name itself as referrer.
    let (status, _) = api
        .post(
            "/customers",
            json!({"key": "selfie", "referring_customer": {"key": "selfie"}}),
        )
        .await;
    assert_eq!(status, 422);
    let after: i64 = customers::table.count().get_result(&mut api.app.conn()).unwrap();
    assert_eq!(before, after, "nothing was created");
}

#[apply(integration_test!)]
async fn duplicates_are_422_naming_the_field() {
    let api = Api::spawn().await;
    api.create(json!({"id": "u1", "key": "k1", "email": "Dup@Example.com"}))
        .await;
    let (status, answer) = api.post("/customers", json!({"key": "k1"})).await;
    assert_eq!(status, 422);
    assert!(answer["errors"]["key"].is_array(), "{answer}");
    let (status, answer) = api.post("/customers", json!({"email": "dup@example.com"})).await;
    assert_eq!(status, 422);
    assert!(answer["errors"]["email"].is_array(), "{answer}");
    let (status, answer) = api.post("/customers", json!({"id": "u1"})).await;
    assert_eq!(status, 422);
    assert!(answer["errors"]["id"].is_array(), "{answer}");
    assert!(answer["message"].is_string());

    // With a referrer (by id or by key), every taken field is reported, nothing is created
    // and the referrer's count stays.
    for referrer in [json!({"id": "u1"}), json!({"key": "k1"})] {
        let (status, answer) = api
            .post(
                "/customers",
                json!({"id": "u1", "key": "k1", "email": "DUP@example.com", "referring_customer": referrer}),
            )
            .await;
        assert_eq!(status, 422, "{answer}");
        for field in ["id", "key", "email"] {
            assert!(answer["errors"][field].is_array(), "{field}: {answer}");
        }
    }
    let (_, referrer) = api.get("/customers/u1").await;
    assert_eq!(referrer["data"]["referrals_count"], 0);
    // A deleted referrer is refused next to its field, with the other fields' messages.
    let (status, _) = api.call(reqwest::Method::DELETE, "/customers/u1", None).await;
    assert_eq!(status, 200);
    let (status, answer) = api
        .post(
            "/customers",
            json!({"email": "dup@example.com", "referring_customer": {"id": "u1"}}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["errors"]["email"].is_array(), "{answer}");
    assert!(
        answer["errors"]["referring_customer.id"]
            .to_string()
            .contains("deleted"),
        "{answer}"
    );
    let count: i64 = customers::table.count().get_result(&mut api.app.conn()).unwrap();
    assert_eq!(count, 1, "nothing was created");
}

#[apply(integration_test!)]
async fn wrong_types_are_422_naming_the_field() {
    let api = Api::spawn().await;
    let cases = [
        (json!({"email": 12}), "email"),
        (json!({"name": ["a"]}), "name"),
        (json!({"surname": {"x": 1}}), "surname"),
        (json!({"key": true}), "key"),
        (json!({"metadata": "1990-01-01"}), "metadata"),
        (
            json!({"metadata": {"date_of_birth": 19900101}}),
            "metadata.date_of_birth",
        ),
        (
            json!({"metadata": {"date_of_birth": "2999-01-01"}}),
            "metadata.date_of_birth",
        ),
        (json!({"referring_customer": "abc"}), "referring_customer"),
        (
            json!({"referring_customer": {"key": []}}),
            "referring_customer.key",
        ),
        (json!({"email": "not an email"}), "email"),
    ];
    for (body, field) in cases {
        let (status, answer) = api.post("/customers", body.clone()).await;
        assert_eq!(status, 422, "{body}");
        assert!(answer["errors"][field].is_array(), "{body} → {answer}");
    }
    let (status, answer) = api.post("/customers/nobody/balance/credit", json!({})).await;
    assert!(status == 422 || status == 404, "{answer}");
    api.create(json!({"id": "c1"})).await;
    let (status, answer) = api
        .post(
            "/customers/c1/balance/credit",
            json!({"amount": "ten", "amount_units": 5, "is_currency": "maybe"}),
        )
        .await;
    assert_eq!(status, 422);
    for field in ["amount_units", "is_currency"] {
        assert!(answer["errors"][field].is_array(), "{field}: {answer}");
    }
    let (status, answer) = api
        .post(
            "/customers/c1/balance/credit",
            json!({"amount": "ten", "amount_units": "USD", "is_currency": true}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(answer["errors"]["amount"].is_array(), "{answer}");
    // Not JSON at all: a clear 400, never a 500.
    let response = api
        .client
        .post(api.url("/customers"))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[apply(integration_test!)]
async fn list_paging_parameters_are_validated() {
    let api = Api::spawn().await;
    for n in 0..3 {
        api.create(json!({"id": format!("p{n}")})).await;
    }
    for (query, expected) in [
        ("limit=0", 422),
        ("limit=1", 200),
        ("limit=250", 200),
        ("limit=251", 422),
        ("limit=abc", 422),
        ("page=0", 422),
        ("page=-1", 422),
        ("page=999999999", 200),
    ] {
        let (status, answer) = api.get(&format!("/customers?{query}")).await;
        assert_eq!(status, expected, "{query}: {answer}");
    }
    let (_, answer) = api.get("/customers?limit=1&page=2").await;
    assert_eq!(answer["data"].as_array().unwrap().len(), 1);
    assert_eq!(answer["meta"]["current_page"], 2);
    assert!(answer["links"]["next"].as_str().unwrap().contains("limit=1"));
    assert!(answer["links"]["prev"].as_str().unwrap().contains("page=1"));
    let (_, answer) = api.get("/customers?page=999999999").await;
    assert_eq!(answer["data"].as_array().unwrap().len(), 0);
    assert_eq!(answer["links"]["next"], Value::Null);
}

#[apply(integration_test!)]
async fn refer_status_filters_and_rejects_unknown_values() {
    let api = Api::spawn().await;
    api.create(json!({"id": "r", "key": "r"})).await;
    api.create(json!({"id": "f", "referring_customer": {"key": "r"}}))
        .await;
    let (_, referred) = api.get("/customers?refer_status=referred").await;
    let ids: Vec<&str> = referred["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["f"]);
    let (_, non) = api.get("/customers?refer_status=non_referred").await;
    let ids: Vec<&str> = non["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r"]);
    let (status, answer) = api.get("/customers?refer_status=maybe").await;
    assert_eq!(status, 422);
    assert!(answer["errors"]["refer_status"].is_array());
}

#[apply(integration_test!)]
async fn get_by_id_key_or_email_and_search() {
    let api = Api::spawn().await;
    api.create(json!({"id": "id-7", "key": "key-7", "email": "seven@example.com"}))
        .await;
    for ident in ["id-7", "key-7", "seven@example.com", "SEVEN@example.com"] {
        let (status, answer) = api.get(&format!("/customers/{ident}")).await;
        assert_eq!(status, 200, "{ident}");
        assert_eq!(answer["data"]["id"], "id-7");
    }
    let (status, answer) = api.get("/customers/nobody").await;
    assert_eq!(status, 404);
    assert_eq!(answer, json!({"message": "Not found."}));

    for query in ["key=key-7", "id=id-7", "email=seven@example.com"] {
        let (status, answer) = api.get(&format!("/customers:search?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(answer["data"][0]["id"], "id-7", "{query}");
        assert!(answer["meta"].is_object());
    }
    let (_, answer) = api.get("/customers:search?key=none").await;
    assert_eq!(answer["data"].as_array().unwrap().len(), 0);
    let (status, _) = api.get("/customers:search").await;
    assert_eq!(status, 422);
}

#[apply(integration_test!)]
async fn updates_in_all_three_forms_and_key_change_moves_the_link() {
    let api = Api::spawn().await;
    api.create(json!({"id": "u", "key": "old-key", "email": "u@example.com", "name": "Old"}))
        .await;
    let (status, answer) = api
        .put(
            "/customers/u",
            json!({"update": {"name": "Nested", "key": "new-key"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["name"], "Nested");
    assert_eq!(
        answer["data"]["referral_link"],
        "https://example.com/?ref=new-key"
    );
    let (status, answer) = api
        .put("/customers", json!({"id": "u", "update": {"surname": "Body"}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["surname"], "Body");
    let (status, answer) = api
        .put(
            "/customers/new-key",
            json!({"email": "flat@example.com", "metadata": {"date_of_birth": "1980-02-29"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["email"], "flat@example.com");
    assert_eq!(answer["data"]["metadata"]["date_of_birth"], "1980-02-29");
    let (status, answer) = api.put("/customers/u", json!({"update": {"email": "bad"}})).await;
    assert_eq!(status, 422);
    assert!(
        answer["errors"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.ends_with("email")),
        "{answer}"
    );
    let (status, _) = api.put("/customers", json!({"update": {"name": "x"}})).await;
    assert_eq!(status, 422, "the body form needs an id");
    let (status, _) = api
        .put("/customers/nobody", json!({"update": {"name": "x"}}))
        .await;
    assert_eq!(status, 404);
}

#[apply(integration_test!)]
async fn delete_is_soft_and_leaves_default_lists() {
    let api = Api::spawn().await;
    api.create(json!({"id": "gone"})).await;
    let (status, answer) = api.call(reqwest::Method::DELETE, "/customers/gone", None).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"status": 1}));
    let (status, answer) = api.get("/customers/gone").await;
    assert_eq!(status, 200);
    assert_eq!(answer["data"]["status"], "deleted");
    let (_, list) = api.get("/customers").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let rows: i64 = customers::table.count().get_result(&mut api.app.conn()).unwrap();
    assert_eq!(rows, 1, "the row stays");
}

#[apply(integration_test!)]
async fn credit_with_idempotency_key_books_once() {
    let api = Api::spawn().await;
    api.create(json!({"id": "c"})).await;
    let credit = || async {
        let response = api
            .client
            .post(api.url("/customers/c/balance/credit"))
            .bearer_auth(&api.token)
            .header("Idempotency-Key", "order-1")
            .json(&json!({"amount": 10.5, "amount_units": "USD", "is_currency": true}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (first, answer) = credit().await;
    assert_eq!(first, 201, "{answer}");
    assert_eq!(answer["data"]["balance"]["currency"][0]["amount"], 10.5);
    let (second, answer) = credit().await;
    assert_eq!(second, 200);
    assert_eq!(answer["data"]["balance"]["currency"][0]["amount"], 10.5);
    let booked: i64 = balance_transactions::table
        .count()
        .get_result(&mut api.app.conn())
        .unwrap();
    assert_eq!(booked, 1);
    for amount in [json!(0), json!(-1), json!(1.001), json!(1e9), json!("abc")] {
        let (status, answer) = api
            .post(
                "/customers/c/balance/credit",
                json!({"amount": amount, "amount_units": "USD", "is_currency": true}),
            )
            .await;
        assert_eq!(status, 422, "{amount}: {answer}");
    }
    let booked: i64 = balance_transactions::table
        .count()
        .get_result(&mut api.app.conn())
        .unwrap();
    assert_eq!(booked, 1);
}

#[apply(integration_test!)]
async fn balance_stats_transactions_and_referrals() {
    let api = Api::spawn().await;
    api.create(json!({"id": "r", "key": "rk"})).await;
    api.create(json!({"id": "f1", "referring_customer": {"id": "r"}}))
        .await;
    api.create(json!({"id": "f2", "referring_customer": {"id": "r"}}))
        .await;
    api.post(
        "/customers/r/balance/credit",
        json!({"amount": 5, "amount_units": "USD", "is_currency": true}),
    )
    .await;
    api.post(
        "/customers/r/balance/credit",
        json!({"amount": "2.25", "amount_units": "USD", "is_currency": true}),
    )
    .await;
    api.post(
        "/customers/r/balance/credit",
        json!({"amount": 100, "amount_units": "points", "is_currency": false}),
    )
    .await;

    let (status, balance) = api.get("/customers/r/balance").await;
    assert_eq!(status, 200);
    assert_eq!(balance["data"]["customer"]["id"], "r");
    let currency = balance["data"]["balance"]["currency"].as_array().unwrap();
    let usd = currency.iter().find(|b| b["amount_units"] == "USD").unwrap();
    assert_eq!(usd["amount"], 7.25);
    assert_eq!(usd["is_currency"], true);
    let points = currency.iter().find(|b| b["amount_units"] == "points").unwrap();
    assert_eq!(points["amount"], 100.0);

    let (_, stats) = api.get("/customers/r/stats").await;
    assert_eq!(stats["data"]["signups"], 2);
    assert_eq!(stats["data"]["clicks"], 0);
    assert!(stats["data"]["credits"].as_array().unwrap().len() == 2);

    let (_, ledger) = api.get("/customers/r/transactions?limit=2").await;
    assert_eq!(ledger["data"].as_array().unwrap().len(), 2);
    assert_eq!(ledger["meta"]["total"], 3);
    assert_eq!(ledger["data"][0]["amount_units"], "points", "newest first");

    let (_, referrals) = api.get("/customers/r/referrals").await;
    let ids: Vec<&str> = referrals["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"f1") && ids.contains(&"f2"));
}

#[apply(integration_test!)]
async fn invite_queues_an_email() {
    let api = Api::spawn().await;
    let (status, answer) = api
        .post(
            "/customers:invite",
            json!({"email": "new@example.com", "name": "Nia", "personalization": {"discount": "10%"}}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["data"]["email"], "new@example.com");
    assert!(["queued", "sent"].contains(&answer["data"]["status"].as_str().unwrap()));
    let (status, answer) = api.post("/customers:invite", json!({"name": "No email"})).await;
    assert_eq!(status, 422);
    assert!(answer["errors"]["email"].is_array());
    let (status, answer) = api
        .post(
            "/customers:invite",
            json!({"email": "x@example.com", "personalization": [1]}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(answer["errors"]["personalization"].is_array(), "{answer}");
}

#[apply(integration_test!)]
async fn tokens_are_checked_and_scoped_to_their_program() {
    let api = Api::spawn().await;
    api.create(json!({"id": "in-a", "key": "in-a"})).await;
    diesel::insert_into(programs::table)
        .values((
            programs::slug.eq("b"),
            programs::name.eq("B"),
            programs::referral_base_url.eq("https://b.example/"),
        ))
        .execute(&mut api.app.conn())
        .unwrap();
    let token_b = new_token(&api.app, "b");
    let b = reqwest::Client::new();
    let response = b
        .get(api.url("/customers/in-a"))
        .bearer_auth(&token_b)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = b
        .get(api.url("/customers"))
        .bearer_auth(&token_b)
        .send()
        .await
        .unwrap();
    let list: Value = response.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer rd_000"),
    ] {
        let mut request = b.get(api.url("/customers"));
        if let Some(value) = auth {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].is_string());
    }

    // A bad body, query or header is answered only to a known caller: without a valid
    // token every call is a 401 and changes nothing, whatever else is wrong with it.
    let broken = [
        (reqwest::Method::POST, "/customers", "not json"),
        (
            reqwest::Method::POST,
            "/customers",
            r#"{"email": 5, "referring_customer": []}"#,
        ),
        (reqwest::Method::PUT, "/customers", r#"{"name": "no id"}"#),
        (
            reqwest::Method::PUT,
            "/customers/in-a",
            r#"{"email": "not an address"}"#,
        ),
        (
            reqwest::Method::POST,
            "/customers/in-a/balance/credit",
            r#"{"amount": "x"}"#,
        ),
        (reqwest::Method::POST, "/customers:invite", "[]"),
        (reqwest::Method::GET, "/customers?limit=-1&refer_status=maybe", ""),
        (reqwest::Method::GET, "/customers:search", ""),
    ];
    for (method, path, body) in &broken {
        for token in [Some("rd_not-a-token"), None] {
            let mut request = b
                .request(method.clone(), api.url(path))
                .header("content-type", "application/json")
                .body(body.to_string());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} {body} with {token:?}");
        }
        // The same call with a valid token is told what is wrong with it.
        let response = b
            .request(method.clone(), api.url(path))
            .bearer_auth(&api.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            [400, 422].contains(&response.status().as_u16()),
            "{method} {path} {body}: {}",
            response.status()
        );
    }
    let customers: i64 = customers::table.count().get_result(&mut api.app.conn()).unwrap();
    assert_eq!(customers, 1, "only the customer created above");
    let credits: i64 = balance_transactions::table
        .count()
        .get_result(&mut api.app.conn())
        .unwrap();
    assert_eq!(credits, 0);
}

#[apply(integration_test!)]
async fn errors_are_json_with_the_exact_content_type() {
    let api = Api::spawn().await;
    let client = &api.client;
    let patch = client
        .patch(api.url("/customers"))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 405);
    assert_eq!(patch.headers()["content-type"], "application/json");
    let missing = client
        .get(api.url("/nothing-here"))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/json");
    let huge = client
        .post(api.url("/customers"))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "x".repeat(200_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(huge.headers()["content-type"], "application/json");
}

#[apply(integration_test!)]
async fn requests_beyond_the_rate_get_429() {
    let mut config = crate::helpers::test_config(&crate::helpers::fresh_database());
    config.api_rate_per_minute = 3;
    let app = TestApp::spawn_with(config).await;
    let token = new_token(&app, "default");
    let client = reqwest::Client::new();
    let url = format!("{}/v1/customers", app.address);
    for _ in 0..3 {
        assert_eq!(
            client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.headers()["content-type"], "application/json");
}

/// The whole secret shown on a page, if any (lists show the first characters only).
fn secret_in(html: &str) -> Option<String> {
    html.match_indices("rd_").find_map(|(at, _)| {
        let secret: String = html[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        (secret.len() == 43).then_some(secret)
    })
}

fn live_tokens(app: &TestApp) -> Vec<String> {
    use referdesk::db::schema::api_tokens;
    api_tokens::table
        .filter(api_tokens::revoked_at.is_null())
        .select(api_tokens::name)
        .order(api_tokens::id)
        .load(&mut app.conn())
        .unwrap()
}

/// Creating a token answers with a redirect (post/redirect/get); the page it leads to
/// shows the secret once, and a reload shows it no more and creates nothing.
#[apply(integration_test!)]
async fn token_page_shows_the_token_once_and_revokes() {
    use referdesk::db::schema::api_tokens;
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let (_, form) = app.browser.get_html("/api-tokens").await;
    let form_token = crate::helpers::form_token_in(&form).expect("the form has a one-time token");
    let response = app
        .post_form(
            "/api-tokens",
            &[("name", "Signup backend"), ("form_token", &form_token)],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(crate::helpers::location(&response), "/api-tokens");
    let (status, shown) = app.browser.get_html("/api-tokens").await;
    assert_eq!(status, 200);
    let secret = secret_in(&shown).expect("the token is shown");
    assert!(shown.contains("Token &#34;Signup backend&#34; created") || shown.contains("Signup backend"));
    let client = reqwest::Client::new();
    let url = format!("{}/v1/customers", app.address);
    let status_with = |secret: String| {
        let request = client.get(&url).bearer_auth(secret);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status_with(secret.clone()).await, 200);

    // A reload of the page shows the list, not the secret, and creates nothing.
    let (_, list) = app.browser.get_html("/api-tokens").await;
    assert!(list.contains("Signup backend"));
    assert!(!list.contains(&secret), "the secret is shown once");
    assert_eq!(secret_in(&list), None, "{list}");
    assert_eq!(live_tokens(&app), vec!["Signup backend".to_string()]);

    // The same form sent again (the back button and a re-post) creates no second token.
    let response = app
        .post_form(
            "/api-tokens",
            &[("name", "Signup backend"), ("form_token", &form_token)],
        )
        .await;
    assert_eq!(response.status(), 303);
    let (_, page) = app.browser.get_html("/api-tokens").await;
    assert!(page.contains("This form was already submitted"), "{page}");
    assert_eq!(secret_in(&page), None);
    assert_eq!(live_tokens(&app), vec!["Signup backend".to_string()]);

    // A second live token of the same name, whatever its case, is refused next to the field.
    let fresh = crate::helpers::form_token_in(&page).unwrap();
    assert_ne!(fresh, form_token, "every form has its own token");
    let response = app
        .post_form(
            "/api-tokens",
            &[("name", " signup BACKEND "), ("form_token", &fresh)],
        )
        .await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(body.contains("already named"), "{body}");
    assert!(body.contains("has-error"), "the message is at the field");
    assert_eq!(live_tokens(&app).len(), 1);

    // The revoke confirmation names the token and the day it was made.
    let (id, created_at): (i64, chrono::DateTime<chrono::Utc>) = api_tokens::table
        .select((api_tokens::id, api_tokens::created_at))
        .first(&mut app.conn())
        .unwrap();
    let confirm = format!(
        "data-confirm=\"Revoke the token “Signup backend”, created {}?",
        created_at.format("%Y-%m-%d %H:%M")
    );
    assert!(page.contains(&confirm), "{confirm} in {page}");
    let response = app.post_form(&format!("/api-tokens/{id}/revoke"), &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(status_with(secret).await, 401);

    // A revoked token's name may be given again.
    let (_, page) = app.browser.get_html("/api-tokens").await;
    let fresh = crate::helpers::form_token_in(&page).unwrap();
    let response = app
        .post_form(
            "/api-tokens",
            &[("name", "Signup backend"), ("form_token", &fresh)],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(live_tokens(&app), vec!["Signup backend".to_string()]);

    let response = app.post_form("/api-tokens", &[("name", "")]).await;
    assert_eq!(response.status(), 422);

    let support = app.new_browser();
    app.create_member("support@example.com", Role::Support, crate::helpers::PASSWORD);
    support
        .login("support@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(support.get("/api-tokens").await.status(), 403);
}

/// The CLI refuses a second live token of the same name in a program, saying why.
#[apply(integration_test!)]
async fn cli_refuses_a_duplicate_token_name() {
    let app = TestApp::spawn().await;
    new_token(&app, "default");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referdesk"))
        .args(["token", "create", "--program", "default", "--name", "TESTS"])
        .env("DATABASE_URL", &app.database_url)
        .env(
            "REFERDESK_DATA_DIR",
            std::env::temp_dir().join("referdesk-cli-test"),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already named \"tests\""), "{stderr}");
    assert_eq!(live_tokens(&app), vec!["tests".to_string()]);
}

#[apply(integration_test!)]
async fn cli_creates_a_working_token() {
    let app = TestApp::spawn().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referdesk"))
        .args([
            "token",
            "create",
            "--program",
            "default",
            "--name",
            "from the CLI",
        ])
        .env("DATABASE_URL", &app.database_url)
        .env(
            "REFERDESK_DATA_DIR",
            std::env::temp_dir().join("referdesk-cli-test"),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let secret = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("rd_"));
    let response = reqwest::Client::new()
        .get(format!("{}/v1/customers", app.address))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// PostgreSQL text cannot hold NUL: text fields refuse control characters with a message
/// next to the field (a 422) and book, queue or change nothing.
#[apply(integration_test!)]
async fn control_characters_get_a_field_message() {
    let api = Api::spawn().await;
    api.create(json!({"id": "c", "email": "c@example.com"})).await;
    let (status, answer) = api
        .post(
            "/customers/c/balance/credit",
            json!({"amount": "5", "amount_units": "points", "is_currency": false, "note": "a\0b"}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().contains("control characters"), "{answer}");
    // Line breaks in a note are fine.
    let (status, answer) = api
        .post(
            "/customers/c/balance/credit",
            json!({"amount": "5", "amount_units": "points", "is_currency": false, "note": "line one\nline two"}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    for body in [
        json!({"email": "friend@example.com", "name": "a\0b"}),
        json!({"email": "friend@example.com", "personalization": {"message": "hi\0"}}),
    ] {
        let (status, answer) = api.post("/customers:invite", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(answer.to_string().contains("control characters"), "{answer}");
    }
    let mut conn = api.app.conn();
    let booked: i64 = referdesk::db::schema::balance_transactions::table
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(booked, 1, "only the note with line breaks was booked");
    let queued: i64 = referdesk::db::schema::invites::table
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(queued, 0);
}

/// Every `/v1` answer — success or error, from a handler or from the framework — tells
/// caches not to keep it.
#[apply(integration_test!)]
async fn every_v1_answer_is_no_store() {
    use referdesk::api::throttle::UNKNOWN_TOKENS_PER_MINUTE;
    let api = Api::spawn().await;
    let client = &api.client;
    let token = api.token.as_str();
    let calls = [
        (reqwest::Method::GET, "/customers", Some(token), None, 200),
        (reqwest::Method::GET, "/openapi.json", None, None, 200),
        (reqwest::Method::GET, "/customers", None, None, 401),
        (reqwest::Method::GET, "/customers/nobody", Some(token), None, 404),
        (reqwest::Method::GET, "/nothing-here", Some(token), None, 404),
        (reqwest::Method::PATCH, "/customers", Some(token), None, 405),
        (
            reqwest::Method::POST,
            "/customers",
            Some(token),
            Some(json!({"email": 5})),
            422,
        ),
    ];
    for (method, path, token, body, expected) in calls {
        let mut request = client.request(method.clone(), api.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), expected, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{method} {path}"
        );
    }
    let mut last = None;
    for n in 0..=UNKNOWN_TOKENS_PER_MINUTE {
        let response = client
            .get(api.url("/customers"))
            .bearer_auth(format!("rd_guess{n}"))
            .send()
            .await
            .unwrap();
        last = Some(response);
    }
    let refused = last.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["cache-control"], "no-store");
}

/// Bearer tokens that match no live token are counted per client address; past the limit
/// the address is refused (429) before its token is looked up, while a token that worked
/// before still does, and other addresses are not affected.
#[apply(integration_test!)]
async fn unknown_tokens_are_refused_per_address_without_database_work() {
    use diesel::connection::SimpleConnection;
    use referdesk::api::throttle::UNKNOWN_TOKENS_PER_MINUTE;
    use std::time::{Duration, Instant};
    let api = Api::spawn().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let guess = |n: String, client: &reqwest::Client| {
        let request = client.get(api.url("/customers")).bearer_auth(format!("rd_{n}"));
        async move {
            let response = request.send().await.unwrap();
            let retry = response.headers().get("retry-after").cloned();
            (response.status().as_u16(), retry)
        }
    };
    assert_eq!(
        api.get("/customers").await.0,
        200,
        "a live token, used before the attack"
    );
    for n in 0..UNKNOWN_TOKENS_PER_MINUTE {
        assert_eq!(guess(format!("guess{n}"), &client).await.0, 401, "guess {n}");
    }
    let (status, retry) = guess("one-more".into(), &client).await;
    assert_eq!(status, 429);
    let retry: u64 = retry.expect("Retry-After").to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // With the tokens table locked, a token lookup would wait (until the statement
    // timeout); the refusal reads only the address's counter, so it comes at once.
    let mut locker = diesel::PgConnection::establish(&api.app.database_url).unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let started = Instant::now();
    for n in 0..5 {
        assert_eq!(guess(format!("locked{n}"), &client).await.0, 429);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    locker.batch_execute("ROLLBACK").unwrap();

    // The live token still works from the refused address; another address guesses anew.
    assert_eq!(api.get("/customers").await.0, 200, "the live token");
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    assert_eq!(
        guess("elsewhere".into(), &elsewhere).await.0,
        401,
        "another address"
    );
}
