//! Every setting Referdesk reads, in one place. Values come from the environment, after an
//! optional `.env` file in the working directory has been loaded into it.

use std::path::PathBuf;

use anyhow::{bail, Context};
use ipnet::IpNet;

#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`. `None` means: run a private PostgreSQL cluster under `data_dir`.
    pub database_url: Option<String>,
    /// `REFERDESK_BIND`, the address the HTTP server listens on.
    pub bind: String,
    /// `REFERDESK_DATA_DIR`: the embedded cluster, the generated secret, `.eml` files.
    pub data_dir: PathBuf,
    /// `REFERDESK_SECRET`: signs cookies. Generated once into the data dir when unset.
    pub secret: Option<String>,
    /// `REFERDESK_PUBLIC_URL`: how people reach this server (setup links, cookie `Secure`).
    pub public_url: String,
    /// `REFERDESK_POOL_SIZE`: database connections kept by the server (default:
    /// [`default_pool_size`]).
    pub pool_size: u32,
    /// `REFERDESK_SMTP_URL`: e.g. `smtps://user:pass@mail.example.com`. Unset: `.eml` files.
    pub smtp_url: Option<String>,
    /// `REFERDESK_MAIL_FROM`: the sender of invite emails.
    pub mail_from: String,
    /// `REFERDESK_MAIL_MAX_ATTEMPTS`: delivery attempts before a message is marked failed.
    pub mail_max_attempts: u32,
    /// `REFERDESK_MAIL_RETRY_SECS`: the first retry delay; it doubles per attempt (max 1h).
    pub mail_retry_base_secs: u64,
    /// `REFERDESK_API_RATE`: requests per minute allowed per API token.
    pub api_rate_per_minute: u32,
    /// `REFERDESK_WORKERS`: HTTP worker threads (default: one per CPU core).
    pub workers: usize,
    /// `REFERDESK_TRUSTED_PROXIES`: reverse proxies whose `X-Forwarded-For` names the
    /// client (default: none, the header is ignored). See `client_address`.
    pub trusted_proxies: Vec<IpNet>,
    /// `REFERDESK_STATEMENT_TIMEOUT_MS`: the longest a page's or API call's statement may
    /// run (see `db::build_pool`).
    pub statement_timeout_ms: u64,
    /// `REFERDESK_WEBHOOK_*`: webhook delivery (see [`WebhookSettings`]).
    pub webhooks: WebhookSettings,
    /// `REFERDESK_REWARD_RELEASE_SECS`: the longest time between two releases of held
    /// rewards that fell due (default 60; the release also runs when the next hold ends
    /// and when woken by a notification; 0 turns the release thread off).
    pub reward_release_secs: u64,
    /// `REFERDESK_DIRECT_DATABASE_URL`: the primary without a pooler in between, for what
    /// needs a session of its own: the migrations' advisory lock (and `LISTEN`). Unset:
    /// `DATABASE_URL`. See docs/SCALING.md (PgBouncer in transaction mode).
    pub direct_database_url: Option<String>,
    /// `REFERDESK_REPLICA_URL`: streaming replicas that pages and API calls read from (see
    /// `db::replicas`); none by default.
    pub replica_urls: Vec<String>,
    /// `REFERDESK_REPLICA_MAX_LAG`: a replica further behind the primary than this (in
    /// seconds, default 5) is skipped until it catches up.
    pub replica_max_lag: std::time::Duration,
    /// `REFERDESK_JOB_*`: the background job thread (see [`JobSettings`]).
    pub jobs: JobSettings,
}

/// How background jobs (bulk actions, imports) run.
#[derive(Clone, Debug)]
pub struct JobSettings {
    /// `REFERDESK_JOB_WORKER=0`: this process runs no background job (another one does).
    pub worker: bool,
    /// `REFERDESK_JOB_BATCH`: rows per batch, each batch one transaction (default 200).
    pub batch_size: i64,
    /// `REFERDESK_JOB_LEASE_SECS`: how long a job waits for the process that claimed it
    /// before another may resume it (that process died). Each batch renews it.
    pub lease_secs: i64,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            worker: true,
            batch_size: 200,
            lease_secs: 60,
        }
    }
}

