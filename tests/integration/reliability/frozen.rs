//! A database that stops answering (its processes frozen with SIGSTOP) and one that comes
//! back after a restart, each on a private cluster: the shared test cluster is never
//! frozen, as other tests use it at the same time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use macro_rules_attribute::apply;
use referdesk::config::Config;
use referdesk::db::embedded::EmbeddedPostgres;
use referdesk::domain::team::Role;
use referdesk::domain::{programs, tokens, Actor};

use crate::helpers::{test_config, TestApp};
use crate::integration_test;

/// A private cluster in a temporary directory, removed afterwards.
struct PrivateCluster {
    dir: PathBuf,
    cluster: Option<EmbeddedPostgres>,
}

impl PrivateCluster {
    fn start(name: &str) -> PrivateCluster {
        let dir = std::env::temp_dir().join(format!("rd-{name}-{}", referdesk::random::random_token(8)));
        let cluster = EmbeddedPostgres::start(&dir).expect("a private cluster for this test");
        PrivateCluster {
            dir,
            cluster: Some(cluster),
        }
    }

    fn cluster(&mut self) -> &mut EmbeddedPostgres {
        self.cluster.as_mut().expect("the cluster")
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        drop(self.cluster.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The postmaster of the cluster in `dir` and every process it started.
fn cluster_processes(dir: &Path) -> Vec<u32> {
    let pid_file = std::fs::read_to_string(dir.join("data").join("postmaster.pid")).expect("postmaster.pid");
    let postmaster: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

fn signal(signal: &str, pids: &[u32]) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pids:?}");
}

/// PostgreSQL frozen while this lives: SIGSTOP on creation, SIGCONT when dropped — also
/// when the test panics, so a failing test never leaves a frozen cluster behind.
struct Frozen(Vec<u32>);

impl Frozen {
    fn freeze(dir: &Path) -> Frozen {
        let pids = cluster_processes(dir);
        signal("STOP", &pids);
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("CONT", &self.0);
    }
}

async fn app_on(cluster: &mut PrivateCluster, database: &str) -> (TestApp, String) {
    let config = Config {
        statement_timeout_ms: 1_000,
        pool_size: 3,
        ..test_config(&cluster.cluster().url(database))
    };
    let app = TestApp::spawn_with(config).await;
    app.login_as(Role::Admin).await;
    let token = {
        let mut conn = app.conn();
        let program = programs::find_by_slug(&mut conn, "default").unwrap();
        tokens::create(&mut conn, program.id, "frozen", &Actor::system())
            .unwrap()
            .1
    };
    (app, token)
}

/// Status and time taken of a GET, with or without a bearer token.
async fn timed_get(client: &reqwest::Client, url: String, token: Option<&str>) -> (u16, Duration) {
    let started = Instant::now();
    let request = client.get(&url);
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("{url}: no answer: {error}"));
    (response.status().as_u16(), started.elapsed())
}

/// With PostgreSQL frozen, `/readyz` answers 503 within 2 s and an API call 503 within its
/// bound (the wait for a connection and the statement timeout); `/healthz` answers at once,
/// also with a session cookie. Once PostgreSQL runs again, the next request succeeds.
#[apply(integration_test!)]
async fn a_frozen_database_gets_quick_503s_and_recovery() {
    let mut cluster = PrivateCluster::start("frozen");
    let (app, token) = app_on(&mut cluster, "frozen").await;
    // No client timeout of its own would hide a hang: the test's is far beyond the bounds.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let api = app.browser.url("/v1/customers");
    assert_eq!(timed_get(&client, api.clone(), Some(&token)).await.0, 200);
    assert_eq!(app.get("/").await.status(), 200);

    let frozen = Frozen::freeze(&cluster.dir);
    let (status, took) = timed_get(&client, api.clone(), Some(&token)).await;
    assert_eq!(status, 503, "an API call while the database is frozen");
    assert!(took < Duration::from_secs(12), "the API call took {took:?}");
    let (status, took) = timed_get(&client, app.browser.url("/readyz"), None).await;
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(2), "/readyz took {took:?}");
    // The browser sends its session cookie: the health check still never asks PostgreSQL.
    let started = Instant::now();
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/healthz took {:?}",
        started.elapsed()
    );
    let (status, took) = timed_get(&client, api.clone(), Some(&token)).await;
    assert_eq!(status, 503, "a second API call while the database is frozen");
    assert!(
        took < Duration::from_secs(12),
        "the second API call took {took:?}"
    );
    let (status, took) = timed_get(&client, app.browser.url("/readyz"), None).await;
    assert_eq!(status, 503);
    assert!(
        took < Duration::from_secs(2),
        "/readyz took {took:?} with the pool's connections stuck"
    );
    drop(frozen);

    assert_eq!(
        timed_get(&client, api, Some(&token)).await.0,
        200,
        "the next API call"
    );
    assert_eq!(app.get("/").await.status(), 200, "the next page");
    assert_eq!(timed_get(&client, app.browser.url("/readyz"), None).await.0, 200);
    drop(app);
}

