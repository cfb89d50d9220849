//! `/v1/openapi.json` against the server's real answers. For every operation and every
//! status the document lists, a real answer is checked field by field against the documented
//! schema: every field it lists is there with its JSON type, and no field it does not list.
//! A documented answer the test cannot produce, or an answer the document does not describe,
//! fails the test, so the document and the code cannot drift apart.

use std::collections::BTreeSet;

use diesel::prelude::*;
use referdesk::db::schema::{customers, programs, webhook_subscriptions};
use referdesk::domain::{tokens, Actor};
use reqwest::Method;
use serde_json::{json, Map, Value};

use macro_rules_attribute::apply;

use crate::helpers::{fresh_database, test_config, TestApp};
use crate::integration_test;

/// The OpenAPI document, and a checker for the subset of OpenAPI 3.0 schemas it uses.
struct Document(Value);

impl Document {
    fn resolve<'a>(&'a self, mut node: &'a Value) -> &'a Value {
        while let Some(reference) = node["$ref"].as_str() {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            node = self
                .0
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} resolves"));
        }
        node
    }

    /// Every (path, method, status) the document describes.
    fn operations(&self) -> BTreeSet<(String, String, String)> {
        let mut all = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                if method == "parameters" {
                    continue;
                }
                for status in operation["responses"].as_object().expect("responses").keys() {
                    all.insert((path.clone(), method.clone(), status.clone()));
                }
            }
        }
        all
    }

    fn response_schema(&self, path: &str, method: &str, status: &str) -> &Value {
        let response = &self.0["paths"][path][method]["responses"][status];
        assert!(
            !response.is_null(),
            "{method} {path} documents no {status} answer"
        );
        let schema = &self.resolve(response)["content"]["application/json"]["schema"];
        assert!(
            !schema.is_null(),
            "{method} {path} {status} documents no JSON schema"
        );
        schema
    }

    /// One schema from the parts of an `allOf`; a later part's property overrides an earlier.
    fn merge(&self, parts: &[Value]) -> Value {
        let mut merged = Map::new();
        for part in parts {
            for (name, value) in self.resolve(part).as_object().expect("schema object") {
                match (name.as_str(), merged.get_mut(name)) {
                    ("properties", Some(Value::Object(into))) => {
                        into.extend(value.as_object().cloned().unwrap_or_default())
                    }
                    ("required", Some(Value::Array(into))) => {
                        into.extend(value.as_array().cloned().unwrap_or_default())
                    }
                    _ => {
                        merged.insert(name.clone(), value.clone());
                    }
                }
            }
        }
        Value::Object(merged)
    }

    /// Checks `value` against `schema`, adding what disagrees to `problems`. An object schema
    /// without a `required` list requires every property it lists.
    fn check(&self, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(parts) = schema["allOf"].as_array() {
            return self.check(&self.merge(parts), value, at, problems);
        }
        let any = schema.as_object().is_some_and(Map::is_empty);
        if value.is_null() {
            if !any && schema["nullable"] != true {
                problems.push(format!("{at} is null; the schema does not allow null"));
            }
            return;
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                problems.push(format!("{at} is {value}, not one of {allowed:?}"));
            }
        }
        let kind = schema["type"].as_str();
        let fits = match kind {
            None => true,
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some(other) => panic!("{at}: the checker knows no type {other}"),
        };
        if !fits {
            problems.push(format!("{at} is {value}, not of type {}", kind.unwrap_or("?")));
            return;
        }
        if schema["format"] == "date-time" {
            let text = value.as_str().unwrap_or_default();
            if chrono::DateTime::parse_from_rfc3339(text).is_err() {
                problems.push(format!("{at} is {value}, not a date-time"));
            }
        }
        if let Some(items) = value.as_array() {
            for (index, item) in items.iter().enumerate() {
                self.check(&schema["items"], item, &format!("{at}[{index}]"), problems);
            }
        }
        if let Some(fields) = value.as_object() {
            self.check_fields(schema, fields, at, problems);
        }
    }

    fn check_fields(
        &self,
        schema: &Value,
        fields: &Map<String, Value>,
        at: &str,
        problems: &mut Vec<String>,
    ) {
        let extra = schema
            .get("additionalProperties")
            .filter(|extra| extra.is_object());
        let Some(properties) = schema["properties"].as_object() else {
            // An object without listed properties is free-form (metadata, custom_fields).
            for (name, field) in fields {
                if let Some(extra) = extra {
                    self.check(extra, field, &format!("{at}.{name}"), problems);
                }
            }
            return;
        };
        let required: Vec<&str> = match schema["required"].as_array() {
            Some(names) => names.iter().filter_map(Value::as_str).collect(),
            None => properties.keys().map(String::as_str).collect(),
        };
        for name in required {
            if !fields.contains_key(name) {
                problems.push(format!("{at}.{name} is documented but missing"));
            }
        }
        for (name, field) in fields {
            match properties.get(name).or(extra) {
                Some(field_schema) => self.check(field_schema, field, &format!("{at}.{name}"), problems),
                None => problems.push(format!("{at}.{name} is in the answer but not documented")),
            }
        }
    }
}