impl JobSettings {
    fn from_env() -> anyhow::Result<Self> {
        let defaults = JobSettings::default();
        Ok(JobSettings {
            worker: var("REFERDESK_JOB_WORKER").is_none() || flag("REFERDESK_JOB_WORKER")?,
            batch_size: parse_var("REFERDESK_JOB_BATCH", defaults.batch_size)?.clamp(1, 5000),
            lease_secs: parse_var("REFERDESK_JOB_LEASE_SECS", defaults.lease_secs)?.max(1),
        })
    }

    /// The settings a worker runs jobs with.
    pub fn run_settings(&self) -> crate::domain::jobs::RunSettings {
        crate::domain::jobs::RunSettings {
            batch_size: self.batch_size,
            lease: chrono::Duration::seconds(self.lease_secs),
            ..Default::default()
        }
    }
}

/// How webhooks are delivered.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `REFERDESK_WEBHOOK_ALLOW_HTTP`, `REFERDESK_WEBHOOK_ALLOW_PRIVATE`.
    pub policy: crate::domain::webhooks::addresses::Policy,
    /// `REFERDESK_WEBHOOK_CONCURRENCY`: requests in flight at most, per server process.
    pub concurrency: usize,
    /// `REFERDESK_WEBHOOK_PER_ENDPOINT`: requests in flight at most per subscription,
    /// across all processes.
    pub per_endpoint: usize,
    /// `REFERDESK_WEBHOOK_RETENTION_DAYS`: how long the delivery log keeps attempts.
    pub retention_days: i64,
    /// `REFERDESK_WEBHOOK_WORKER=0`: this process delivers nothing (another one does).
    pub worker: bool,
    /// The longest a whole request may take (10 s; shorter in tests).
    pub request_timeout: std::time::Duration,
    /// `REFERDESK_WEBHOOK_LEASE_SECS`: how long a claimed delivery waits for its process
    /// before another may take it (the process died). Longer than any attempt.
    pub lease_secs: i64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            policy: Default::default(),
            concurrency: 64,
            per_endpoint: 16,
            retention_days: crate::domain::webhooks::DEFAULT_RETENTION_DAYS,
            worker: true,
            request_timeout: std::time::Duration::from_secs(10),
            lease_secs: 120,
        }
    }
}

fn flag(name: &str) -> anyhow::Result<bool> {
    match var(name).as_deref().map(str::trim) {
        None | Some("0") | Some("false") | Some("no") => Ok(false),
        Some("1") | Some("true") | Some("yes") => Ok(true),
        Some(other) => bail!("{name}={other:?} is not 1 or 0"),
    }
}

impl WebhookSettings {
    fn from_env() -> anyhow::Result<Self> {
        let defaults = WebhookSettings::default();
        Ok(WebhookSettings {
            policy: crate::domain::webhooks::addresses::Policy {
                allow_http: flag("REFERDESK_WEBHOOK_ALLOW_HTTP")?,
                allow_private: flag("REFERDESK_WEBHOOK_ALLOW_PRIVATE")?,
            },
            concurrency: parse_var("REFERDESK_WEBHOOK_CONCURRENCY", defaults.concurrency)?.max(1),
            per_endpoint: parse_var("REFERDESK_WEBHOOK_PER_ENDPOINT", defaults.per_endpoint)?.max(1),
            retention_days: parse_var("REFERDESK_WEBHOOK_RETENTION_DAYS", defaults.retention_days)?.max(1),
            worker: var("REFERDESK_WEBHOOK_WORKER").is_none() || flag("REFERDESK_WEBHOOK_WORKER")?,
            request_timeout: defaults.request_timeout,
            // An attempt may last the whole request timeout and its recording: a shorter
            // lease would hand it to a second process while the first still waits.
            lease_secs: parse_var("REFERDESK_WEBHOOK_LEASE_SECS", defaults.lease_secs)?
                .max(defaults.request_timeout.as_secs() as i64 + 5),
        })
    }
}

/// The sender of invite emails when `REFERDESK_MAIL_FROM` is unset.
pub const DEFAULT_MAIL_FROM: &str = "Referdesk <referdesk@localhost>";

