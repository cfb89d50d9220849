//! Webhooks: subscriptions (API and dashboard), events emitted once per change and in its
//! transaction, signed delivery to a real HTTP receiver, retries, timeouts, redirects,
//! SSRF refusals, secret rotation, claims shared by several workers, the log and pruning.
//!
//! The server's own worker is off in most tests: they run delivery passes themselves with
//! a chosen `now` (`webhooks::deliver_due`), so a retry an hour later takes no time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use macro_rules_attribute::apply;
use referdesk::config::{Config, WebhookSettings};
use referdesk::db::schema::{
    mail_outbox, webhook_attempts, webhook_deliveries, webhook_events, webhook_subscriptions,
};
use referdesk::domain::webhooks::addresses::Policy;
use referdesk::domain::webhooks::{delivery, subscriptions, SubscriptionInput};
use referdesk::domain::Actor;
use referdesk::webhooks::{deliver_due, Sender};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{fresh_database, location, test_config, TestApp};
use crate::integration_test;
use referdesk::domain::customers;
use referdesk::domain::team::Role;

/// What the receiver does with a request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Holds the connection open without answering.
    Hang,
    Redirect(&'static str),
}

/// A request as it arrived.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// A real HTTP/1.1 receiver on a free port: answers from a script (then 200), records
/// every request with its raw body.
#[derive(Clone)]
struct Receiver {
    port: u16,
    script: Arc<Mutex<VecDeque<Answer>>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Milliseconds every answer waits (a receiver doing some work).
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            port: listener.local_addr().unwrap().port(),
            script: Default::default(),
            received: Default::default(),
            delay_ms: Default::default(),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let serving = serving.clone();
                tokio::spawn(async move { serving.serve(stream).await });
            }
        });
        receiver
    }

    fn then(&self, answers: &[Answer]) {
        self.script.lock().unwrap().extend(answers.iter().cloned());
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn serve(&self, mut stream: tokio::net::TcpStream) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .unwrap_or_default()
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.trim().to_lowercase(), value.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(key, _)| key == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).to_string();
        self.received
            .lock()
            .unwrap()
            .push(Received { path, headers, body });
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Status(200));
        let response = match answer {
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            Answer::Status(code) => {
                let text = format!("answer is {code}");
                format!(
                    "HTTP/1.1 {code} Whatever\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                )
            }
            Answer::Redirect(to) => format!(
                "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            ),
        };
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `Signature` is the hex HMAC of the raw body keyed with `secret`.
fn partnero_valid(request: &Received, secret: &str) -> bool {
    request.header("signature")
        == Some(hex::encode(hmac(secret.as_bytes(), request.body.as_bytes())).as_str())
}

/// Whether one of the `webhook-signature` entries verifies with `secret`, the Standard
/// Webhooks way (key: the base64 after `whsec_`; message: `id.timestamp.body`).
fn standard_valid(request: &Received, secret: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let message = format!(
        "{}.{}.{}",
        request.header("webhook-id").unwrap(),
        request.header("webhook-timestamp").unwrap(),
        request.body
    );
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(hmac(&key, message.as_bytes()))
    );
    request
        .header("webhook-signature")
        .unwrap_or_default()
        .split(' ')
        .any(|signature| signature == expected)
}

fn settings(worker: bool, allow_private: bool) -> WebhookSettings {
    WebhookSettings {
        policy: Policy {
            allow_http: true,
            allow_private,
        },
        worker,
        request_timeout: Duration::from_secs(2),
        ..WebhookSettings::default()
    }
}

async fn spawn(webhooks: WebhookSettings) -> TestApp {
    TestApp::spawn_with(Config {
        webhooks,
        ..test_config(&fresh_database())
    })
    .await
}

/// Creates a subscription directly (no save-time check); returns its key and secret.
pub(crate) fn subscribe(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let program = app.default_program();
    let input = SubscriptionInput {
        name: Some("Receiver".into()),
        url: Some(url.into()),
        all_events: Some(events.is_empty()),
        events: Some(events.iter().map(|event| event.to_string()).collect()),
        is_active: Some(true),
    };
    let policy = Policy {
        allow_http: true,
        allow_private: true,
    };
    let created =
        subscriptions::create(&mut app.conn(), program.id, &Actor::system(), input, policy).unwrap();
    (created.key, created.secret)
}

async fn api(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/v1{path}", app.address))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One delivery pass at `now` plus `offset`, as the worker would make it.
async fn pass(app: &TestApp, webhooks: &WebhookSettings, offset: chrono::Duration) -> usize {
    let sender = Sender::new(webhooks).unwrap();
    deliver_due(&app.pool, &sender, webhooks, Utc::now() + offset)
        .await
        .unwrap()
}

fn attempts(app: &TestApp) -> Vec<(String, Option<i32>, Option<String>)> {
    webhook_attempts::table
        .order(webhook_attempts::id)
        .select((
            webhook_attempts::outcome,
            webhook_attempts::status_code,
            webhook_attempts::error,
        ))
        .load(&mut app.conn())
        .unwrap()
}

fn delivery_statuses(app: &TestApp) -> Vec<String> {
    webhook_deliveries::table
        .order(webhook_deliveries::id)
        .select(webhook_deliveries::status)
        .load(&mut app.conn())
        .unwrap()
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// The server's own worker delivers a customer created through the API, signed both ways
/// on the raw body, with the event id in the body and in `webhook-id`.
#[apply(integration_test!)]
async fn the_worker_delivers_signed_events_to_a_real_receiver() {
    let receiver = Receiver::start().await;
    let app = spawn(settings(true, true)).await;
    let token = app.create_token("default");
    let (status, created) = api(
        &app,
        &token,
        reqwest::Method::POST,
        "/webhooks",
        Some(json!({"name": "Backend", "url": receiver.url("127.0.0.1", "/hook"), "events": ["customer.created"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["data"]["signature"].as_str().unwrap().to_string();
    let key = created["data"]["key"].as_str().unwrap().to_string();
    let (status, _) = api(
        &app,
        &token,
        reqwest::Method::POST,
        "/customers",
        Some(json!({"id": "ada", "key": "ada-key"})),
    )
    .await;
    assert_eq!(status, 201);
    let mut waited = 0;
    while receiver.received().is_empty() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let received = receiver.received();
    assert_eq!(received.len(), 1, "one event, one request");
    let request = &received[0];
    assert!(
        partnero_valid(request, &secret),
        "Signature verifies on the raw body"
    );
    assert!(standard_valid(request, &secret), "webhook-signature verifies");
    assert!(
        !partnero_valid(request, "whsec_AAAA"),
        "a wrong secret does not verify"
    );
    let body = request.json();
    assert_eq!(body["event"], "customer.created");
    assert_eq!(body["webhook_key"], key.as_str());
    assert_eq!(body["id"].as_str(), request.header("webhook-id"));
    assert_eq!(body["data"]["key"], "ada-key");
    assert_eq!(body["url"], receiver.url("127.0.0.1", "/hook"));
    // The attempt is logged as it happened.
    let mut waited = 0;
    while attempts(&app).is_empty() && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(attempts(&app), vec![("success".to_string(), Some(200), None)]);
    assert_eq!(delivery_statuses(&app), vec!["delivered"]);
}

/// A 500 is retried after the backoff (not before) and then delivered once, with the same
/// event id; nothing is sent after that.
#[apply(integration_test!)]
async fn a_failure_is_retried_after_the_backoff_and_delivered_once() {
    let receiver = Receiver::start().await;
    let webhooks = settings(false, true);
    let app = spawn(webhooks.clone()).await;
    subscribe(&app, &receiver.url("127.0.0.1", "/hook"), &["customer.created"]);
    receiver.then(&[Answer::Status(500), Answer::Status(200)]);
    app.create_customer(Default::default());

    assert_eq!(pass(&app, &webhooks, minutes(0)).await, 1);
    assert_eq!(delivery_statuses(&app), vec!["pending"]);
    assert_eq!(
        pass(&app, &webhooks, minutes(0)).await,
        0,
        "not due before its backoff"
    );
    assert_eq!(
        pass(&app, &webhooks, minutes(2)).await,
        1,
        "due after about a minute"
    );
    assert_eq!(
        pass(&app, &webhooks, minutes(60 * 48)).await,
        0,
        "delivered: never again"
    );

    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].header("webhook-id"), received[1].header("webhook-id"));
    assert_eq!(
        received[0].body, received[1].body,
        "the same event, byte for byte"
    );
    let log = attempts(&app);
    assert_eq!(log[0].0, "failure");
    assert_eq!(log[0].1, Some(500));
    assert_eq!(log[1], ("success".to_string(), Some(200), None));
    assert_eq!(delivery_statuses(&app), vec!["delivered"]);
    let next_retry: Option<chrono::DateTime<Utc>> = webhook_attempts::table
        .order(webhook_attempts::id)
        .select(webhook_attempts::next_retry_at)
        .first(&mut app.conn())
        .unwrap();
    assert!(next_retry.is_some(), "the failed attempt shows its next retry");
}

/// After the whole schedule (8 attempts over about 39 hours) the delivery fails for good;
/// resending it queues it again with the same event id.
#[apply(integration_test!)]
async fn a_delivery_fails_after_the_schedule_and_can_be_resent() {
    let receiver = Receiver::start().await;
    let webhooks = settings(false, true);
    let app = spawn(webhooks.clone()).await;
    let (key, _) = subscribe(&app, &receiver.url("127.0.0.1", "/hook"), &[]);
    receiver.then(&[Answer::Status(503); 8]);
    app.create_customer(Default::default());
    // Each pass just after the longest (jittered) wait: about 39 hours in all, less than
    // the 3 days that turn a subscription off.
    let mut offset = minutes(0);
    for attempt in 1..=8 {
        assert_eq!(pass(&app, &webhooks, offset).await, 1, "attempt {attempt}");
        if let Some(wait) = delivery::BACKOFF_SECS.get(attempt - 1) {
            offset += chrono::Duration::seconds(wait * 6 / 5 + 60);
        }
    }
    assert_eq!(delivery_statuses(&app), vec!["failed"]);
    assert_eq!(pass(&app, &webhooks, offset).await, 0);

    let program = app.default_program();
    let range = (Utc::now() - minutes(5), Utc::now() + minutes(5));
    let queued = delivery::resend_failed(&mut app.conn(), program.id, &key, range, Utc::now()).unwrap();
    assert_eq!(queued, 1);
    assert_eq!(pass(&app, &webhooks, offset).await, 1);
    let received = receiver.received();
    assert_eq!(received.len(), 9);
    assert_eq!(received[0].header("webhook-id"), received[8].header("webhook-id"));
    assert_eq!(delivery_statuses(&app), vec!["delivered"]);
}

/// A receiver that never answers times out (whole-request limit) and is retried; one that
/// redirects is not followed.
#[apply(integration_test!)]
async fn hangs_time_out_and_redirects_are_not_followed() {
    let receiver = Receiver::start().await;
    let webhooks = settings(false, true);
    let app = spawn(webhooks.clone()).await;
    subscribe(&app, &receiver.url("127.0.0.1", "/hook"), &["customer.created"]);
    receiver.then(&[Answer::Hang, Answer::Redirect("/elsewhere")]);
    app.create_customer(Default::default());

    let started = std::time::Instant::now();
    assert_eq!(pass(&app, &webhooks, minutes(0)).await, 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout ended the attempt"
    );
    let log = attempts(&app);
    assert_eq!(log[0].0, "failure");
    assert_eq!(log[0].1, None);
    assert!(log[0].2.as_deref().unwrap().contains("in time"), "{:?}", log[0].2);
    assert_eq!(delivery_statuses(&app), vec!["pending"], "retried later");

    assert_eq!(pass(&app, &webhooks, minutes(2)).await, 1);
    let log = attempts(&app);
    assert_eq!(log[1].0, "failure");
    assert_eq!(log[1].1, Some(302));
    let paths: Vec<String> = receiver
        .received()
        .into_iter()
        .map(|request| request.path)
        .collect();
    assert_eq!(paths, vec!["/hook", "/hook"], "the redirect was not followed");
}

/// Without the private flag, loopback, private, link-local (metadata) addresses and names
/// resolving to them are refused at save time and again at delivery time.
#[apply(integration_test!)]
async fn private_addresses_are_refused_unless_allowed() {
    let receiver = Receiver::start().await;
    let webhooks = settings(false, false);
    let app = spawn(webhooks.clone()).await;
    let token = app.create_token("default");
    for url in [
        receiver.url("127.0.0.1", "/hook"),
        "https://10.1.2.3/hook".to_string(),
        "https://169.254.169.254/latest/meta-data".to_string(),
        receiver.url("localhost", "/hook"),
        "https://[::1]/hook".to_string(),
    ] {
        let (status, answer) = api(
            &app,
            &token,
            reqwest::Method::POST,
            "/webhooks",
            Some(json!({"name": "Inside", "url": url, "events": ["customer.created"]})),
        )
        .await;
        assert_eq!(status, 422, "{url}: {answer}");
        assert!(
            answer["errors"]["url"][0]
                .as_str()
                .unwrap()
                .contains("may not reach"),
            "{answer}"
        );
    }
    let count: i64 = webhook_subscriptions::table
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(count, 0, "nothing saved");

    // Saved before the rules applied (or resolving elsewhere since): refused at delivery.
    subscribe(&app, &receiver.url("127.0.0.1", "/a"), &["customer.created"]);
    subscribe(&app, &receiver.url("localhost", "/b"), &["customer.created"]);
    app.create_customer(Default::default());
    assert_eq!(pass(&app, &webhooks, minutes(0)).await, 2);
    assert!(receiver.received().is_empty(), "no request reached the receiver");
    for (outcome, status, error) in attempts(&app) {
        assert_eq!((outcome.as_str(), status), ("failure", None));
        assert!(error.unwrap().contains("loopback"));
    }

    // With the flag, the same receiver gets them.
    let allowed = settings(false, true);
    assert_eq!(pass(&app, &allowed, minutes(2)).await, 2);
    assert_eq!(receiver.received().len(), 2);
}

/// After a rotation both secrets sign for 24 hours; after that only the new one.
#[apply(integration_test!)]
async fn a_rotated_secret_signs_beside_the_old_one_for_a_day() {
    let receiver = Receiver::start().await;
    let webhooks = settings(false, true);
    let app = spawn(webhooks.clone()).await;
    let (key, old) = subscribe(&app, &receiver.url("127.0.0.1", "/hook"), &["customer.created"]);
    let program = app.default_program();
    let new = subscriptions::rotate_secret(&mut app.conn(), program.id, &key, &Actor::system())
        .unwrap()
        .secret;
    assert_ne!(old, new);
    app.create_customer(Default::default());
    assert_eq!(pass(&app, &webhooks, minutes(0)).await, 1);
    app.create_customer(Default::default());
    assert_eq!(pass(&app, &webhooks, chrono::Duration::hours(25)).await, 1);

    let received = receiver.received();
    let during = &received[0];
    assert_eq!(during.header("webhook-signature").unwrap().split(' ').count(), 2);
    assert!(standard_valid(during, &new) && standard_valid(during, &old));
    assert!(partnero_valid(during, &new), "Signature uses the new secret");
    let after = &received[1];
    assert_eq!(after.header("webhook-signature").unwrap().split(' ').count(), 1);
    assert!(standard_valid(after, &new) && !standard_valid(after, &old));
}

pub(crate) fn events_of(app: &TestApp) -> Vec<String> {
    webhook_events::table
        .order(webhook_events::created_at)
        .select(webhook_events::event)
        .load(&mut app.conn())
        .unwrap()
}

fn count_of(events: &[String], name: &str) -> usize {
    events.iter().filter(|event| *event == name).count()
}

/// Each change emits its event once, to the subscriptions that want it; a refused or
/// rolled-back change emits nothing.
#[apply(integration_test!)]
async fn every_change_emits_its_event_once_and_a_rollback_none() {
    let webhooks = settings(false, true);
    let app = spawn(webhooks.clone()).await;
    let token = app.create_token("default");
    subscribe(&app, "http://127.0.0.1:9/all", &[]);
    subscribe(&app, "http://127.0.0.1:9/deleted", &["customer.deleted"]);
    let post = reqwest::Method::POST;
    let put = reqwest::Method::PUT;
    let credit = json!({"amount": 5, "amount_units": "usd", "is_currency": true});
    let calls = [
        (
            post.clone(),
            "/customers",
            json!({"id": "ada", "key": "ada-key"}),
            201,
        ),
        (
            post.clone(),
            "/customers",
            json!({"id": "bob", "key": "bob-key", "referring_customer": {"id": "ada"}}),
            201,
        ),
        (
            put.clone(),
            "/customers/ada",
            json!({"update": {"name": "Ada"}}),
            200,
        ),
        // The same value again changes nothing, so nothing is sent.
        (
            put.clone(),
            "/customers/ada",
            json!({"update": {"name": "Ada"}}),
            200,
        ),
        // Refused: the key is taken.
        (
            put.clone(),
            "/customers/bob",
            json!({"update": {"key": "ada-key"}}),
            422,
        ),
        (post.clone(), "/customers/ada/balance/credit", credit.clone(), 201),
        (reqwest::Method::DELETE, "/customers/bob", Value::Null, 200),
        // Refused: bob is deleted.
        (post.clone(), "/customers/bob/balance/credit", credit, 422),
    ];
    for (method, path, body, expected) in calls {
        let body = (!body.is_null()).then_some(body);
        let (status, answer) = api(&app, &token, method, path, body).await;
        assert_eq!(status, expected, "{path}: {answer}");
    }
    let events = events_of(&app);
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(count_of(&events, "customer.created"), 2);
    assert_eq!(count_of(&events, "referral.created"), 1);
    assert_eq!(count_of(&events, "customer.updated"), 1);
    assert_eq!(count_of(&events, "balance.credited"), 1);
    assert_eq!(count_of(&events, "customer.deleted"), 1);
    let deliveries: i64 = webhook_deliveries::table
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(
        deliveries, 7,
        "six to the all-events subscription, one to the other"
    );

    // A change whose transaction rolls back sends nothing.
    let program = app.default_program();
    let ada = customers::find_by_key(&mut app.conn(), program.id, "ada-key").unwrap();
    let rolled_back = app.conn().transaction::<(), referdesk::error::Error, _>(|conn| {
        customers::delete(conn, &program, &Actor::system(), ada.id)?;
        Err(referdesk::error::Error::NotFound)
    });
    assert!(rolled_back.is_err());
    assert_eq!(events_of(&app).len(), 6, "the rolled-back delete emitted nothing");

    // Without subscriptions, nothing is written at all.
    diesel::delete(webhook_subscriptions::table)
        .execute(&mut app.conn())
        .unwrap();
    let (status, _) = api(
        &app,
        &token,
        reqwest::Method::POST,
        "/customers",
        Some(json!({"id": "cy"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(events_of(&app).len(), 6, "no subscription, no event");
}

/// Two workers passing at once deliver each event once; a claim whose process died (a
/// claim never recorded) is delivered again once its lease ends, never lost.
#[apply(integration_test!)]
async fn concurrent_workers_share_deliveries_and_a_dead_claim_is_retried() {
    let receiver = Receiver::start().await;
    let webhooks = WebhookSettings {
        per_endpoint: 100,
        concurrency: 100,
        ..settings(false, true)
    };
    let app = spawn(webhooks.clone()).await;
    subscribe(&app, &receiver.url("127.0.0.1", "/hook"), &["customer.created"]);
    for _ in 0..40 {
        app.create_customer(Default::default());
    }
    let (a, b) = tokio::join!(
        pass(&app, &webhooks, minutes(0)),
        pass(&app, &webhooks, minutes(0))
    );
    assert_eq!(a + b, 40);
    let mut ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|request| request.header("webhook-id").unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "each event once");
    assert_eq!(receiver.received().len(), 40, "and no duplicate");

    // A process claims one and dies before sending it.
    app.create_customer(Default::default());
    let limits = delivery::Limits {
        batch: 10,
        per_endpoint: 10,
        lease: chrono::Duration::minutes(2),
    };
    let claimed = delivery::claim(&mut app.conn(), Utc::now(), limits).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        pass(&app, &webhooks, minutes(1)).await,
        0,
        "still leased: not sent twice"
    );
    assert_eq!(
        pass(&app, &webhooks, minutes(3)).await,
        1,
        "the lease ended: sent"
    );
    assert_eq!(receiver.received().len(), 41);
    assert!(delivery_statuses(&app).iter().all(|status| status == "delivered"));
}

/// At most `per_endpoint` requests in flight to one subscription.
#[apply(integration_test!)]
async fn one_endpoint_gets_at_most_its_share_of_a_claim() {
    let webhooks = WebhookSettings {
        per_endpoint: 3,
        ..settings(false, true)
    };
    let app = spawn(webhooks).await;
    subscribe(&app, "http://127.0.0.1:9/slow", &["customer.created"]);
    subscribe(&app, "http://127.0.0.1:9/other", &["customer.created"]);
    for _ in 0..5 {
        app.create_customer(Default::default());
    }
    let limits = delivery::Limits {
        batch: 100,
        per_endpoint: 3,
        lease: chrono::Duration::minutes(2),
    };
    let first = delivery::claim(&mut app.conn(), Utc::now(), limits).unwrap();
    assert_eq!(first.len(), 6, "three for each endpoint");
    let second = delivery::claim(&mut app.conn(), Utc::now(), limits).unwrap();
    assert!(
        second.is_empty(),
        "both endpoints are full while those are in flight"
    );
}

/// A subscription failing for 3 days is turned off; the admins get an email and the
/// webhooks page says so. Turning it on again clears the notice.
#[apply(integration_test!)]
async fn three_days_of_failures_turn_a_subscription_off() {
    let receiver = Receiver::start().await;
    let webhooks = settings(false, true);
    let app = spawn(webhooks.clone()).await;
    app.login_as(Role::Admin).await;
    let (key, _) = subscribe(&app, &receiver.url("127.0.0.1", "/hook"), &["customer.created"]);
    receiver.then(&[Answer::Status(500); 4]);
    app.create_customer(Default::default());
    assert_eq!(pass(&app, &webhooks, minutes(0)).await, 1);
    let mails_before: i64 = mail_outbox::table.count().get_result(&mut app.conn()).unwrap();
    app.create_customer(Default::default());
    // A failure over 3 days after the streak began.
    assert_eq!(
        pass(&app, &webhooks, chrono::Duration::days(3) + minutes(5)).await,
        2
    );
    let (active, disabled_at): (bool, Option<chrono::DateTime<Utc>>) = webhook_subscriptions::table
        .select((
            webhook_subscriptions::is_active,
            webhook_subscriptions::auto_disabled_at,
        ))
        .first(&mut app.conn())
        .unwrap();
    assert!(!active && disabled_at.is_some());
    let subjects: Vec<String> = mail_outbox::table
        .select(mail_outbox::subject)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(
        subjects.len() as i64,
        mails_before + 1,
        "one email to the one admin"
    );
    assert!(subjects.last().unwrap().contains("turned off"));
    assert_eq!(
        pass(&app, &webhooks, chrono::Duration::days(4)).await,
        0,
        "off: nothing sent"
    );

    let (status, html) = app.browser.get_html("/webhooks").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("because every delivery failed for 3 days"),
        "{html}"
    );
    let response = app
        .browser
        .post_form(&format!("/webhooks/{key}/toggle"), &[])
        .await;
    assert_eq!(response.status(), 303);
    let (_, html) = app.browser.get_html("/webhooks").await;
    assert!(!html.contains("because every delivery failed for 3 days"));
}

/// The dashboard: create (the secret shown once, after a redirect), a refused URL next to
/// its field, edit, test event, rotation, the log with its filters and resend, the
/// customer page's link, delete; admins only.
#[apply(integration_test!)]
async fn admins_manage_webhooks_on_the_dashboard() {
    let receiver = Receiver::start().await;
    let webhooks = settings(false, true);
    let app = spawn(webhooks.clone()).await;
    app.login_as(Role::Admin).await;
    let browser = &app.browser;
    let url = receiver.url("127.0.0.1", "/hook");
    let (_, form) = browser.get_html("/webhooks/new").await;
    let form_token = crate::helpers::form_token_in(&form).expect("the form has a one-time token");

    let refused = browser
        .post_form(
            "/webhooks",
            &[
                ("name", "Backend"),
                ("url", "ftp://example.com/"),
                ("events", "customer.created"),
                ("form_token", &form_token),
            ],
        )
        .await;
    assert_eq!(refused.status(), 422);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("The URL must start with https://"));
    let refused = browser
        .post_form(
            "/webhooks",
            &[("name", "Backend"), ("url", &url), ("form_token", &form_token)],
        )
        .await;
    assert_eq!(refused.status(), 422, "no event chosen");

    let created = browser
        .post_form(
            "/webhooks",
            &[
                ("name", "Backend"),
                ("url", &url),
                ("events", "customer.created"),
                ("events", "customer.deleted"),
                ("is_active", "on"),
                ("form_token", &form_token),
            ],
        )
        .await;
    assert_eq!(created.status(), 303);
    assert_eq!(location(&created), "/webhooks");
    let (key, secret): (String, String) = webhook_subscriptions::table
        .select((webhook_subscriptions::key, webhook_subscriptions::secret))
        .first(&mut app.conn())
        .unwrap();
    let (_, html) = browser.get_html("/webhooks").await;
    assert!(
        html.contains(&secret) && html.contains("Copy secret"),
        "shown once"
    );
    let (_, html) = browser.get_html("/webhooks").await;
    assert!(!html.contains(&secret), "and never again");
    assert!(html.contains("customer.created, customer.deleted"));

    let (status, html) = browser.get_html(&format!("/webhooks/{key}/edit")).await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"value="customer.deleted" checked"#));
    let edited = browser
        .post_form(
            &format!("/webhooks/{key}/edit"),
            &[
                ("name", "Billing"),
                ("url", &url),
                ("all_events", "on"),
                ("is_active", "on"),
            ],
        )
        .await;
    assert_eq!(edited.status(), 303);
    let (_, html) = browser.get_html("/webhooks").await;
    assert!(html.contains("Billing") && html.contains("all events"));

    // A test event, failing once: the log shows it, filters find it, resend sends it again.
    receiver.then(&[Answer::Status(500)]);
    assert_eq!(
        browser
            .post_form(&format!("/webhooks/{key}/test"), &[])
            .await
            .status(),
        303
    );
    assert_eq!(pass(&app, &webhooks, minutes(0)).await, 1);
    let (_, html) = browser.get_html(&format!("/webhooks/{key}/deliveries")).await;
    assert!(
        html.contains("webhook.test") && html.contains("answer is 500"),
        "{html}"
    );
    let (_, html) = browser
        .get_html(&format!("/webhooks/{key}/deliveries?outcome=success"))
        .await;
    assert!(html.contains("No attempts match these filters"));
    let (_, html) = browser
        .get_html(&format!(
            "/webhooks/{key}/deliveries?event=webhook.test&outcome=failure"
        ))
        .await;
    assert!(html.contains("answer is 500"));
    assert_eq!(pass(&app, &webhooks, minutes(2)).await, 1);
    let delivery_id: i64 = webhook_deliveries::table
        .select(webhook_deliveries::id)
        .first(&mut app.conn())
        .unwrap();
    let resent = browser
        .post_form(&format!("/webhooks/{key}/deliveries/{delivery_id}/resend"), &[])
        .await;
    assert_eq!(resent.status(), 303);
    assert_eq!(pass(&app, &webhooks, minutes(3)).await, 1);
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| *id == ids[0]), "resending keeps the event id");

    // Resend failed: a bad range is refused next to its field.
    let refused = browser
        .post_form(
            &format!("/webhooks/{key}/resend-failed"),
            &[("from", "yesterday"), ("to", "2026-01-01T00:00")],
        )
        .await;
    assert_eq!(refused.status(), 422);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("Enter the start as a date and time"));

    // The customer page links to the deliveries about that customer.
    app.create_customer(referdesk::domain::customers::CustomerInput {
        key: Some("ada-key".into()),
        ..Default::default()
    });
    assert_eq!(pass(&app, &webhooks, minutes(4)).await, 1);
    let (_, html) = browser.get_html("/customers/ada-key").await;
    assert!(html.contains("/webhooks/deliveries?customer=ada-key"));
    let (status, html) = browser.get_html("/webhooks/deliveries?customer=ada-key").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<code>customer.created</code>") && !html.contains("<code>webhook.test</code>"),
        "{html}"
    );

    let rotated = browser.post_form(&format!("/webhooks/{key}/rotate"), &[]).await;
    assert_eq!(rotated.status(), 303);
    let (_, html) = browser.get_html("/webhooks").await;
    assert!(html.contains("New signing secret") && html.contains("old secret signs too"));

    // Other roles get nothing.
    let (_, support) = app.signed_in_browser("support@example.com", Role::Support).await;
    assert_eq!(support.get("/webhooks").await.status(), 403);
    assert_eq!(
        support
            .post_form(&format!("/webhooks/{key}/delete"), &[])
            .await
            .status(),
        403
    );

    let deleted = browser.post_form(&format!("/webhooks/{key}/delete"), &[]).await;
    assert_eq!(deleted.status(), 303);
    let left: i64 = webhook_attempts::table
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(left, 0, "its log went with it");
}

/// The pruning pass deletes attempts (and finished deliveries) past the retention.
#[apply(integration_test!)]
async fn old_attempts_are_pruned() {
    let receiver = Receiver::start().await;
    let webhooks = settings(false, true);
    let app = spawn(webhooks.clone()).await;
    subscribe(&app, &receiver.url("127.0.0.1", "/hook"), &["customer.created"]);
    app.create_customer(Default::default());
    assert_eq!(pass(&app, &webhooks, minutes(0)).await, 1);
    diesel::update(webhook_attempts::table)
        .set(webhook_attempts::attempted_at.eq(Utc::now() - chrono::Duration::days(31)))
        .execute(&mut app.conn())
        .unwrap();
    diesel::update(webhook_deliveries::table)
        .set(webhook_deliveries::updated_at.eq(Utc::now() - chrono::Duration::days(31)))
        .execute(&mut app.conn())
        .unwrap();
    diesel::update(webhook_events::table)
        .set(webhook_events::created_at.eq(Utc::now() - chrono::Duration::days(31)))
        .execute(&mut app.conn())
        .unwrap();
    let (_, pruned) = referdesk::domain::maintenance::prune_with(
        &mut app.conn(),
        chrono::Duration::zero(),
        chrono::Duration::days(30),
    )
    .unwrap()
    .expect("nobody else is pruning");
    assert_eq!((pruned.attempts, pruned.deliveries, pruned.events), (1, 1, 1));
}

/// `referdesk serve` as its own process on the test's database, delivering webhooks.
fn server_process(app: &TestApp, name: &str) -> std::process::Child {
    let data_dir = std::env::temp_dir().join(format!("referdesk-webhooks-{}-{name}", std::process::id()));
    std::process::Command::new(env!("CARGO_BIN_EXE_referdesk"))
        .arg("serve")
        .env("DATABASE_URL", &app.database_url)
        .env("REFERDESK_DATA_DIR", &data_dir)
        .env("REFERDESK_BIND", "127.0.0.1:0")
        .env(
            "REFERDESK_SECRET",
            "test-secret-test-secret-test-secret-0123456789",
        )
        .env("REFERDESK_WORKERS", "1")
        .env("REFERDESK_POOL_SIZE", "3")
        .env("REFERDESK_WEBHOOK_ALLOW_HTTP", "1")
        .env("REFERDESK_WEBHOOK_ALLOW_PRIVATE", "1")
        .env("REFERDESK_WEBHOOK_PER_ENDPOINT", "8")
        .env("REFERDESK_WEBHOOK_LEASE_SECS", "15")
        .env("REFERDESK_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the referdesk binary starts")
}

/// Two server processes on one database deliver 1,000 events; one is killed with SIGKILL
/// half-way. Every event arrives, none is lost, and only those the killed process had in
/// flight (at most the endpoint's 8) arrive twice.
#[apply(integration_test!)]
async fn a_process_killed_mid_way_loses_no_event() {
    let receiver = Receiver::start().await;
    receiver.delay_ms.store(10, std::sync::atomic::Ordering::SeqCst);
    let app = spawn(settings(false, true)).await;
    subscribe(&app, &receiver.url("127.0.0.1", "/hook"), &["customer.created"]);
    for _ in 0..1000 {
        app.create_customer(Default::default());
    }
    let mut first = server_process(&app, "a");
    let mut second = server_process(&app, "b");
    let waited = std::time::Instant::now();
    while receiver.received().len() < 300 {
        assert!(waited.elapsed() < Duration::from_secs(60), "deliveries started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let pending = || -> i64 {
        webhook_deliveries::table
            .filter(webhook_deliveries::status.ne("delivered"))
            .count()
            .get_result(&mut app.conn())
            .unwrap()
    };
    while pending() > 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "{} deliveries left",
            pending()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = second.kill();
    let _ = second.wait();
    let received = receiver.received();
    let mut ids: Vec<String> = received
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "every event arrived");
    let duplicates = received.len() - ids.len();
    assert!(
        duplicates <= 8,
        "{duplicates} duplicates: more than the killed process had in flight"
    );
}

/// The backlog of an endpoint that is full never stands in front of another endpoint's
/// deliveries.
#[apply(integration_test!)]
async fn a_full_endpoint_does_not_hold_up_the_others() {
    let app = spawn(settings(false, true)).await;
    let limits = delivery::Limits {
        batch: 2,
        per_endpoint: 2,
        lease: chrono::Duration::minutes(2),
    };
    subscribe(&app, "http://127.0.0.1:9/slow", &["customer.created"]);
    for _ in 0..20 {
        app.create_customer(Default::default());
    }
    subscribe(&app, "http://127.0.0.1:9/other", &["customer.created"]);
    app.create_customer(Default::default());
    let first = delivery::claim(&mut app.conn(), Utc::now(), limits).unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|claimed| claimed.url.ends_with("/slow")));
    // The slow endpoint is full; its 18 older deliveries wait, the other one goes.
    let second = delivery::claim(&mut app.conn(), Utc::now(), limits).unwrap();
    assert_eq!(second.len(), 1);
    assert!(second[0].url.ends_with("/other"));
}