/// After PostgreSQL restarts, every pooled connection is dead: the very first request
/// after it is back, a page or an API call, still succeeds.
#[apply(integration_test!)]
async fn the_first_request_after_a_database_restart_succeeds() {
    let mut cluster = PrivateCluster::start("restart");
    let (app, token) = app_on(&mut cluster, "restart").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let api = app.browser.url("/v1/customers");
    for first in ["page", "api"] {
        // Every connection of the pool in use just before the restart.
        let warm =
            futures_util::future::join_all((0..6).map(|_| timed_get(&client, api.clone(), Some(&token))));
        assert!(warm.await.iter().all(|(status, _)| *status == 200));
        assert_eq!(app.get("/").await.status(), 200);
        cluster.cluster().stop();
        cluster
            .cluster()
            .restart_stopped()
            .expect("PostgreSQL starts again");
        if first == "page" {
            assert_eq!(
                app.get("/").await.status(),
                200,
                "the first page after the restart"
            );
        } else {
            let (status, _) = timed_get(&client, api.clone(), Some(&token)).await;
            assert_eq!(status, 200, "the first API call after the restart");
        }
    }
    drop(app);
}

/// The server's connections end a statement that runs past the statement timeout; the
/// connections of tools (the seed, migrations, tests) have none.
#[apply(integration_test!)]
async fn server_connections_end_long_statements() {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let url = crate::helpers::fresh_database();
    let server = referdesk::db::build_server_pool(&url, 1, Duration::from_millis(300));
    let started = Instant::now();
    let error = diesel::sql_query("SELECT pg_sleep(5)")
        .execute(&mut server.get().unwrap())
        .expect_err("the statement is cancelled");
    assert!(error.to_string().contains("statement timeout"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The connection stays usable.
    diesel::sql_query("SELECT 1")
        .execute(&mut server.get().unwrap())
        .unwrap();

    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement_timeout: String,
    }
    let show = |conn: &mut PgConnection| {
        diesel::sql_query("SHOW statement_timeout")
            .get_result::<Setting>(conn)
            .unwrap()
            .statement_timeout
    };
    assert_eq!(show(&mut server.get().unwrap()), "300ms");
    assert_eq!(show(&mut referdesk::db::build_pool(&url, 1).get().unwrap()), "0");
    assert_eq!(show(&mut PgConnection::establish(&url).unwrap()), "0");
}

/// A statement the server cancels (here: waiting behind a lock longer than the statement
/// timeout) is a 503 with its message, like any other database that cannot answer now — not
/// a 500 — and the next request after the lock is gone succeeds.
#[apply(integration_test!)]
async fn a_statement_timeout_answers_503() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection};
    let mut config = test_config(&crate::helpers::fresh_database());
    config.statement_timeout_ms = 500;
    let app = TestApp::spawn_with(config).await;
    let token = app.create_token("default");
    let client = reqwest::Client::new();
    let created = client
        .post(app.browser.url("/v1/customers"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"key": "waiting", "email": "waiting@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let list = || {
        client
            .get(app.browser.url("/v1/customers/waiting"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(list().await.unwrap().status().as_u16(), 200);
    let mut locker = PgConnection::establish(&app.database_url).unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let answer = list().await.unwrap();
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap();
    locker.batch_execute("ROLLBACK").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    assert_eq!(list().await.unwrap().status().as_u16(), 200);
}