/// One call to make: the documented operation it exercises and the status it must answer.
struct Case {
    method: Method,
    path: &'static str,
    url: String,
    body: Option<Value>,
    status: u16,
}

fn case(method: Method, path: &'static str, url: &str, body: Option<Value>, status: u16) -> Case {
    Case {
        method,
        path,
        url: url.to_string(),
        body,
        status,
    }
}

/// A call of every documented operation with every status it can answer but 401 and 429
/// (the same calls without a token, or beyond the rate, give those).
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Method as M;
    let (customer, credit) = ("/customers/{ident}", "/customers/{ident}/balance/credit");
    let amount = json!({"amount": 5, "amount_units": "usd", "is_currency": true, "note": "welcome"});
    let invite = json!({"email": "eve@example.com", "personalization": {"note": "hi"}});
    // A public address written as such: no DNS needed, allowed without the private flag.
    let webhook = json!({"name": "Backend", "url": "https://93.184.216.34/hooks", "events": ["customer.created"]});
    let hook = "/webhooks/{key}";
    let (txn, archive, revoke) = ("/transactions/{key}", "/transactions/{key}/archive", "/transactions/{key}/revoke-archive");
    let sale = json!({"customer": {"key": "bob-key"}, "key": "oa-1", "amount": 25.5, "product_id": "p1"});
    let refund_me = json!({"customer": {"key": "bob-key"}, "key": "oa-2", "amount": 10});
    vec![
        case(M::GET, "/customers", "/customers", None, 200),
        case(M::GET, "/customers", "/customers?limit=0", None, 422),
        case(M::POST, "/customers", "/customers", Some(json!({"id": "carol", "key": "carol-key"})), 201),
        case(M::POST, "/customers", "/customers", Some(json!({"email": "not an address"})), 422),
        case(M::PUT, "/customers", "/customers", Some(json!({"id": "ada", "update": {"name": "Ada"}})), 200),
        case(M::PUT, "/customers", "/customers", Some(json!({"id": "nobody", "update": {"name": "N"}})), 404),
        case(M::PUT, "/customers", "/customers", Some(json!({"update": {"name": "N"}})), 422),
        case(M::GET, customer, "/customers/ada", None, 200),
        case(M::GET, customer, "/customers/nobody", None, 404),
        case(M::PUT, customer, "/customers/ada", Some(json!({"update": {"surname": "L"}})), 200),
        case(M::PUT, customer, "/customers/nobody", Some(json!({"name": "N"})), 404),
        case(M::PUT, customer, "/customers/ada", Some(json!({"email": "not an address"})), 422),
        case(M::GET, "/customers:search", "/customers:search?key=ada-key", None, 200),
        case(M::GET, "/customers:search", "/customers:search", None, 422),
        case(M::GET, "/customers/{ident}/referrals", "/customers/ada/referrals", None, 200),
        case(M::GET, "/customers/{ident}/referrals", "/customers/nobody/referrals", None, 404),
        case(M::GET, "/customers/{ident}/referrals", "/customers/ada/referrals?page=0", None, 422),
        case(M::POST, credit, "/customers/ada/balance/credit", Some(amount.clone()), 201),
        case(M::POST, credit, "/customers/ada/balance/credit", Some(amount.clone()), 200),
        case(M::POST, credit, "/customers/nobody/balance/credit", Some(amount), 404),
        case(M::POST, credit, "/customers/ada/balance/credit", Some(json!({})), 422),
        case(M::GET, "/customers/{ident}/stats", "/customers/ada/stats", None, 200),
        case(M::GET, "/customers/{ident}/stats", "/customers/nobody/stats", None, 404),
        case(M::GET, "/customers/{ident}/balance", "/customers/ada/balance", None, 200),
        case(M::GET, "/customers/{ident}/balance", "/customers/nobody/balance", None, 404),
        case(M::GET, "/customers/{ident}/transactions", "/customers/ada/transactions", None, 200),
        case(M::GET, "/customers/{ident}/transactions", "/customers/nobody/transactions", None, 404),
        case(M::GET, "/customers/{ident}/transactions", "/customers/ada/transactions?limit=x", None, 422),
        case(M::POST, "/customers:invite", "/customers:invite", Some(invite), 201),
        case(M::POST, "/customers:invite", "/customers:invite", Some(json!({})), 422),
        case(M::GET, "/webhooks", "/webhooks", None, 200),
        case(M::GET, "/webhooks", "/webhooks?limit=0", None, 422),
        case(M::POST, "/webhooks", "/webhooks", Some(webhook.clone()), 201),
        case(M::POST, "/webhooks", "/webhooks", Some(json!({"name": "Inside", "url": "https://10.0.0.1/", "events": ["customer.created"]})), 422),
        case(M::GET, hook, "/webhooks/wh_openapi", None, 200),
        case(M::GET, hook, "/webhooks/nobody", None, 404),
        case(M::PUT, hook, "/webhooks/wh_openapi", Some(json!({"is_active": false})), 200),
        case(M::PUT, hook, "/webhooks/nobody", Some(json!({"is_active": false})), 404),
        case(M::PUT, hook, "/webhooks/wh_openapi", Some(json!({"events": ["customer.exploded"]})), 422),
        case(M::DELETE, hook, "/webhooks/wh_openapi", None, 200),
        case(M::DELETE, hook, "/webhooks/nobody", None, 404),
        // Rewards 1 and 2 are made by the test (see `reward_fixtures`).
        case(M::GET, "/rewards", "/rewards", None, 200),
        case(M::GET, "/rewards", "/rewards?status=paid", None, 422),
        case(M::POST, "/rewards/{id}/approve", "/rewards/1/approve", None, 200),
        case(M::POST, "/rewards/{id}/approve", "/rewards/1/approve", None, 422),
        case(M::POST, "/rewards/{id}/approve", "/rewards/999999/approve", None, 404),
        case(M::POST, "/rewards/{id}/deny", "/rewards/2/deny", Some(json!({})), 422),
        case(M::POST, "/rewards/{id}/deny", "/rewards/2/deny", Some(json!({"reason": "Duplicate"})), 200),
        case(M::POST, "/rewards/{id}/deny", "/rewards/999999/deny", Some(json!({"reason": "No"})), 404),
        case(M::POST, "/transactions", "/transactions", Some(sale.clone()), 201),
        case(M::POST, "/transactions", "/transactions", Some(sale), 200),
        case(M::POST, "/transactions", "/transactions", Some(refund_me), 201),
        case(M::POST, "/transactions", "/transactions", Some(json!({"amount": 0})), 422),
        case(M::GET, "/transactions", "/transactions?customer=bob-key", None, 200),
        case(M::GET, "/transactions", "/transactions?page=x", None, 422),
        case(M::GET, txn, "/transactions/oa-1", None, 200),
        case(M::GET, txn, "/transactions/nope", None, 404),
        case(M::POST, archive, "/transactions/oa-1/archive", None, 200),
        case(M::POST, archive, "/transactions/nope/archive", None, 404),
        case(M::POST, revoke, "/transactions/oa-1/revoke-archive", None, 200),
        case(M::POST, revoke, "/transactions/nope/revoke-archive", None, 404),
        case(M::DELETE, txn, "/transactions/oa-2", None, 200),
        case(M::DELETE, txn, "/transactions/nope", None, 404),
        case(M::POST, archive, "/transactions/oa-2/archive", None, 422),
        case(M::POST, revoke, "/transactions/oa-2/revoke-archive", None, 422),
        case(M::GET, "/customers/{ident}/rewards", "/customers/ada/rewards", None, 200),
        case(M::GET, "/customers/{ident}/rewards", "/customers/nobody/rewards", None, 404),
        case(M::GET, "/customers/{ident}/rewards", "/customers/ada/rewards?limit=999", None, 422),
        case(M::DELETE, customer, "/customers/carol", None, 200),
        case(M::DELETE, customer, "/customers/nobody", None, 404),
    ]
}