/// A page or API call needs milliseconds; a statement still running after this is stuck
/// or far off its plan, and holds a connection the others need.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 5_000;
/// Below this a busy moment would cancel ordinary statements.
const MIN_STATEMENT_TIMEOUT_MS: u64 = 100;

fn cpu_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// One database connection per CPU core, and one more (at least three in all).
///
/// Every connection can keep a PostgreSQL backend busy; when more are busy than there are
/// cores — PostgreSQL on the same machine, as with the embedded cluster — the kernel
/// slices their queries and one request's few milliseconds stretch to tens, with no gain
/// in throughput (BENCHMARKS.md). Requests beyond the pool wait their turn (up to 3
/// seconds) instead. A database server of its own, with more cores, serves more: set
/// `REFERDESK_POOL_SIZE`.
pub fn default_pool_size(cores: usize) -> u32 {
    (cores as u32).saturating_add(1).max(3)
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

fn parse_var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match var(name) {
        None => Ok(default),
        Some(raw) => match raw.trim().parse() {
            Ok(value) => Ok(value),
            Err(_) => bail!("{name}={raw:?} is not a valid value"),
        },
    }
}

/// The longest a replica may lag behind the primary and still be read from.
pub const DEFAULT_REPLICA_MAX_LAG: std::time::Duration = std::time::Duration::from_secs(5);

/// PostgreSQL URLs separated by commas.
pub fn parse_replica_urls(raw: &str) -> anyhow::Result<Vec<String>> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
            if !matches!(scheme, "postgres" | "postgresql") || !rest.contains('/') {
                bail!(
                    "REFERDESK_REPLICA_URL: {:?} is not a PostgreSQL URL \
                     (expected e.g. \"postgres://user:password@replica-host:5432/referdesk\")",
                    // Never the password in a message.
                    url.rsplit_once('@').map_or(url, |(_, host)| host)
                );
            }
            Ok(url.to_string())
        })
        .collect()
}

/// Seconds, whole or not (`5`, `0.5`), more than zero.
fn parse_seconds(name: &str, default: std::time::Duration) -> anyhow::Result<std::time::Duration> {
    let Some(raw) = var(name) else {
        return Ok(default);
    };
    match raw.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => {
            Ok(std::time::Duration::from_secs_f64(secs))
        }
        _ => bail!("{name}={raw:?} is not a number of seconds greater than 0 (e.g. 5 or 0.5)"),
    }
}

/// A list of CIDR ranges or single addresses, separated by commas or spaces.
pub fn parse_trusted_proxies(raw: &str) -> anyhow::Result<Vec<IpNet>> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "REFERDESK_TRUSTED_PROXIES: {item:?} is not an IP address or CIDR range \
                         (expected e.g. \"127.0.0.1, 10.0.0.0/8, ::1\")"
                    )
                })
        })
        .collect()
}

