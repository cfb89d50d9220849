//! Mail delivery: a background worker that drains the `mail_outbox` table.
//!
//! The worker is one dedicated thread started by `Application::build`. It sends due
//! messages at once when woken through a [`MailWaker`] — by `db::listener` when a message
//! is queued in any process (a `NOTIFY` on `referdesk_mail`), or by a handler of this one —
//! and otherwise sleeps until the next retry falls due, at most [`FALLBACK_POLL`]. Between two messages it checks whether it should stop, so shutting the server
//! down never cuts a message in half. See [`outbox`] for what "sent once" means, and
//! [`transport`] for SMTP versus `.eml` files.

pub mod outbox;
pub mod transport;

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;

use crate::config::Config;
use crate::db::{listener, DbPool};
use crate::mail::outbox::RetryPolicy;
use crate::mail::transport::Transport;

/// The longest the worker sleeps when nobody wakes it: the fallback for a lost
/// notification.
pub const FALLBACK_POLL: Duration = Duration::from_secs(10);
/// The shortest: a message due already is being sent by another process.
const BUSY_POLL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Signal {
    stop: bool,
    woken: bool,
}

#[derive(Default)]
struct Shared {
    signal: Mutex<Signal>,
    changed: Condvar,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut Signal)) {
        let mut signal = self
            .signal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut signal);
        self.changed.notify_all();
    }

    fn stopping(&self) -> bool {
        self.signal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .stop
    }

    /// Forgets earlier wake-ups: what they asked for is about to be done.
    fn take_wake(&self) {
        self.update(|signal| signal.woken = false);
    }

    /// Sleeps until woken, stopped, or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let signal = self
            .signal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if signal.stop || signal.woken {
            return;
        }
        let _ = self
            .changed
            .wait_timeout_while(signal, timeout, |signal| !signal.stop && !signal.woken);
    }
}

/// Asks the worker to look at the outbox now. Cheap to clone; kept in the app state.
#[derive(Clone, Default)]
pub struct MailWaker(Arc<Shared>);

impl MailWaker {
    pub fn wake(&self) {
        self.0.update(|signal| signal.woken = true);
    }
}

/// The running worker. [`MailWorker::stop`] ends it; dropping it asks it to stop.
pub struct MailWorker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl MailWorker {
    /// Starts the worker thread. Fails on a bad `REFERDESK_MAIL_FROM` or SMTP URL, or an
    /// unwritable mail folder: better at start than at the first invite.
    pub fn start(pool: DbPool, config: &Config) -> anyhow::Result<MailWorker> {
        let from: Mailbox = config
            .mail_from
            .parse()
            .with_context(|| format!("REFERDESK_MAIL_FROM={:?} is not a valid sender", config.mail_from))?;
        let transport = Transport::from_config(config.smtp_url.as_deref(), &config.data_dir)?;
        let policy = RetryPolicy {
            max_attempts: config.mail_max_attempts.max(1),
            base_secs: config.mail_retry_base_secs,
        };
        tracing::info!(transport = %transport.describe(), "mail worker started");
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("mail-worker".to_string())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, &pool, &transport, &from, policy)
            })
            .context("could not start the mail worker thread")?;
        Ok(MailWorker {
            shared,
            thread: Some(thread),
        })
    }

    pub fn waker(&self) -> MailWaker {
        MailWaker(self.shared.clone())
    }

    /// Asks the worker to stop after the message it is sending, and waits for it.
    /// Blocking: call it from a blocking context.
    pub fn stop(mut self) {
        self.shared.update(|signal| signal.stop = true);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the mail worker panicked");
            }
        }
        tracing::info!("mail worker stopped");
    }
}

impl Drop for MailWorker {
    fn drop(&mut self) {
        self.shared.update(|signal| signal.stop = true);
    }
}

fn run(shared: &Shared, pool: &DbPool, transport: &Transport, from: &Mailbox, policy: RetryPolicy) {
    while !shared.stopping() {
        shared.take_wake();
        let next = drain(shared, pool, transport, from, policy);
        shared.wait(listener::until_due(next, Utc::now(), BUSY_POLL, FALLBACK_POLL));
    }
}

/// Sends every due message, one at a time, until none is due or a stop is asked for.
/// Returns when the next queued message falls due, if it knows.
fn drain(
    shared: &Shared,
    pool: &DbPool,
    transport: &Transport,
    from: &Mailbox,
    policy: RetryPolicy,
) -> Option<DateTime<Utc>> {
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(error) => {
            tracing::warn!("mail worker: no database connection: {error}");
            return None;
        }
    };
    while !shared.stopping() {
        match outbox::deliver_next(&mut conn, transport, from, policy) {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(error) => {
                tracing::warn!("mail worker: {error}");
                return None;
            }
        }
    }
    outbox::next_due(&mut conn).unwrap_or_else(|error| {
        tracing::warn!("mail worker: {error}");
        None
    })
}