struct Caller {
    address: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Caller {
    /// Makes the call; the status and the answer's JSON.
    async fn call(&self, case: &Case) -> (u16, Value) {
        let mut request = self
            .client
            .request(case.method.clone(), format!("{}/v1{}", self.address, case.url))
            // Repeating a credit with its key answers 200 instead of 201.
            .header("Idempotency-Key", "openapi-conformance");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &case.body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let answer = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON from {}: {text}", case.url));
        (status, answer)
    }
}

fn new_token(app: &TestApp) -> String {
    let mut conn = app.conn();
    let program_id: i64 = programs::table
        .filter(programs::slug.eq("default"))
        .select(programs::id)
        .first(&mut conn)
        .unwrap();
    tokens::create(&mut conn, program_id, "openapi", &Actor::system())
        .unwrap()
        .1
}

#[apply(integration_test!)]
async fn every_documented_answer_matches_a_real_one() {
    let app = TestApp::spawn().await;
    let served = reqwest::get(format!("{}/v1/openapi.json", app.address))
        .await
        .unwrap();
    let document = Document(served.json().await.unwrap());
    let caller = Caller {
        address: app.address.clone(),
        token: Some(new_token(&app)),
        client: reqwest::Client::new(),
    };
    // Data that fills every field: a referrer with a referral, custom fields and metadata.
    let setup = [
        json!({"id": "ada", "key": "ada-key", "email": "ada@example.com", "name": "Ada", "surname": "Lovelace",
               "metadata": {"date_of_birth": "1990-12-10"}, "custom_fields": {"team": "blue"}}),
        json!({"id": "bob", "key": "bob-key", "email": "bob@example.com", "referring_customer": {"id": "ada"}}),
    ];
    for body in setup {
        let (status, answer) = caller
            .call(&case(Method::POST, "/customers", "/customers", Some(body), 201))
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let id_of = |external_id: &str| -> i64 {
        customers::table
            .filter(customers::external_id.eq(external_id))
            .select(customers::id)
            .first(&mut app.conn())
            .unwrap()
    };
    let rule = crate::reward_fixtures::insert_rule(&app, "Signup bonus");
    let pair = (id_of("ada"), id_of("bob"));
    let mut flagged = crate::reward_fixtures::pending("5");
    flagged.flags = vec!["same_email"];
    let rewards = (
        crate::reward_fixtures::insert_reward(&app, rule, pair, crate::reward_fixtures::pending("10")),
        crate::reward_fixtures::insert_reward(&app, rule, pair, flagged),
    );
    assert_eq!(rewards, (1, 2), "the cases name rewards 1 and 2");

    // A webhook under a known key, for the calls that name one.
    let (status, answer) = caller
        .call(&case(
            Method::POST,
            "/webhooks",
            "/webhooks",
            Some(json!({"name": "Fixture",
            "url": "https://93.184.216.34/fixture", "events": ["customer.updated"]})),
            201,
        ))
        .await;
    assert_eq!(status, 201, "{answer}");
    diesel::update(
        webhook_subscriptions::table
            .filter(webhook_subscriptions::key.eq(answer["data"]["key"].as_str().unwrap())),
    )
    .set(webhook_subscriptions::key.eq("wh_openapi"))
    .execute(&mut app.conn())
    .unwrap();

    // A rule, so that sales fire rewards and their fields are checked too.
    crate::transactions::add_rule(&app, &[("friend_amount", "2"), ("max_reward", "NULL")]);

    let mut checked = BTreeSet::new();
    let mut problems = Vec::new();
    let mut check = |case: &Case, status: u16, answer: &Value, problems: &mut Vec<String>| {
        let method = case.method.as_str().to_lowercase();
        let at = format!("{} {} {status}", case.method, case.url);
        assert_eq!(status, case.status, "{at}: {answer}");
        let schema = document.response_schema(case.path, &method, &status.to_string());
        document.check(schema, answer, &at, problems);
        if status == 422 && answer["errors"].as_object().is_none_or(Map::is_empty) {
            problems.push(format!("{at}: a 422 names no field"));
        }
        checked.insert((case.path.to_string(), method, status.to_string()));
    };
    for case in cases() {
        let (status, answer) = caller.call(&case).await;
        check(&case, status, &answer, &mut problems);
    }

    // Without a token: 401. Beyond the rate: 429 (a server that allows one call a minute).
    let anonymous = Caller {
        token: None,
        ..caller
    };
    let mut config = test_config(&fresh_database());
    config.api_rate_per_minute = 1;
    let throttled_app = TestApp::spawn_with(config).await;
    let throttled = Caller {
        address: throttled_app.address.clone(),
        token: Some(new_token(&throttled_app)),
        client: reqwest::Client::new(),
    };
    let first = case(Method::GET, "/customers", "/customers", None, 200);
    assert_eq!(throttled.call(&first).await.0, 200);
    let mut seen = BTreeSet::new();
    for mut case in cases() {
        if !seen.insert((case.path, case.method.clone())) {
            continue;
        }
        case.status = 401;
        let (status, answer) = anonymous.call(&case).await;
        check(&case, status, &answer, &mut problems);
        case.status = 429;
        let (status, answer) = throttled.call(&case).await;
        check(&case, status, &answer, &mut problems);
    }

    for missing in document.operations().difference(&checked) {
        problems.push(format!("documented but never answered: {missing:?}"));
    }
    assert!(
        problems.is_empty(),
        "the document disagrees with the answers:\n{}",
        problems.join("\n")
    );
}
