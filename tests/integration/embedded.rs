//! The real binary on its embedded PostgreSQL cluster, as a user runs it: CLI commands in a
//! second terminal beside the server, two processes starting the cluster at once, and the
//! modes of the files that hold secrets and personal data.

use macro_rules_attribute::apply;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::Browser;
use crate::integration_test;

/// How long a server may take to become ready: `initdb` on a busy machine is slow.
const READY_LIMIT: Duration = Duration::from_secs(120);

/// A data dir of its own (not created yet: Referdesk creates it), with logs beside it.
struct Install {
    base: PathBuf,
    data_dir: PathBuf,
    port: u16,
}

impl Install {
    fn new() -> Install {
        let base = std::env::temp_dir().join(format!("rd-emb-{}", referdesk::random::random_token(8)));
        std::fs::create_dir_all(&base).expect("scratch dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        Install {
            data_dir: base.join("data"),
            base,
            port,
        }
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `referdesk <args>` with this install's settings and no `DATABASE_URL`: the
    /// embedded cluster.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_referdesk"));
        command
            .args(args)
            .current_dir(&self.base)
            .env_remove("DATABASE_URL")
            .env_remove("REFERDESK_SECRET")
            .env_remove("REFERDESK_SMTP_URL")
            .env("REFERDESK_DATA_DIR", &self.data_dir)
            .env("REFERDESK_BIND", format!("127.0.0.1:{}", self.port))
            .env("REFERDESK_WORKERS", "2")
            .env("REFERDESK_POOL_SIZE", "3")
            .env("REFERDESK_LOG", "info")
            .stdin(Stdio::null());
        command
    }

