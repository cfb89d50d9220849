//! Reads from a streaming replica (`REFERDESK_REPLICA_URL`), against a real standby: a
//! private primary cluster (as the embedded one), a `pg_basebackup -R` copy of it, and a
//! second postmaster on a free port replaying its log.
//!
//! Whether a page came from the replica shows in its data: with the replica's replay
//! paused, a customer written straight into the primary is on the primary's pages and not
//! on the replica's. The test is skipped where the PostgreSQL server binaries are missing,
//! except under `CI=true`, where that fails the run (as the browser tests do).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use libtest_mimic::{Completion, Trial};
use referdesk::db::embedded::{find_bin_dir, EmbeddedPostgres};
use referdesk::domain::customers::CustomerInput;
use referdesk::domain::team::Role;
use serde_json::{json, Value};

use crate::helpers::{location, test_config, Browser, TestApp};

inventory::submit! {
    crate::helpers::IntegrationTest(|| {
        Trial::ignorable_test("replicas::pages_read_from_the_replica_and_fall_back_to_the_primary", || {
            match standby_bin_dir() {
                Some(bin_dir) => {
                    crate::helpers::run(reads_follow_the_replica(bin_dir));
                    Ok(Completion::Completed)
                }
                None if in_ci() => Err("no PostgreSQL server binaries (pg_basebackup, pg_ctl), and CI is set: \
                     the replica test must run in CI (apt-get install -y postgresql)"
                    .into()),
                None => Ok(Completion::ignored_with("no PostgreSQL server binaries to start a replica with")),
            }
        })
    })
}

/// Where `pg_basebackup` is, beside the `pg_ctl` the embedded cluster uses (which may be
/// a link on PATH to the server's own directory).
fn standby_bin_dir() -> Option<PathBuf> {
    let pg_ctl = std::fs::canonicalize(find_bin_dir()?.join("pg_ctl")).ok()?;
    let dir = pg_ctl.parent()?.to_path_buf();
    dir.join("pg_basebackup").is_file().then_some(dir)
}

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|value| matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        .unwrap_or(false)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A hot standby of a primary, in its own directory, on its own port.
struct Standby {
    bin_dir: PathBuf,
    dir: PathBuf,
    port: u16,
    password: String,
    /// As root, PostgreSQL's programs run as the `postgres` user (as the embedded cluster's).
    run_as_postgres: bool,
}

impl Standby {
    /// Copies the primary listening on 127.0.0.1:`primary_port` and starts the copy.
    fn create(bin_dir: PathBuf, dir: &Path, primary_port: u16, password: &str) -> Standby {
        std::fs::create_dir_all(dir).expect("standby dir");
        let standby = Standby {
            bin_dir,
            dir: dir.to_path_buf(),
            port: free_port(),
            password: password.to_string(),
            run_as_postgres: running_as_root(),
        };
        if standby.run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir)
                .status()
                .expect("chown");
            assert!(status.success(), "could not give {} to postgres", dir.display());
        }
        let output = standby
            .command("pg_basebackup")
            .arg("-D")
            .arg(standby.data())
            .args([
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &primary_port.to_string()])
            .env("PGPASSWORD", password)
            .output()
            .expect("run pg_basebackup");
        assert!(
            output.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        standby.start();
        standby
    }

    fn command(&self, program: &str) -> Command {
        let binary = self.bin_dir.join(program);
        if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn start(&self) {
        let output = self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("standby.log"))
            .arg("-o")
            // As the primary (`db::embedded`): a standby needs at least its connections.
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k '' -c max_connections=200",
                self.port
            ))
            .output()
            .expect("run pg_ctl start");
        assert!(
            output.status.success(),
            "the standby did not start: {}; see {}",
            String::from_utf8_lossy(&output.stderr),
            self.dir.join("standby.log").display()
        );
    }

    fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(self.data())
            .output();
    }

    fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = Nullable<BigInt>)]
    lsn: Option<i64>,
}

fn lsn(conn: &mut PgConnection, query: &str) -> i64 {
    diesel::sql_query(query)
        .get_result::<Position>(conn)
        .expect("a log position")
        .lsn
        .expect("a log position")
}