impl Config {
    /// Reads `.env` (if present) and the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        // A missing .env is normal; a broken one is worth failing on.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(error) if error.not_found() => {}
            Err(error) => return Err(error).context("could not read .env"),
        }
        let bind = var("REFERDESK_BIND").unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let public_url = var("REFERDESK_PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{}", bind.replace("0.0.0.0", "127.0.0.1")));
        Ok(Config {
            database_url: var("DATABASE_URL"),
            bind,
            data_dir: PathBuf::from(var("REFERDESK_DATA_DIR").unwrap_or_else(|| ".referdesk".into())),
            secret: var("REFERDESK_SECRET"),
            public_url: public_url.trim_end_matches('/').to_string(),
            pool_size: parse_var("REFERDESK_POOL_SIZE", default_pool_size(cpu_cores()))?,
            smtp_url: var("REFERDESK_SMTP_URL"),
            mail_from: var("REFERDESK_MAIL_FROM").unwrap_or_else(|| DEFAULT_MAIL_FROM.to_string()),
            mail_max_attempts: parse_var("REFERDESK_MAIL_MAX_ATTEMPTS", 5)?.max(1),
            mail_retry_base_secs: parse_var("REFERDESK_MAIL_RETRY_SECS", 30)?,
            api_rate_per_minute: parse_var("REFERDESK_API_RATE", 600)?,
            workers: parse_var("REFERDESK_WORKERS", cpu_cores())?,
            trusted_proxies: parse_trusted_proxies(&var("REFERDESK_TRUSTED_PROXIES").unwrap_or_default())?,
            statement_timeout_ms: parse_var("REFERDESK_STATEMENT_TIMEOUT_MS", DEFAULT_STATEMENT_TIMEOUT_MS)?
                .max(MIN_STATEMENT_TIMEOUT_MS),
            webhooks: WebhookSettings::from_env()?,
            reward_release_secs: parse_var("REFERDESK_REWARD_RELEASE_SECS", 60)?,
            direct_database_url: var("REFERDESK_DIRECT_DATABASE_URL"),
            replica_urls: parse_replica_urls(&var("REFERDESK_REPLICA_URL").unwrap_or_default())?,
            replica_max_lag: parse_seconds("REFERDESK_REPLICA_MAX_LAG", DEFAULT_REPLICA_MAX_LAG)?,
            jobs: JobSettings::from_env()?,
        })
    }

    /// Where session-bound work connects: `REFERDESK_DIRECT_DATABASE_URL`, else the
    /// database the server uses (`resolved`: `DATABASE_URL` or the embedded cluster's).
    pub fn direct_url(&self, resolved: &str) -> String {
        self.direct_database_url
            .clone()
            .unwrap_or_else(|| resolved.to_string())
    }

    /// Cookies get the `Secure` flag when people reach the server over HTTPS.
    pub fn serves_https(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// The cookie signing key: `REFERDESK_SECRET`, else a key generated once and kept in
    /// the data dir so that a restart does not sign everybody out.
    pub fn cookie_secret(&self) -> anyhow::Result<Vec<u8>> {
        use sha2::{Digest, Sha512};
        if let Some(secret) = &self.secret {
            if secret.len() < 32 {
                bail!("REFERDESK_SECRET must be at least 32 characters long");
            }
            return Ok(Sha512::digest(secret.as_bytes()).to_vec());
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("could not create {}", self.data_dir.display()))?;
        let path = self.data_dir.join("secret");
        let secret = match std::fs::read_to_string(&path) {
            Ok(existing) if existing.trim().len() >= 32 => {
                crate::private_files::set_mode(&path, crate::private_files::FILE_MODE)
                    .with_context(|| format!("could not make {} private", path.display()))?;
                existing.trim().to_string()
            }
            _ => {
                let generated = crate::random::random_token(64);
                crate::private_files::write_private_file(&path, generated.as_bytes())
                    .with_context(|| format!("could not write {}", path.display()))?;
                generated
            }
        };
        Ok(Sha512::digest(secret.as_bytes()).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::{default_pool_size, parse_replica_urls, parse_trusted_proxies};

    #[test]
    fn replica_urls_are_postgres_urls_separated_by_commas() {
        assert_eq!(
            parse_replica_urls(" postgres://r1:5432/app , postgresql://u:p@r2/app?sslmode=require,").unwrap(),
            [
                "postgres://r1:5432/app",
                "postgresql://u:p@r2/app?sslmode=require"
            ]
        );
        assert!(parse_replica_urls("").unwrap().is_empty());
        for bad in ["replica:5432", "mysql://r/app", "postgres://host-only"] {
            let error = parse_replica_urls(bad).unwrap_err().to_string();
            assert!(error.contains("REFERDESK_REPLICA_URL"), "{bad}: {error}");
        }
        let error = parse_replica_urls("http://user:hunter2@r/app")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn trusted_proxies_are_a_list_of_ranges_or_addresses() {
        let parsed = parse_trusted_proxies(" 127.0.0.1, 10.0.0.0/8 fd00::/8,::1").unwrap();
        let shown: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8", "::1/128"]);
        assert!(parse_trusted_proxies("").unwrap().is_empty());
        for bad in ["10.0.0.0/33", "proxy.example", "10.0.0", "*"] {
            let error = parse_trusted_proxies(bad).unwrap_err().to_string();
            assert!(
                error.contains("REFERDESK_TRUSTED_PROXIES") && error.contains(bad),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn the_pool_has_a_connection_per_core_and_one_more() {
        assert_eq!(default_pool_size(1), 3);
        assert_eq!(default_pool_size(2), 3);
        assert_eq!(default_pool_size(4), 5);
        assert_eq!(default_pool_size(16), 17);
    }
}
