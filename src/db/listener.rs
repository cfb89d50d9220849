//! Wake-ups for the background workers of every server process: `LISTEN` on one dedicated
//! connection (outside the pools), and a call per notification.
//!
//! Work is queued with a `NOTIFY` in the transaction that queues it (triggers, see the
//! wake-ups in the initial migration), so a worker in any process starts on it right
//! after the commit instead of at its next poll; the workers still poll, slowly, as a
//! fallback. A lost connection is opened again (with a growing pause while the database is
//! away), and every worker is woken once it is back, for what it may have missed.
//!
//! Reusable by any worker: [`Listener::start`] with the channels and what to call for each.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// New or re-queued messages in `mail_outbox`.
pub const MAIL: &str = "referdesk_mail";
/// Webhook deliveries due now.
pub const WEBHOOKS: &str = "referdesk_webhooks";
/// Rewards whose hold is over and that may be credited.
pub const REWARDS: &str = "referdesk_rewards";
/// Jobs queued for the background (`job_worker`).
pub const JOBS: &str = "referdesk_jobs";

/// The connection's `application_name`: how an operator (or a test) finds it in
/// `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "referdesk-listener";

/// What a notification on a channel calls: cheap, it runs on the listener's thread (a
/// worker's wake-up).
pub type OnNotify = Box<dyn Fn() + Send + 'static>;

/// How often the connection is looked at for notifications that arrived: a non-blocking
/// read of its socket (libpq's `PQconsumeInput`), no query and no round trip. Diesel does
/// not expose the socket to wait on, so this bounds how late a wake-up comes.
const TICK: Duration = Duration::from_millis(50);
/// How often the connection is checked with a query while nothing arrives, so a
/// connection that silently died is noticed and replaced.
const HEALTH_CHECK: Duration = Duration::from_secs(30);
/// The pause before connecting again after a failure, doubled up to the maximum.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The running listener. [`Listener::stop`] ends it; dropping it asks it to stop.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts the listener thread on its own connection to `database_url`. Connecting
    /// happens on the thread: a database that is away now is connected to once it is back.
    pub fn start(database_url: &str, channels: Vec<(&'static str, OnNotify)>) -> anyhow::Result<Listener> {
        let url = super::with_connection_params(&with_application_name(database_url));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("listener".to_string())
            .spawn({
                let stop = stop.clone();
                move || run(&url, &channels, &stop)
            })
            .context("could not start the listener thread")?;
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread (within a tick) and waits for it. Blocking.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the listener thread panicked");
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// How long a worker sleeps when nobody wakes it: until its next item falls due (`next`,
/// from the database), but at least `floor` (an item due already is being done by another
/// process, or waits for a free slot) and at most `fallback` (the slow poll that finds
/// what no notification announced).
pub fn until_due(
    next: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
    floor: Duration,
    fallback: Duration,
) -> Duration {
    let Some(next) = next else {
        return fallback;
    };
    (next - now)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .clamp(floor, fallback.max(floor))
}

fn with_application_name(url: &str) -> String {
    if url.contains("application_name=") {
        return url.to_string();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={APPLICATION_NAME}")
}

fn run(url: &str, channels: &[(&'static str, OnNotify)], stop: &AtomicBool) {
    let mut pause = RETRY_FIRST;
    while !stop.load(Ordering::SeqCst) {
        match connect(url, channels) {
            Ok(mut conn) => {
                pause = RETRY_FIRST;
                tracing::info!(channels = channels.len(), "listening for queued work");
                // Whatever was queued while nobody listened.
                for (_, on_notify) in channels {
                    on_notify();
                }
                if let Err(error) = listen(&mut conn, channels, stop) {
                    tracing::warn!(error = %error, "the listener lost its connection; connecting again");
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, retry_in = ?pause, "the listener could not connect");
                sleep_unless_stopped(pause, stop);
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

fn connect(url: &str, channels: &[(&'static str, OnNotify)]) -> anyhow::Result<PgConnection> {
    let mut conn = PgConnection::establish(url)?;
    let statements: String = channels
        .iter()
        .map(|(channel, _)| format!("LISTEN \"{channel}\";"))
        .collect();
    conn.batch_execute(&statements)?;
    Ok(conn)
}

/// Hands notifications on until the connection fails (`Err`) or a stop is asked (`Ok`).
fn listen(
    conn: &mut PgConnection,
    channels: &[(&'static str, OnNotify)],
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut checked = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        // Several notifications on one channel between two ticks wake its worker once.
        let mut rung = vec![false; channels.len()];
        for notification in conn.notifications_iter() {
            let notification = notification?;
            if let Some(at) = channels
                .iter()
                .position(|(name, _)| *name == notification.channel)
            {
                rung[at] = true;
            }
        }
        for (at, (_, on_notify)) in channels.iter().enumerate() {
            if rung[at] {
                on_notify();
            }
        }
        if checked.elapsed() >= HEALTH_CHECK {
            conn.batch_execute("SELECT 1")?;
            checked = Instant::now();
        }
        std::thread::sleep(TICK);
    }
    Ok(())
}

fn sleep_unless_stopped(pause: Duration, stop: &AtomicBool) {
    let until = Instant::now() + pause;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_sleep_until_the_next_item_within_bounds() {
        let now = chrono::Utc::now();
        let (floor, fallback) = (Duration::from_secs(1), Duration::from_secs(10));
        let at = |secs: i64| Some(now + chrono::Duration::seconds(secs));
        assert_eq!(until_due(None, now, floor, fallback), fallback);
        assert_eq!(until_due(at(4), now, floor, fallback), Duration::from_secs(4));
        assert_eq!(until_due(at(-4), now, floor, fallback), floor, "due already");
        assert_eq!(until_due(at(400), now, floor, fallback), fallback);
    }

    #[test]
    fn names_its_connection_unless_the_url_does() {
        assert_eq!(
            with_application_name("postgres://h/db"),
            "postgres://h/db?application_name=referdesk-listener"
        );
        assert_eq!(
            with_application_name("postgres://h/db?sslmode=require"),
            "postgres://h/db?sslmode=require&application_name=referdesk-listener"
        );
        assert_eq!(
            with_application_name("postgres://h/db?application_name=mine"),
            "postgres://h/db?application_name=mine"
        );
    }
}