    /// Runs a command to its end; fails the test unless it succeeded.
    fn run(&self, args: &[&str]) -> Output {
        let output = self.command(args).output().expect("the referdesk binary runs");
        assert!(
            output.status.success(),
            "referdesk {args:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    async fn serve(&self, log_name: &str) -> Server {
        let log = std::fs::File::create(self.base.join(log_name)).expect("log file");
        let child = self
            .command(&["serve"])
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the referdesk binary starts");
        let mut server = Server {
            child,
            log: self.base.join(log_name),
        };
        let started = Instant::now();
        while !ready(&self.address()).await {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the server exited ({status}):\n{}", server.log());
            }
            assert!(
                started.elapsed() < READY_LIMIT,
                "the server did not become ready:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    fn pg_data(&self) -> PathBuf {
        self.data_dir.join("postgres").join("data")
    }

    /// PostgreSQL removes its pid file when it stops.
    fn cluster_runs(&self) -> bool {
        self.pg_data().join("postmaster.pid").exists()
    }

    /// Stops a cluster left running by the test's processes, as an operator would.
    fn stop_cluster(&self) {
        if !self.cluster_runs() {
            return;
        }
        let pg_ctl = referdesk::db::embedded::find_bin_dir()
            .expect("PostgreSQL binaries")
            .join("pg_ctl");
        let mut command = if running_as_root(&self.base) {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(pg_ctl);
            command
        } else {
            Command::new(pg_ctl)
        };
        let status = command
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self.pg_data())
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl stop");
    }
}

impl Drop for Install {
    /// Also after a failure: no cluster is left running (the logs are in the message).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::panic::catch_unwind(|| self.stop_cluster());
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    async fn terminate(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM was delivered");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("process status") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server did not stop after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "exit status {status}:\n{}", self.log());
        self.log()
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

async fn ready(address: &str) -> bool {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
        .get(format!("{address}/readyz"))
        .send()
        .await
        .map(|response| response.status() == 200)
        .unwrap_or(false)
}

fn running_as_root(dir_we_made: &Path) -> bool {
    std::fs::metadata(dir_we_made).expect("metadata").uid() == 0
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// Issue 18, items 1 and 2: with the server running on its embedded cluster, each CLI
/// command the README shows runs beside it, uses the running cluster and leaves it
/// running; what it made is visible through the server; its stdout carries only its
/// result. The server, which started the cluster, stops it at SIGTERM.
#[apply(integration_test!)]
async fn cli_commands_beside_a_running_server_leave_its_cluster_running() {
    let install = Install::new();
    let server = install.serve("server.log").await;
    assert!(
        server.log().contains("started the embedded PostgreSQL cluster"),
        "{}",
        server.log()
    );
    let address = install.address();

    let check_beside = |command: &str, output: &Output| {
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("using the running embedded PostgreSQL"),
            "{command}: {stderr}"
        );
        assert!(
            !stderr.contains("embedded PostgreSQL stopped"),
            "{command} stopped the cluster: {stderr}"
        );
    };

    let mut user = install.command(&[
        "user",
        "create",
        "--email",
        "ada@example.com",
        "--name",
        "Ada",
        "--role",
        "admin",
    ]);
    let output = user
        .env("REFERDESK_PASSWORD", "a long password for ada")
        .output()
        .expect("user create runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "", "user create prints nothing on stdout");
    check_beside("user create", &output);
    assert!(text(&output.stderr).contains("Created Ada <ada@example.com> as admin"));
    assert!(ready(&address).await, "/readyz after user create");

    let output = install.run(&["token", "create", "--program", "default", "--name", "ci"]);
    let stdout = text(&output.stdout);
    let token = stdout.trim_end_matches('\n').to_string();
    assert!(
        stdout == format!("{token}\n") && !token.is_empty() && !token.contains(char::is_whitespace),
        "stdout is exactly the token line: {stdout:?}"
    );
    check_beside("token create", &output);
    assert!(ready(&address).await, "/readyz after token create");

    let output = install.run(&["seed", "--customers", "100"]);
    assert_eq!(text(&output.stdout), "", "seed reports on stderr");
    check_beside("seed", &output);
    assert!(ready(&address).await, "/readyz after seed");

    let output = install.run(&["migrate"]);
    assert_eq!(text(&output.stdout), "", "migrate reports on stderr");
    check_beside("migrate", &output);
    assert!(ready(&address).await, "/readyz after migrate");

    // What the commands made is what the server serves.
    let browser = Browser::new(&address);
    let login = browser.login("ada@example.com", "a long password for ada").await;
    assert_eq!(login.status(), 303, "the member signs in");
    let (status, _) = browser.get_html("/").await;
    assert_eq!(status, 200, "and sees the dashboard");
    let list: serde_json::Value = browser
        .client
        .get(format!("{address}/v1/customers"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /v1/customers")
        .json()
        .await
        .expect("a JSON list");
    // The demo data deletes about 1% of its customers, and lists show the active ones.
    let listed = list["meta"]["total"].as_i64().unwrap_or(0);
    assert!(
        (95..=100).contains(&listed),
        "the token works and the seeded customers are listed (total {listed})"
    );

    let log = server.terminate().await;
    assert!(log.contains("embedded PostgreSQL stopped"), "{log}");
    assert!(
        !install.cluster_runs(),
        "the server stopped the cluster it started"
    );
}

/// Issue 18, item 1: processes that find the cluster stopped at the same moment do not
/// both start it: one starts it, the other waits and uses it. First on a new data dir
/// (`initdb` included), then on a stopped cluster.
#[apply(integration_test!)]
async fn two_processes_starting_a_stopped_cluster_at_once_share_one() {
    let install = Install::new();
    for round in ["a new data dir", "a stopped cluster"] {
        assert!(!install.cluster_runs());
        let children: Vec<Child> = (0..2)
            .map(|_| {
                install
                    .command(&["migrate"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("the referdesk binary starts")
            })
            .collect();
        let logs: Vec<String> = children
            .into_iter()
            .map(|child| {
                let output = child.wait_with_output().expect("migrate ends");
                let log = text(&output.stderr);
                assert!(output.status.success(), "{round}: migrate failed:\n{log}");
                log
            })
            .collect();
        let started = logs
            .iter()
            .filter(|log| log.contains("started the embedded PostgreSQL cluster"))
            .count();
        let used = logs
            .iter()
            .filter(|log| log.contains("using the running embedded PostgreSQL cluster"))
            .count();
        assert_eq!(
            (started, used),
            (1, 1),
            "{round}: one starts, one uses:\n{logs:#?}"
        );
        let port = |log: &str| -> String {
            let at = log.find("port=").expect("the port is logged") + "port=".len();
            log[at..].chars().take_while(char::is_ascii_digit).collect()
        };
        assert_eq!(port(&logs[0]), port(&logs[1]), "{round}: one cluster");
        // The starter leaves the cluster running when it finishes first; stop it then.
        install.stop_cluster();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The paths that must be private, with the mode each must have.
fn private_paths(install: &Install) -> Vec<(PathBuf, u32)> {
    let data_dir_mode = if running_as_root(&install.base) {
        // The cluster runs as `postgres` and must pass through to its own folder.
        0o710
    } else {
        0o700
    };
    let mut paths = vec![
        (install.data_dir.clone(), data_dir_mode),
        (install.data_dir.join("secret"), 0o600),
        (install.data_dir.join("postgres"), 0o700),
        (install.data_dir.join("postgres/superuser-password"), 0o600),
        (install.data_dir.join("mail"), 0o700),
    ];
    for entry in std::fs::read_dir(install.data_dir.join("mail")).expect("the mail folder") {
        let path = entry.expect("entry").path();
        assert!(
            path.extension().is_some_and(|ext| ext == "eml"),
            "{}",
            path.display()
        );
        paths.push((path, 0o600));
    }
    paths
}

fn assert_private(install: &Install, when: &str) {
    let paths = private_paths(install);
    assert!(paths.len() > 5, "an .eml file was written");
    for (path, expected) in paths {
        assert_eq!(
            format!("{:04o}", mode(&path)),
            format!("{expected:04o}"),
            "{when}: {}",
            path.display()
        );
    }
    if running_as_root(&install.base) {
        let group = |path: &Path| std::fs::metadata(path).expect("metadata").gid();
        assert_eq!(
            group(&install.data_dir),
            group(&install.data_dir.join("postgres")),
            "{when}: only the cluster's group may pass through the data dir"
        );
    }
}

/// Issue 18, item 3: the embedded cluster's superuser password, the cookie secret and the
/// mail written to files are readable by their owner only, in folders only the owner can
/// open; an install that left them wider is tightened at the next start.
#[apply(integration_test!)]
async fn secrets_and_mail_are_private_and_repaired_at_start() {
    let install = Install::new();
    let server = install.serve("first.log").await;
    let output = install.run(&["token", "create", "--name", "modes"]);
    let token = text(&output.stdout).trim().to_string();
    let invited = reqwest::Client::new()
        .post(format!("{}/v1/customers:invite", install.address()))
        .bearer_auth(&token)
        .json(&serde_json::json!({"email": "friend@example.com", "name": "Friend"}))
        .send()
        .await
        .expect("POST invite");
    assert!(invited.status().is_success(), "{}", invited.status());
    let started = Instant::now();
    while !std::fs::read_dir(install.data_dir.join("mail"))
        .expect("the mail folder")
        .any(|entry| {
            entry
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|ext| ext == "eml")
        })
    {
        assert!(started.elapsed() < Duration::from_secs(60), "no .eml was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_private(&install, "a new install");
    server.terminate().await;

    for (path, _) in private_paths(&install) {
        let wide = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wide)).expect("chmod");
    }
    let server = install.serve("second.log").await;
    assert_private(&install, "after a start on a widened install");
    server.terminate().await;
}