/// The new-webhook form carries a one-time token: two quick sends of the same form (a
/// double click) make one subscription, the second answer shows the same secret and says
/// so; a form without its token is refused and makes nothing.
#[apply(integration_test!)]
async fn a_webhook_form_sent_twice_makes_one_subscription() {
    let receiver = Receiver::start().await;
    let url = receiver.url("127.0.0.1", "/hook");
    let app = spawn(settings(false, true)).await;
    app.login_as(Role::Admin).await;
    let browser = &app.browser;
    let count = || -> i64 {
        webhook_subscriptions::table
            .count()
            .get_result(&mut app.conn())
            .unwrap()
    };

    let fields = |token: &str| {
        vec![
            ("name".to_string(), "Backend".to_string()),
            ("url".to_string(), url.clone()),
            ("all_events".to_string(), "on".to_string()),
            ("is_active".to_string(), "on".to_string()),
            ("form_token".to_string(), token.to_string()),
        ]
    };
    let without: Vec<(String, String)> = fields("")
        .into_iter()
        .filter(|(name, _)| name != "form_token")
        .collect();
    let without: Vec<(&str, &str)> = without.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let refused = browser.post_form("/webhooks", &without).await;
    assert_eq!(refused.status(), 422);
    let html = refused.text().await.unwrap();
    assert!(html.contains("This form is incomplete or expired"), "{html}");
    assert!(
        crate::helpers::form_token_in(&html).is_some(),
        "a fresh token to send again"
    );
    assert_eq!(count(), 0);

    let (_, form) = browser.get_html("/webhooks/new").await;
    let form_token = crate::helpers::form_token_in(&form).expect("the form has a one-time token");
    let sent = fields(&form_token);
    let sent: Vec<(&str, &str)> = sent.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    // Sent at once, as a double click does.
    let (first, second) = tokio::join!(
        browser.post_form("/webhooks", &sent),
        browser.post_form("/webhooks", &sent)
    );
    assert_eq!(first.status(), 303);
    assert_eq!(second.status(), 303);
    assert_eq!(count(), 1, "one subscription for one form");
    // And once more afterwards (the back button and a re-post).
    let again = browser.post_form("/webhooks", &sent).await;
    assert_eq!(again.status(), 303);
    assert_eq!(count(), 1);
    let secret: String = webhook_subscriptions::table
        .select(webhook_subscriptions::secret)
        .first(&mut app.conn())
        .unwrap();
    let (_, html) = browser.get_html("/webhooks").await;
    assert!(html.contains("This form was already submitted"), "{html}");
    assert!(html.contains(&secret), "the answer shown carries the secret");

    // A new form makes a new subscription.
    let (_, form) = browser.get_html("/webhooks/new").await;
    let fresh = crate::helpers::form_token_in(&form).unwrap();
    assert_ne!(fresh, form_token);
    let sent = fields(&fresh);
    let sent: Vec<(&str, &str)> = sent.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(browser.post_form("/webhooks", &sent).await.status(), 303);
    assert_eq!(count(), 2);
}
