//! Streaming replicas (`REFERDESK_REPLICA_URL`): their pools, and the background thread
//! that decides which of them reads may use.
//!
//! Every [`CHECK_EVERY`] the watch thread reads the primary's log position, then each
//! replica's replayed position. A replica is usable while it answers and has replayed
//! what the primary had written at most `max_lag` ago. The lag is measured against the
//! primary's own positions as sampled here, not with `pg_last_xact_replay_timestamp()`,
//! which on a quiet database grows while the replica is fully caught up. Requests never
//! wait for a check: they read the last verdict (atomics), and a replica whose connection
//! fails during a checkout is set aside at once until the next check finds it well.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::Pool;
use diesel::sql_types::{BigInt, Nullable};
use diesel::{Connection, QueryableByName, RunQueryDsl};
use serde::Serialize;

use super::reads::Lsn;
use super::{DbConn, Manager};
use crate::background::StoppableThread;

/// How often the watch thread looks at the replicas.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a request waits for a replica's connection before it reads from the primary.
/// Short: a replica that went away is found here before the watch thread finds it.
pub(super) const REPLICA_CHECKOUT: Duration = Duration::from_millis(500);

/// A check's statements, on a server that no longer answers, give up after this.
const CHECK_TIMEOUT_MS: u64 = 1_000;

/// The replicas of one pool.
pub struct Replicas {
    members: Vec<Replica>,
    /// Where the next read starts looking, so reads spread over the usable replicas.
    next: AtomicUsize,
    max_lag: Duration,
}

struct Replica {
    /// Host, port and database: the URL without its credentials.
    label: String,
    url: String,
    pool: Pool<Manager>,
    usable: AtomicBool,
    /// The log position it had replayed at the last check.
    replayed: AtomicI64,
    report: Mutex<Report>,
}

/// One database as `/readyz` shows it: by its place in `REFERDESK_REPLICA_URL`, since
/// anyone may ask (the log names the host and the error).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `primary`, `replica 1`, `replica 2`…
    pub name: String,
    /// `up`, `lagging`, `down`, or `unknown` before the first check.
    pub status: &'static str,
    /// At most how far behind the primary the replica was at the last check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
}

impl Replicas {
    pub(super) fn new(urls: &[String], max_lag: Duration, pool_size: u32, settings: &str) -> Replicas {
        let members = urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let label = label_of(url);
                Replica {
                    report: Mutex::new(Report {
                        name: format!("replica {}", index + 1),
                        status: "unknown",
                        lag_ms: None,
                    }),
                    label,
                    url: url.clone(),
                    pool: super::pool_of(url, pool_size, settings.to_string()),
                    usable: AtomicBool::new(false),
                    replayed: AtomicI64::new(0),
                }
            })
            .collect();
        Replicas {
            members,
            next: AtomicUsize::new(0),
            max_lag,
        }
    }

    /// A usable replica that has replayed past `fence`, taking turns.
    pub(super) fn pick(&self, fence: Option<Lsn>) -> Option<usize> {
        let count = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count).map(|offset| (start + offset) % count).find(|&index| {
            let replica = &self.members[index];
            replica.usable.load(Ordering::Acquire)
                && fence.is_none_or(|fence| replica.replayed.load(Ordering::Acquire) >= fence)
        })
    }

    /// Whether some usable replica has replayed past `fence`: the fence is no longer needed.
    pub fn passed(&self, fence: Lsn) -> bool {
        self.members.iter().any(|replica| {
            replica.usable.load(Ordering::Acquire) && replica.replayed.load(Ordering::Acquire) >= fence
        })
    }

    /// A connection of replica `index`, or `None` (and the replica set aside until its
    /// next check) when none comes quickly.
    pub(super) fn checkout(&self, index: usize) -> Option<DbConn> {
        let replica = &self.members[index];
        match replica.pool.get_timeout(REPLICA_CHECKOUT) {
            Ok(conn) => Some(conn),
            Err(error) => {
                if replica.usable.swap(false, Ordering::AcqRel) {
                    tracing::warn!(replica = %replica.label, %error, "replica set aside; reading from the primary");
                }
                None
            }
        }
    }

    pub(super) fn pool(&self, index: usize) -> Pool<Manager> {
        self.members[index].pool.clone()
    }

    pub fn reports(&self) -> Vec<Report> {
        self.members
            .iter()
            .map(|replica| lock(&replica.report).clone())
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `postgres://user:secret@host:5432/db?x=y` → `host:5432/db`.
fn label_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('?').next().unwrap_or(rest).to_string()
}

/// The running watch thread. [`ReplicaWatch::stop`] ends it; dropping it asks it to stop.
pub struct ReplicaWatch {
    thread: StoppableThread,
}

impl ReplicaWatch {
    pub fn start(primary_url: &str, replicas: Arc<Replicas>) -> anyhow::Result<ReplicaWatch> {
        let primary_url = super::with_connection_params(primary_url);
        let thread = StoppableThread::spawn("replica-watch", "the replica watch thread", move |stop| {
            let mut watch = Watch {
                primary_url,
                primary: None,
                replicas: replicas.members.iter().map(|_| None).collect(),
                samples: VecDeque::new(),
            };
            loop {
                watch.check(&replicas);
                if stop.wait(CHECK_EVERY) {
                    break;
                }
            }
        })?;
        Ok(ReplicaWatch { thread })
    }