/// Waits until the standby has replayed everything the primary has written now, and the
/// server's watch thread has seen it.
fn wait_until_caught_up(primary: &mut PgConnection, standby: &mut PgConnection) {
    let target = lsn(
        primary,
        "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while lsn(
        standby,
        "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS lsn",
    ) < target
    {
        assert!(Instant::now() < deadline, "the standby did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server checks its replicas every second.
    std::thread::sleep(Duration::from_millis(1_500));
}

fn replay(standby: &mut PgConnection, paused: bool) {
    let call = if paused {
        "SELECT pg_wal_replay_pause()"
    } else {
        "SELECT pg_wal_replay_resume()"
    };
    diesel::sql_query(call)
        .execute(standby)
        .expect("pause or resume replay");
}

fn connect_with_retry(url: &str) -> PgConnection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgConnection::establish(url) {
            Ok(conn) => return conn,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => panic!("could not connect to {url}: {error}"),
        }
    }
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = reqwest::get(format!("{}/readyz", app.address)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.expect("/readyz answers JSON"))
}

/// Waits until `/readyz` shows the replica with `status`.
async fn wait_for_replica(app: &TestApp, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = readyz(app).await;
        assert_eq!(code, 200, "the primary is up: {body}");
        if body["databases"][1]["status"] == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never became {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn customer_list(browser: &Browser) -> String {
    let (status, html) = browser.get_html("/customers").await;
    assert_eq!(status, 200, "{html}");
    html
}

/// Pauses the standby's replay, writes a customer straight into the primary (no request,
/// so no read-your-writes fence), and lists what shows it among the list page, the CSV
/// export and the API's list: none means all three came from the replica. Replay
/// resumes afterwards.
async fn reads_showing_a_write_the_replica_lacks(
    app: &TestApp,
    browser: &Browser,
    token: &str,
    standby: &mut PgConnection,
    email: &str,
) -> Vec<&'static str> {
    replay(standby, true);
    app.create_customer(CustomerInput {
        email: Some(email.to_string()),
        ..Default::default()
    });
    let mut shown = Vec::new();
    if customer_list(browser).await.contains(email) {
        shown.push("list page");
    }
    let export = browser.get("/customers/export.csv").await;
    assert_eq!(export.status(), 200);
    if export.text().await.unwrap().contains(email) {
        shown.push("export");
    }
    let api = reqwest::Client::new()
        .get(format!("{}/v1/customers", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    if api.text().await.unwrap().contains(email) {
        shown.push("API list");
    }
    replay(standby, false);
    shown
}

async fn reads_follow_the_replica(bin_dir: PathBuf) {
    let scratch = std::env::temp_dir().join(format!(
        "rdreplica_{}_{}",
        std::process::id(),
        referdesk::random::random_token(6).to_lowercase()
    ));
    let mut primary = EmbeddedPostgres::start(&scratch.join("primary")).expect("a private primary");
    let password = std::fs::read_to_string(scratch.join("primary/superuser-password"))
        .expect("the primary's password")
        .trim()
        .to_string();
    let primary_url = primary.url("referdesk");
    referdesk::prepare_database(&primary_url).expect("migrate the primary");
    let standby = Standby::create(bin_dir, &scratch.join("standby"), primary.port(), &password);
    let mut on_primary = PgConnection::establish(&primary_url).expect("primary");
    let mut on_standby = connect_with_retry(&standby.url("referdesk"));

    let mut config = test_config(&primary_url);
    config.replica_urls = vec![standby.url("referdesk")];
    // Long enough that a paused replay is not skipped while a step runs.
    config.replica_max_lag = Duration::from_secs(60);
    let app = TestApp::spawn_with(config).await;
    app.login_as(Role::Support).await;
    // Another member, who will write nothing, and an API token.
    let (_, other) = app.signed_in_browser("viewer@example.com", Role::Viewer).await;
    let token = app.create_token("default");
    wait_until_caught_up(&mut on_primary, &mut on_standby);
    let ready = wait_for_replica(&app, "up").await;
    assert_eq!(ready["databases"][0]["name"], "primary", "{ready}");
    assert_eq!(ready["databases"][0]["status"], "up", "{ready}");
    assert_eq!(ready["databases"][1]["name"], "replica 1", "{ready}");

    // A list page is read from the replica: it lacks what only the primary has…
    let from_primary = reads_showing_a_write_the_replica_lacks(
        &app,
        &app.browser,
        &token,
        &mut on_standby,
        "hidden-1@example.com",
    )
    .await;
    assert!(from_primary.is_empty(), "read from the primary: {from_primary:?}");
    // … and the replica's backends ran the page's queries.
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let readers: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = 'referdesk' \
         AND query ILIKE '%\"customers\"%' AND pid <> pg_backend_pid()",
    )
    .get_result(&mut on_standby)
    .unwrap();
    assert!(readers.n > 0, "no page query ran on the replica");

    // Read-your-writes: with the replica's replay paused, a customer created through the
    // dashboard is on the next page (read from the primary).
    wait_until_caught_up(&mut on_primary, &mut on_standby);
    replay(&mut on_standby, true);
    let response = app
        .browser
        .post_form("/customers", &[("email", "mine@example.com"), ("name", "Mine")])
        .await;
    assert_eq!(response.status(), 303);
    let (status, page) = app.browser.get_html(&location(&response)).await;
    assert_eq!(status, 200, "the page of the new customer: {page}");
    assert!(page.contains("mine@example.com"), "{page}");
    let list = customer_list(&app.browser).await;
    assert!(
        list.contains("mine@example.com"),
        "the member's own write is missing"
    );
    // The other member reads the replica and does not see it yet.
    let (_, other_list) = other.get_html("/customers").await;
    assert!(
        !other_list.contains("mine@example.com"),
        "another member read the primary"
    );

    // The same for an API token: its write is on its next read.
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/v1/customers", app.address))
        .bearer_auth(&token)
        .json(&json!({"email": "api-made@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let read = client
        .get(format!("{}/v1/customers/api-made@example.com", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the token's own write is missing");
    replay(&mut on_standby, false);

    // Once the replica has replayed the write, the member's pages go back to it.
    wait_until_caught_up(&mut on_primary, &mut on_standby);
    let from_primary = reads_showing_a_write_the_replica_lacks(
        &app,
        &app.browser,
        &token,
        &mut on_standby,
        "hidden-2@example.com",
    )
    .await;
    assert!(
        from_primary.is_empty(),
        "still read from the primary after the replica caught up: {from_primary:?}"
    );

    // The replica stops: pages read from the primary, without an error.
    drop(on_standby);
    standby.stop();
    for _ in 0..5 {
        let list = customer_list(&app.browser).await;
        assert!(
            list.contains("hidden-2@example.com"),
            "a page not from the primary"
        );
    }
    let (status, api_list) = {
        let response = client
            .get(format!("{}/v1/customers", app.address))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(status, 200, "{api_list}");
    let down = wait_for_replica(&app, "down").await;
    assert_eq!(
        down["status"], "ready",
        "a replica down leaves the server ready: {down}"
    );

    // It starts again: reads go back to it.
    standby.start();
    let mut on_standby = connect_with_retry(&standby.url("referdesk"));
    wait_until_caught_up(&mut on_primary, &mut on_standby);
    wait_for_replica(&app, "up").await;
    let from_primary = reads_showing_a_write_the_replica_lacks(
        &app,
        &app.browser,
        &token,
        &mut on_standby,
        "hidden-3@example.com",
    )
    .await;
    assert!(
        from_primary.is_empty(),
        "reads did not return to the replica: {from_primary:?}"
    );

    // A replica further behind than REFERDESK_REPLICA_MAX_LAG is skipped.
    wait_until_caught_up(&mut on_primary, &mut on_standby);
    let mut config = test_config(&primary_url);
    config.replica_urls = vec![standby.url("referdesk")];
    config.replica_max_lag = Duration::from_secs(1);
    let strict = TestApp::spawn_with(config).await;
    strict.login_as(Role::Viewer).await;
    wait_until_caught_up(&mut on_primary, &mut on_standby);
    wait_for_replica(&strict, "up").await;
    replay(&mut on_standby, true);
    strict.create_customer(CustomerInput {
        email: Some("late@example.com".into()),
        ..Default::default()
    });
    wait_for_replica(&strict, "lagging").await;
    assert!(
        customer_list(&strict.browser).await.contains("late@example.com"),
        "a lagging replica was read"
    );
    replay(&mut on_standby, false);

    strict.stop().await;
    app.stop().await;
    drop(on_standby);
    drop(standby);
    primary.stop();
    let _ = std::fs::remove_dir_all(&scratch);
}
