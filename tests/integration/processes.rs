//! Several server processes on one database: two real `referdesk serve` processes, driven
//! alternately, count, credit, throttle and deliver exactly as one would — and one killed
//! with SIGKILL in the middle of delivering mail loses nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{balance_transactions, invites, mail_outbox, programs as programs_table};
use referdesk::domain::{programs, tokens, Actor};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::helpers::{fresh_database, TestApp};
use crate::integration_test;
use crate::invites::SmtpStub;
use crate::reliability::shutdown::{read_log, Server};

/// Requests in flight at once, across both processes.
const IN_FLIGHT: usize = 48;

/// Two servers on one database, each with its own data dir (and log) under `dir`.
struct Pair {
    dir: PathBuf,
    servers: [Server; 2],
    token: String,
    client: reqwest::Client,
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rd-{name}-{}", referdesk::random::random_token(8)));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::create_dir_all(dir.join("b")).unwrap();
    dir
}

impl Pair {
    /// Starts both at the same moment on `database_url` (migrated or not), with `env`.
    async fn start(database_url: &str, name: &str, env: &[(&str, &str)]) -> Pair {
        let dir = scratch_dir(name);
        let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
        let (a, b) = tokio::join!(
            Server::start_with(database_url, &dir_a, "server.log", env),
            Server::start_with(database_url, &dir_b, "server.log", env),
        );
        let mut conn = PgConnection::establish(database_url).unwrap();
        let program = programs::find_by_slug(&mut conn, "default").unwrap();
        let (_, token) = tokens::create(&mut conn, program.id, "processes", &Actor::system()).unwrap();
        Pair {
            dir,
            servers: [a, b],
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// The process for the `n`-th request: they take turns.
    fn address(&self, n: usize) -> String {
        self.servers[n % 2].address.clone()
    }

    fn log(&self, which: usize) -> String {
        read_log(&self.dir.join(["a", "b"][which]), "server.log")
    }

    /// Sends `count` requests, the `n`-th to process `n % 2`, at most [`IN_FLIGHT`] at a
    /// time; `build` makes each. Returns each request's status and body, in order.
    async fn burst(
        &self,
        count: usize,
        build: impl Fn(&reqwest::Client, String, usize) -> reqwest::RequestBuilder,
    ) -> Vec<(u16, Value)> {
        let gate = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut tasks = Vec::new();
        for n in 0..count {
            let request = build(&self.client, self.address(n), n).bearer_auth(&self.token);
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let response = request.send().await.expect("the server answers");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap_or(Value::Null))
            }));
        }
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    async fn get(&self, which: usize, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/v1{path}", self.servers[which].address))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path} from process {which}");
        response.json().await.unwrap()
    }

    fn assert_clean_logs(&self) {
        for which in 0..2 {
            let log = self.log(which);
            assert!(!log.contains("panicked"), "process {which}:\n{log}");
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn statuses(answers: &[(u16, Value)]) -> HashMap<u16, usize> {
    let mut counted = HashMap::new();
    for (status, _) in answers {
        *counted.entry(*status).or_default() += 1;
    }
    counted
}

/// Polls until `check` holds, failing the test after `limit`.
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same server, a database that does not exist yet (named after a fresh one, so the
/// run's cleanup drops it).
fn empty_database() -> String {
    let fresh = fresh_database();
    let (base, query) = match fresh.split_once('?') {
        Some((base, query)) => (base.to_string(), format!("?{query}")),
        None => (fresh.clone(), String::new()),
    };
    format!("{base}_empty{query}")
}

/// Two processes started at the same moment on a database that does not exist: one
/// creates and migrates it under the advisory lock, the other waits and then starts; each
/// migration is applied once and the default program exists once.
#[apply(integration_test!)]
async fn two_processes_starting_at_once_on_an_empty_database_migrate_it_once() {
    let url = empty_database();
    let pair = Pair::start(&url, "migrate", &[]).await;
    let mut conn = PgConnection::establish(&url).unwrap();
    #[derive(QueryableByName)]
    struct Counted {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        applied: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        versions: i64,
    }
    let counted: Counted = diesel::sql_query(
        "SELECT count(*) AS applied, count(DISTINCT version) AS versions FROM __diesel_schema_migrations",
    )
    .get_result(&mut conn)
    .unwrap();
    let embedded = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count() as i64;
    assert_eq!((counted.applied, counted.versions), (embedded, embedded));
    let defaults: i64 = programs_table::table
        .filter(programs_table::slug.eq("default"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(defaults, 1);
    for which in 0..2 {
        assert_eq!(pair.get(which, "/customers").await["data"], json!([]));
    }
    pair.assert_clean_logs();
}

/// 200 referred signups and 100 credits on one customer, sent concurrently and split
/// across both processes: every one booked once, counts and balance exact, read alike
/// from either process.
#[apply(integration_test!)]
async fn two_processes_count_referrals_and_credits_exactly() {
    let url = fresh_database();
    let pair = Pair::start(&url, "counts", &[]).await;
    let created = pair
        .client
        .post(format!("{}/v1/customers", pair.address(0)))
        .bearer_auth(&pair.token)
        .json(&json!({"id": "referrer", "key": "referrer", "email": "referrer@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let signups = pair
        .burst(200, |client, address, n| {
            client.post(format!("{address}/v1/customers")).json(&json!({
                "email": format!("friend{n}@example.com"),
                "referring_customer": {"key": "referrer"},
            }))
        })
        .await;
    assert_eq!(statuses(&signups), HashMap::from([(201, 200)]), "{signups:?}");

    let credits = pair
        .burst(100, |client, address, n| {
            client
                .post(format!("{address}/v1/customers/referrer/balance/credit"))
                .header("Idempotency-Key", format!("credit-{n}"))
                .json(&json!({"amount": "1.25", "amount_units": "USD", "is_currency": true}))
        })
        .await;
    assert_eq!(statuses(&credits), HashMap::from([(201, 100)]), "{credits:?}");

    for which in 0..2 {
        let referrer = pair.get(which, "/customers/referrer").await;
        assert_eq!(referrer["data"]["referrals_count"], 200, "process {which}");
        let balance = pair.get(which, "/customers/referrer/balance").await;
        let currency = balance["data"]["balance"]["currency"].as_array().unwrap();
        let usd = currency.iter().find(|b| b["amount_units"] == "USD").unwrap();
        assert_eq!(usd["amount"], 125.0, "process {which}: {balance}");
    }
    let mut conn = PgConnection::establish(&url).unwrap();
    let booked: i64 = balance_transactions::table.count().get_result(&mut conn).unwrap();
    assert_eq!(booked, 100);
    pair.assert_clean_logs();
}

/// `REFERDESK_API_RATE` is per token across every process: with 60 a minute, 100 calls
/// split across two processes within one minute get 60 answers and 40 refusals — not 100
/// answers, as two processes counting apart (50 each, under 60) would give.
#[apply(integration_test!)]
async fn the_api_rate_is_enforced_across_both_processes() {
    let url = fresh_database();
    let pair = Pair::start(&url, "rate", &[("REFERDESK_API_RATE", "60")]).await;
    // The whole burst within one window of the database clock.
    let mut conn = PgConnection::establish(&url).unwrap();
    loop {
        #[derive(QueryableByName)]
        struct Second {
            #[diesel(sql_type = diesel::sql_types::Double)]
            second: f64,
        }
        let now: Second = diesel::sql_query("SELECT extract(second FROM now())::float8 AS second")
            .get_result(&mut conn)
            .unwrap();
        if now.second < 40.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let calls = pair
        .burst(100, |client, address, _| {
            client.get(format!("{address}/v1/customers"))
        })
        .await;
    let counted = statuses(&calls);
    assert_eq!(counted, HashMap::from([(200, 60), (429, 40)]), "{calls:?}");
    let answered_by = |which: usize| {
        calls
            .iter()
            .enumerate()
            .filter(|(n, (status, _))| n % 2 == which && *status == 200)
            .count()
    };
    println!(
        "rate: 60 answers in all, {} by one process and {} by the other",
        answered_by(0),
        answered_by(1)
    );
    assert!(
        answered_by(0) > 0 && answered_by(1) > 0,
        "both processes answered"
    );
    pair.assert_clean_logs();
}

/// The outbox ids of the messages an SMTP server received, from their `Message-ID`s.
fn received_ids(smtp: &SmtpStub) -> Vec<i64> {
    smtp.messages()
        .iter()
        .map(|message| {
            let at =
                message.data.find("<referdesk.outbox.").expect("a Message-ID") + "<referdesk.outbox.".len();
            let rest = &message.data[at..];
            rest[..rest.find('.').unwrap()].parse().unwrap()
        })
        .collect()
}

fn queued(conn: &mut PgConnection) -> i64 {
    mail_outbox::table
        .filter(mail_outbox::status.ne("sent"))
        .count()
        .get_result(conn)
        .unwrap()
}

async fn invite_burst(pair: &Pair, count: usize, tag: &str) {
    let invited = pair
        .burst(count, |client, address, n| {
            client
                .post(format!("{address}/v1/customers:invite"))
                .json(&json!({"email": format!("{tag}{n}@example.com"), "name": "Friend"}))
        })
        .await;
    let accepted = invited
        .iter()
        .filter(|(status, _)| (200..300).contains(status))
        .count();
    assert_eq!(accepted, count, "{invited:?}");
}

fn mails_sent_by(pair: &Pair, which: usize) -> usize {
    pair.log(which).matches("mail sent").count()
}

/// 100 invites queued through both processes: both mail workers deliver (each woken by
/// the other's NOTIFY too), and each message reaches the SMTP server exactly once.
#[apply(integration_test!)]
async fn invites_from_both_processes_are_each_delivered_once() {
    let smtp = SmtpStub::start(0, Duration::from_millis(20)).await;
    let url = fresh_database();
    let smtp_url = smtp.url();
    let pair = Pair::start(&url, "invites", &[("REFERDESK_SMTP_URL", smtp_url.as_str())]).await;
    invite_burst(&pair, 100, "friend").await;
    let mut conn = PgConnection::establish(&url).unwrap();
    eventually("every invite sent", Duration::from_secs(120), || {
        queued(&mut conn) == 0
    })
    .await;

    let mut ids = received_ids(&smtp);
    ids.sort_unstable();
    let stored: Vec<i64> = mail_outbox::table
        .select(mail_outbox::id)
        .order(mail_outbox::id)
        .load(&mut conn)
        .unwrap();
    assert_eq!(stored.len(), 100);
    assert_eq!(ids, stored, "each message received exactly once");
    let (a, b) = (mails_sent_by(&pair, 0), mails_sent_by(&pair, 1));
    println!("invites: process a sent {a}, process b sent {b}");
    assert_eq!(a + b, 100);
    assert!(a > 0 && b > 0, "both workers took part: {a} and {b}");
    pair.assert_clean_logs();
}

/// One process killed with SIGKILL while the mail workers deliver: the other delivers
/// every message, and none twice except the one the killed process had in flight (sent,
/// but its transaction never committed).
#[apply(integration_test!)]
async fn a_process_killed_mid_delivery_loses_no_mail_and_repeats_at_most_one() {
    let smtp = SmtpStub::start(0, Duration::from_millis(40)).await;
    let url = fresh_database();
    let smtp_url = smtp.url();
    let mut pair = Pair::start(&url, "sigkill", &[("REFERDESK_SMTP_URL", smtp_url.as_str())]).await;
    invite_burst(&pair, 100, "kill").await;
    eventually("deliveries under way", Duration::from_secs(60), || {
        smtp.messages().len() >= 20
    })
    .await;
    pair.servers[0].child.kill().expect("SIGKILL");
    pair.servers[0].child.wait().unwrap();
    let at_kill = smtp.messages().len();

    let mut conn = PgConnection::establish(&url).unwrap();
    eventually(
        "every invite sent after the kill",
        Duration::from_secs(120),
        || queued(&mut conn) == 0,
    )
    .await;
    let ids = received_ids(&smtp);
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let stored: Vec<i64> = mail_outbox::table
        .select(mail_outbox::id)
        .order(mail_outbox::id)
        .load(&mut conn)
        .unwrap();
    assert_eq!(distinct, stored, "every message delivered");
    let repeated = ids.len() - distinct.len();
    println!(
        "sigkill: {at_kill} received when killed, {} in all, {repeated} repeated",
        ids.len()
    );
    assert!(repeated <= 1, "{repeated} messages delivered twice");
    let unsent: i64 = invites::table
        .filter(invites::status.ne("sent"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(unsent, 0, "every invite shows as sent");
    assert!(mails_sent_by(&pair, 1) > 0, "the surviving process took over");
}

/// A message queued by anyone — here straight into the table, as another process would —
/// wakes the mail worker through its NOTIFY, long before the fallback poll; and after the
/// listener's connection is cut, it connects again and wakes the worker again.
#[apply(integration_test!)]
async fn queued_mail_wakes_the_worker_through_notify_and_after_a_lost_listener() {
    let app = TestApp::spawn().await;
    let mut conn = app.conn();
    let mut deliver = |recipient: &str| {
        diesel::insert_into(mail_outbox::table)
            .values((
                mail_outbox::recipient.eq(recipient),
                mail_outbox::subject.eq("Hello"),
                mail_outbox::body_text.eq("text"),
                mail_outbox::body_html.eq("<p>html</p>"),
            ))
            .returning(mail_outbox::id)
            .get_result::<i64>(&mut conn)
            .unwrap()
    };
    let sent_within = |id: i64, limit: Duration| {
        let pool = app.pool.clone();
        async move {
            let started = Instant::now();
            loop {
                let status: String = mail_outbox::table
                    .find(id)
                    .select(mail_outbox::status)
                    .first(&mut pool.get().unwrap())
                    .unwrap();
                if status == "sent" {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < limit,
                    "message {id} not sent within {limit:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The fallback poll is 10 s; half of it is a wide margin for a loaded machine.
    let limit = referdesk::mail::FALLBACK_POLL / 2;
    // Let the worker finish its first pass and go to sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = deliver("first@example.com");
    let took = sent_within(first, limit).await;
    println!("notify: sent {took:?} after it was queued");

    let cut: Vec<bool> = diesel::sql_query(
        "SELECT pg_terminate_backend(pid) AS cut FROM pg_stat_activity
         WHERE application_name = $1 AND datname = current_database()",
    )
    .bind::<diesel::sql_types::Text, _>(referdesk::db::listener::APPLICATION_NAME)
    .load::<Terminated>(&mut app.conn())
    .unwrap()
    .into_iter()
    .map(|row| row.cut)
    .collect();
    assert_eq!(cut, vec![true], "the listener's one connection");
    eventually("the listener is back", Duration::from_secs(20), || {
        diesel::sql_query(
            "SELECT true AS cut FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        )
        .bind::<diesel::sql_types::Text, _>(referdesk::db::listener::APPLICATION_NAME)
        .load::<Terminated>(&mut app.conn())
        .unwrap()
        .len()
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = deliver("second@example.com");
    sent_within(second, limit).await;
}

#[derive(QueryableByName)]
struct Terminated {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    cut: bool,
}

/// The channels heard on `conn` within `wait` (each once, sorted).
async fn heard(conn: &mut PgConnection, wait: Duration) -> Vec<String> {
    let started = Instant::now();
    let mut channels = Vec::new();
    while started.elapsed() < wait {
        for notification in conn.notifications_iter() {
            channels.push(notification.unwrap().channel);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    channels.sort();
    channels.dedup();
    channels
}

/// Queued work announces itself on its channel when — and only when — the transaction that
/// queues it commits: mail, webhook deliveries, rewards that may be credited now, and jobs.
#[apply(integration_test!)]
async fn queued_work_notifies_its_channel_at_commit() {
    use crate::reward_fixtures::{insert_pair, insert_reward, insert_rule, pending};
    use referdesk::db::listener::{JOBS, MAIL, REWARDS, WEBHOOKS};
    use referdesk::db::schema::rewards;
    use referdesk::domain::customers::{self, CustomerInput, NewCustomer};
    let app = TestApp::spawn().await;
    let mut listening = PgConnection::establish(&app.database_url).unwrap();
    use diesel::connection::SimpleConnection;
    listening
        .batch_execute(&format!(
            "LISTEN {MAIL}; LISTEN {WEBHOOKS}; LISTEN {REWARDS}; LISTEN {JOBS}"
        ))
        .unwrap();
    let quiet = Duration::from_millis(400);
    let mut conn = app.conn();
    let queue_mail = |conn: &mut PgConnection| {
        diesel::insert_into(mail_outbox::table)
            .values((
                mail_outbox::recipient.eq("someone@example.com"),
                mail_outbox::subject.eq("Hello"),
                mail_outbox::body_text.eq("text"),
                mail_outbox::body_html.eq("<p>html</p>"),
            ))
            .execute(conn)
            .map(|_| ())
    };

    // Rolled back: nobody hears of it.
    let _ = conn.transaction::<(), diesel::result::Error, _>(|conn| {
        queue_mail(conn)?;
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert_eq!(heard(&mut listening, quiet).await, Vec::<String>::new());
    queue_mail(&mut conn).unwrap();
    assert_eq!(heard(&mut listening, quiet).await, vec![MAIL.to_string()]);

    // Rewards: one waiting for a reviewer is no work for the release; approved after its
    // hold, it is; one that needs no approval is work at once, unless still on hold.
    let rule = insert_rule(&app, "Announced");
    let waiting = insert_reward(&app, rule, insert_pair(&app, "w"), pending("5.00"));
    assert_eq!(heard(&mut listening, quiet).await, Vec::<String>::new());
    diesel::update(rewards::table.find(waiting))
        .set(rewards::status.eq("approved"))
        .execute(&mut conn)
        .unwrap();
    assert_eq!(heard(&mut listening, quiet).await, vec![REWARDS.to_string()]);
    let mut on_hold = pending("5.00");
    on_hold.needs_approval = false;
    on_hold.hold_until = chrono::Utc::now() + chrono::Duration::days(3);
    insert_reward(&app, rule, insert_pair(&app, "h"), on_hold);
    assert_eq!(heard(&mut listening, quiet).await, Vec::<String>::new());
    let mut due = pending("5.00");
    due.needs_approval = false;
    insert_reward(&app, rule, insert_pair(&app, "d"), due);
    assert_eq!(heard(&mut listening, quiet).await, vec![REWARDS.to_string()]);

    // A webhook delivery: a customer created while a subscription wants its event.
    crate::webhooks::subscribe(&app, "http://127.0.0.1:9/hook", &["customer.created"]);
    let program = app.default_program();
    let new = NewCustomer::parse(CustomerInput {
        key: Some("announced".into()),
        email: Some("announced@example.com".into()),
        ..Default::default()
    })
    .unwrap();
    customers::create(&mut conn, &program, &Actor::system(), new).unwrap();
    assert_eq!(heard(&mut listening, quiet).await, vec![WEBHOOKS.to_string()]);

    // A background job (held by another process's lease here, so this one's job thread
    // leaves it alone): its insert wakes the job threads.
    diesel::sql_query(format!(
        "INSERT INTO jobs (program_id, kind, status, actor_label, lease_owner, lease_until, started_at) \
         VALUES ({}, 'customers.approve', 'running', 'test', 'elsewhere', now() + interval '1 hour', now())",
        program.id
    ))
    .execute(&mut conn)
    .unwrap();
    assert_eq!(heard(&mut listening, quiet).await, vec![JOBS.to_string()]);
}