    /// Asks the thread to stop after its check, and waits for it. Blocking.
    pub fn stop(self) {
        self.thread.stop();
    }
}

/// The watch thread's own connections (never the pools': a check must not wait behind
/// the pages) and the primary's recent positions.
struct Watch {
    primary_url: String,
    primary: Option<PgConnection>,
    replicas: Vec<Option<PgConnection>>,
    /// When the primary was seen at which position, newest last, over `max_lag` and a check.
    samples: VecDeque<(Instant, Lsn)>,
}

/// The primary's log position now: after a request's writes, the fence its member's next
/// reads wait for.
pub fn primary_position(conn: &mut PgConnection) -> Result<Lsn, crate::error::Error> {
    let position: Position = diesel::sql_query(PRIMARY_POSITION).get_result(conn)?;
    position
        .lsn
        .ok_or_else(|| crate::error::Error::Internal(anyhow::anyhow!("the primary has no log position")))
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = Nullable<BigInt>)]
    lsn: Option<i64>,
}

/// The primary's position now.
const PRIMARY_POSITION: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn";

/// What a replica has replayed; a server that is not in recovery (a primary given as a
/// replica) has everything it wrote.
const REPLAYED_POSITION: &str = "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
     ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint AS lsn";

fn position(conn: &mut Option<PgConnection>, url: &str, query: &str) -> anyhow::Result<Lsn> {
    if conn.is_none() {
        let mut fresh = PgConnection::establish(url)?;
        fresh.batch_execute(&format!("SET statement_timeout = {CHECK_TIMEOUT_MS}"))?;
        *conn = Some(fresh);
    }
    let result = diesel::sql_query(query)
        .get_result::<Position>(conn.as_mut().expect("connected above"))
        .map_err(anyhow::Error::from)
        .and_then(|position| position.lsn.context("the server has no log position"));
    if result.is_err() {
        // Connect afresh next time: the server may have restarted.
        *conn = None;
    }
    result
}

/// PostgreSQL's own words, without the `postgres://…` it may quote.
fn short_error(error: &anyhow::Error) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or(&text).trim().to_string()
}

/// How far behind the primary a replica that has replayed up to `replayed` is at most: the
/// age of the newest primary position it has replayed. `None` when it has replayed none of
/// the kept samples (further behind than they reach).
fn lag_of(samples: &VecDeque<(Instant, Lsn)>, replayed: Lsn, now: Instant) -> Option<Duration> {
    samples
        .iter()
        .rev()
        .find(|(_, lsn)| *lsn <= replayed)
        .map(|(at, _)| now.saturating_duration_since(*at))
}

impl Watch {
    fn check(&mut self, replicas: &Replicas) {
        let now = Instant::now();
        match position(&mut self.primary, &self.primary_url, PRIMARY_POSITION) {
            Ok(lsn) => self.samples.push_back((now, lsn)),
            Err(error) => tracing::debug!(error = %short_error(&error), "replica watch: no primary position"),
        }
        let keep = replicas.max_lag + 2 * CHECK_EVERY;
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > keep)
        {
            self.samples.pop_front();
        }
        for (replica, conn) in replicas.members.iter().zip(self.replicas.iter_mut()) {
            let url = super::with_connection_params(&replica.url);
            let mut report = lock(&replica.report).clone();
            match position(conn, &url, REPLAYED_POSITION) {
                Ok(replayed) => {
                    let lag = lag_of(&self.samples, replayed, Instant::now());
                    let usable = lag.is_some_and(|lag| lag <= replicas.max_lag);
                    replica.replayed.store(replayed, Ordering::Release);
                    let was = replica.usable.swap(usable, Ordering::AcqRel);
                    if was != usable {
                        tracing::info!(replica = %replica.label, usable, ?lag, "replica status changed");
                    }
                    report.status = if usable { "up" } else { "lagging" };
                    report.lag_ms = lag.map(|lag| lag.as_millis() as u64);
                }
                Err(error) => {
                    if replica.usable.swap(false, Ordering::AcqRel) {
                        tracing::warn!(replica = %replica.label, error = %short_error(&error), "replica down; reading from the primary");
                    }
                    report.status = "down";
                    report.lag_ms = None;
                }
            }
            *lock(&replica.report) = report;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use super::{label_of, lag_of};

    #[test]
    fn the_lag_is_the_age_of_the_newest_primary_position_replayed() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        // The primary wrote between the samples at 0 s and 2 s, and nothing after.
        let samples: VecDeque<_> = [(at(0), 100), (at(1), 100), (at(2), 500), (at(3), 500)].into();
        let now = at(4);
        // Caught up: as old as the last sample, however long ago the last write was.
        assert_eq!(lag_of(&samples, 500, now), Some(Duration::from_secs(1)));
        // Between the two: it has what the primary had at 1 s.
        assert_eq!(lag_of(&samples, 300, now), Some(Duration::from_secs(3)));
        assert_eq!(lag_of(&samples, 100, now), Some(Duration::from_secs(3)));
        // Older than every sample: unknown, so not usable.
        assert_eq!(lag_of(&samples, 99, now), None);
        assert_eq!(lag_of(&VecDeque::new(), 500, now), None);
    }

    #[test]
    fn a_replica_is_named_without_its_credentials() {
        assert_eq!(
            label_of("postgres://app:secret@replica-1:5433/referdesk?sslmode=require"),
            "replica-1:5433/referdesk"
        );
        assert_eq!(label_of("postgres://replica/referdesk"), "replica/referdesk");
    }
}
