//! Graceful shutdown of the real binary: SIGTERM while credits and invites are in flight.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, balance_transactions, invites, mail_outbox};
use referdesk::domain::customers::{self, CustomerInput, NewCustomer};
use referdesk::domain::{programs, tokens, Actor};

use crate::helpers::fresh_database;
use crate::integration_test;

const CREDITS: usize = 80;
const INVITES: usize = 40;
const CUSTOMERS: usize = 8;
/// The longest a stop may take: in-flight requests, then the mail worker's message.
const STOP_LIMIT: Duration = Duration::from_secs(40);

/// `referdesk serve` as a child process (also started twice on one database by
/// `processes`).
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) address: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

impl Server {
    /// Starts `referdesk serve` with file mail delivery under `data_dir`.
    async fn start(database_url: &str, data_dir: &Path, log_name: &str) -> Server {
        Server::start_with(database_url, data_dir, log_name, &[]).await
    }

    /// [`Server::start`] with more (or other) environment variables.
    pub(crate) async fn start_with(
        database_url: &str,
        data_dir: &Path,
        log_name: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let port = free_port();
        let log = std::fs::File::create(data_dir.join(log_name)).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_referdesk"));
        let child = command
            .arg("serve")
            .current_dir(data_dir)
            .env("DATABASE_URL", database_url)
            .env("REFERDESK_BIND", format!("127.0.0.1:{port}"))
            .env("REFERDESK_DATA_DIR", data_dir)
            .env("REFERDESK_SECRET", "shutdown-test-secret-0123456789-0123456789")
            .env("REFERDESK_WORKERS", "2")
            .env("REFERDESK_POOL_SIZE", "8")
            .env("REFERDESK_API_RATE", "100000")
            .env("REFERDESK_LOG", "info")
            .env_remove("REFERDESK_SMTP_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the referdesk binary starts");
        let server = Server {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = client
                .get(format!("{}/readyz", server.address))
                .send()
                .await
                .map(|response| response.status() == 200)
                .unwrap_or(false);
            if ready {
                return server;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server did not become ready:\n{}",
                read_log(data_dir, log_name)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM was delivered");
    }

    /// Waits for the process to end; its exit status and how long it took.
    pub(crate) async fn wait(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("process status") {
                return (status, started.elapsed());
            }
            if started.elapsed() > STOP_LIMIT {
                let _ = self.child.kill();
                panic!("the server did not stop within {STOP_LIMIT:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn read_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[derive(Debug)]
enum Outcome {
    /// The server answered with this status.
    Answered(u16),
    /// No answer: the connection was refused or closed (the server had stopped).
    NoAnswer,
}

struct Request {
    kind: &'static str,
    /// The Idempotency-Key of a credit, the address of an invite.
    subject: String,
    outcome: Outcome,
    /// Answered after SIGTERM was sent.
    after_signal: bool,
}

async fn credit(client: &reqwest::Client, address: &str, token: &str, customer: &str, key: &str) -> Outcome {
    let sent = client
        .post(format!("{address}/v1/customers/{customer}/balance/credit"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({"amount": "2.50", "amount_units": "USD", "is_currency": true}))
        .send()
        .await;
    match sent {
        Ok(response) => Outcome::Answered(response.status().as_u16()),
        Err(_) => Outcome::NoAnswer,
    }
}

fn mail_files(dir: &Path) -> (Vec<i64>, usize) {
    let mut sent = Vec::new();
    let mut partial = 0;
    for entry in std::fs::read_dir(dir.join("mail")).expect("mail folder") {
        let name = entry.expect("entry").file_name().to_string_lossy().to_string();
        if name.ends_with(".partial") {
            partial += 1;
        } else if let Some((id, _)) = name.split_once('-') {
            sent.push(id.parse().expect("an outbox id"));
        }
    }
    sent.sort();
    (sent, partial)
}

/// Every message is sent with its file written, or still queued with none: nothing half-done.
fn assert_mail_consistent(conn: &mut PgConnection, dir: &Path) -> (usize, usize) {
    let rows: Vec<(i64, Option<i64>, String)> = mail_outbox::table
        .select((mail_outbox::id, mail_outbox::invite_id, mail_outbox::status))
        .order(mail_outbox::id)
        .load(conn)
        .unwrap();
    let (files, partial) = mail_files(dir);
    assert_eq!(partial, 0, "no half-written message");
    let sent: Vec<i64> = rows
        .iter()
        .filter(|(_, _, status)| status == "sent")
        .map(|(id, _, _)| *id)
        .collect();
    assert_eq!(files, sent, "an .eml file for exactly the messages marked sent");
    for (id, invite_id, status) in &rows {
        assert!(status == "sent" || status == "queued", "message {id} is {status}");
        let invite_status: String = invites::table
            .find(invite_id.expect("an invite's message"))
            .select(invites::status)
            .first(conn)
            .unwrap();
        assert_eq!(&invite_status, status, "invite and message agree");
    }
    (sent.len(), rows.len() - sent.len())
}

#[apply(integration_test!)]
async fn sigterm_under_load_loses_nothing() {
    let database_url = fresh_database();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("rd-shutdown-{}", referdesk::random::random_token(8)));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = Server::start(&database_url, &dir, "first.log").await;

    let mut conn = PgConnection::establish(&database_url).unwrap();
    let program = programs::find_by_slug(&mut conn, "default").unwrap();
    let (_, token) = tokens::create(&mut conn, program.id, "shutdown", &Actor::system()).unwrap();
    for n in 0..CUSTOMERS {
        let new = NewCustomer::parse(CustomerInput {
            key: Some(format!("c{n}")),
            email: Some(format!("c{n}@example.com")),
            ..Default::default()
        })
        .unwrap();
        customers::create(&mut conn, &program, &Actor::system(), new).unwrap();
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..CREDITS.max(INVITES) {
        if n < CREDITS {
            let (client, address, token) = (client.clone(), server.address.clone(), token.clone());
            let (answered, signalled) = (answered.clone(), signalled.clone());
            tasks.push(tokio::spawn(async move {
                let key = format!("burst-{n}");
                let outcome = credit(&client, &address, &token, &format!("c{}", n % CUSTOMERS), &key).await;
                answered.fetch_add(1, Ordering::SeqCst);
                Request {
                    kind: "credit",
                    subject: key,
                    outcome,
                    after_signal: signalled.load(Ordering::SeqCst),
                }
            }));
        }
        if n < INVITES {
            let (client, address, token) = (client.clone(), server.address.clone(), token.clone());
            let (answered, signalled) = (answered.clone(), signalled.clone());
            tasks.push(tokio::spawn(async move {
                let email = format!("friend{n}@example.com");
                let sent = client
                    .post(format!("{address}/v1/customers:invite"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"email": email, "name": "Friend"}))
                    .send()
                    .await;
                answered.fetch_add(1, Ordering::SeqCst);
                Request {
                    kind: "invite",
                    subject: email,
                    outcome: match sent {
                        Ok(response) => Outcome::Answered(response.status().as_u16()),
                        Err(_) => Outcome::NoAnswer,
                    },
                    after_signal: signalled.load(Ordering::SeqCst),
                }
            }));
        }
    }
    // SIGTERM once the burst is under way: some answers are out, most requests are not.
    let waiting = Instant::now();
    while answered.load(Ordering::SeqCst) < 10 && waiting.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signalled.store(true, Ordering::SeqCst);
    server.terminate();
    let mut requests = Vec::new();
    for task in tasks {
        requests.push(task.await.expect("request task"));
    }
    let (status, took) = server.wait().await;
    let log = read_log(&dir, "first.log");
    assert!(status.success(), "exit status {status:?} after SIGTERM:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("mail worker stopped"),
        "the mail worker was stopped:\n{log}"
    );

    let server_errors: Vec<&Request> = requests
        .iter()
        .filter(|request| matches!(request.outcome, Outcome::Answered(status) if status >= 500))
        .collect();
    assert!(
        server_errors.is_empty(),
        "5xx answers: {:?}",
        server_errors
            .iter()
            .map(|r| (&r.kind, &r.subject, &r.outcome))
            .collect::<Vec<_>>()
    );
    let ok = |request: &&Request| matches!(request.outcome, Outcome::Answered(200..=299));
    let finished_after_signal = requests
        .iter()
        .filter(|request| request.after_signal && ok(request))
        .count();
    let unanswered = requests
        .iter()
        .filter(|request| matches!(request.outcome, Outcome::NoAnswer))
        .count();

    // Every answered request is in the database, complete with its audit event.
    let keys: Vec<Option<String>> = balance_transactions::table
        .select(balance_transactions::idempotency_key)
        .load(&mut conn)
        .unwrap();
    let booked_events: i64 = audit_events::table
        .filter(audit_events::action.eq("ledger.credit"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(
        booked_events as usize,
        keys.len(),
        "each booking has its audit event"
    );
    let emails: Vec<String> = invites::table.select(invites::email).load(&mut conn).unwrap();
    for request in requests.iter().filter(ok) {
        match request.kind {
            "credit" => assert!(
                keys.contains(&Some(format!("api:{}", request.subject))),
                "credit {} was answered but is not booked",
                request.subject
            ),
            _ => assert!(
                emails.contains(&request.subject),
                "invite to {} was answered but is not stored",
                request.subject
            ),
        }
    }
    let (sent, queued) = assert_mail_consistent(&mut conn, &dir);
    println!(
        "shutdown: {} requests, {} answered 2xx ({finished_after_signal} of them after SIGTERM), \
         {unanswered} without answer; exit 0 in {took:?}; mail: {sent} sent, {queued} still queued",
        requests.len(),
        requests.iter().filter(ok).count()
    );
    assert!(
        finished_after_signal > 0,
        "requests in flight at SIGTERM were finished, not dropped"
    );

    // Nothing is lost for the clients either: after a restart, retrying the unanswered
    // credits with their keys books each exactly once, and the queued invites go out.
    let mut server = Server::start(&database_url, &dir, "second.log").await;
    for request in requests
        .iter()
        .filter(|request| request.kind == "credit" && !ok(request))
    {
        let n: usize = request.subject["burst-".len()..].parse().unwrap();
        let outcome = credit(
            &client,
            &server.address,
            &token,
            &format!("c{}", n % CUSTOMERS),
            &request.subject,
        )
        .await;
        assert!(
            matches!(outcome, Outcome::Answered(200 | 201)),
            "retry of {}: {outcome:?}",
            request.subject
        );
    }
    let booked: i64 = balance_transactions::table.count().get_result(&mut conn).unwrap();
    assert_eq!(booked as usize, CREDITS, "every credit booked exactly once");
    let stored_invites: i64 = invites::table.count().get_result(&mut conn).unwrap();
    let started = Instant::now();
    loop {
        let queued: i64 = mail_outbox::table
            .filter(mail_outbox::status.eq("queued"))
            .count()
            .get_result(&mut conn)
            .unwrap();
        if queued == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{queued} invites still queued after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.terminate();
    let (status, _) = server.wait().await;
    assert!(status.success(), "{}", read_log(&dir, "second.log"));
    let (sent, queued) = assert_mail_consistent(&mut conn, &dir);
    assert_eq!((sent, queued), (stored_invites as usize, 0));
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}
