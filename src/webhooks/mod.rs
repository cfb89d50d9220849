//! Webhook delivery: a background worker that drains `webhook_deliveries`.
//!
//! One dedicated thread started by `Application::build` runs a small async runtime: it
//! claims due deliveries (`domain::webhooks::delivery::claim`) up to its free slots
//! (`REFERDESK_WEBHOOK_CONCURRENCY`; the claim also caps each endpoint at
//! `REFERDESK_WEBHOOK_PER_ENDPOINT` across processes), sends each in its own task and
//! records the attempt. A slow endpoint holds only its own slots, so the others go on.
//! It claims at once when a request finished, and when woken through its
//! [`WebhookWaker`] — by `db::listener` when deliveries are queued in any process (a
//! `NOTIFY` on `referdesk_webhooks`); otherwise it sleeps until the next retry or lease
//! end falls due, at most [`FALLBACK_POLL`].
//!
//! [`deliver_due`] is one pass at a chosen time: what tests use instead of waiting for
//! the backoff.

pub mod sender;

use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::Rng;
use std::sync::Arc;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::config::WebhookSettings;
use crate::db::{self, listener, DbPool};
use crate::domain::webhooks::delivery::{self, Claimed, Limits};
use crate::error::Error;

pub use sender::Sender;

/// The longest the worker sleeps when nobody wakes it: the fallback for a lost
/// notification (or an endpoint switched back on).
pub const FALLBACK_POLL: Duration = Duration::from_secs(10);
/// The shortest: deliveries due already wait for a slot of their endpoint, or are being
/// claimed by another process.
const BUSY_POLL: Duration = Duration::from_millis(500);

/// Asks the worker to claim now. Cheap to clone.
#[derive(Clone, Default)]
pub struct WebhookWaker(Arc<Notify>);

impl WebhookWaker {
    pub fn wake(&self) {
        // Stored when the worker is busy: its next wait ends at once.
        self.0.notify_one();
    }
}

fn limits(settings: &WebhookSettings, batch: usize) -> Limits {
    Limits {
        batch: batch as i64,
        per_endpoint: settings.per_endpoint as i64,
        lease: chrono::Duration::seconds(settings.lease_secs),
    }
}

/// Sends one claimed delivery and records the attempt at `now` (the clock, when `None`).
async fn deliver(pool: DbPool, sender: Sender, claimed: Claimed, now: Option<DateTime<Utc>>) {
    let result = sender.send(&claimed, now.unwrap_or_else(Utc::now)).await;
    let recorded_at = now.unwrap_or_else(Utc::now);
    let jitter = rand::thread_rng().gen_range(-1.0..=1.0);
    let delivery_id = claimed.delivery_id;
    let outcome = db::run(&pool, move |conn| {
        delivery::record(conn, &claimed, &result, recorded_at, jitter)
    })
    .await;
    if let Err(error) = outcome {
        // The lease ends and the delivery is tried again.
        tracing::warn!(delivery_id, error = %error, "could not record a webhook attempt");
    }
}

/// One pass at `now`: claims what is due (up to the concurrency), sends it all and records
/// every attempt. Returns how many deliveries it attempted.
pub async fn deliver_due(
    pool: &DbPool,
    sender: &Sender,
    settings: &WebhookSettings,
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let limits = limits(settings, settings.concurrency);
    let claimed = db::run(pool, move |conn| delivery::claim(conn, now, limits)).await?;
    let count = claimed.len();
    let mut tasks = JoinSet::new();
    for one in claimed {
        tasks.spawn(deliver(pool.clone(), sender.clone(), one, Some(now)));
    }
    while tasks.join_next().await.is_some() {}
    Ok(count)
}

/// The running worker. [`WebhookWorker::stop`] ends it; dropping it asks it to stop.
pub struct WebhookWorker {
    stop: watch::Sender<bool>,
    waker: WebhookWaker,
    thread: Option<JoinHandle<()>>,
}

impl WebhookWorker {
    pub fn start(pool: DbPool, settings: &WebhookSettings) -> anyhow::Result<WebhookWorker> {
        let sender = Sender::new(settings).context("could not build the webhook HTTP client")?;
        let (stop, stopped) = watch::channel(false);
        let settings = settings.clone();
        let waker = WebhookWaker::default();
        let woken = waker.clone();
        let thread = std::thread::Builder::new()
            .name("webhook-worker".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                match runtime {
                    Ok(runtime) => runtime.block_on(run(pool, sender, settings, woken, stopped)),
                    Err(error) => tracing::error!(error = %error, "could not start the webhook runtime"),
                }
            })
            .context("could not start the webhook worker thread")?;
        Ok(WebhookWorker {
            stop,
            waker,
            thread: Some(thread),
        })
    }

    pub fn waker(&self) -> WebhookWaker {
        self.waker.clone()
    }

    /// Asks the worker to stop once its requests in flight are done (at most the request
    /// timeout), and waits for it. Blocking: call it from a blocking context.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the webhook worker panicked");
            }
        }
    }
}

impl Drop for WebhookWorker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn run(
    pool: DbPool,
    sender: Sender,
    settings: WebhookSettings,
    woken: WebhookWaker,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    loop {
        if *stopped.borrow() {
            break;
        }
        let free = settings.concurrency.saturating_sub(tasks.len());
        let mut filled = false;
        let mut next_due = None;
        if free > 0 {
            let limits = limits(&settings, free);
            let claimed = db::run(&pool, move |conn| {
                let claimed = delivery::claim(conn, Utc::now(), limits)?;
                let next_due = delivery::next_due(conn)?;
                Ok((claimed, next_due))
            })
            .await;
            match claimed {
                Ok((claimed, next)) => {
                    filled = claimed.len() == free;
                    next_due = next;
                    for one in claimed {
                        tasks.spawn(deliver(pool.clone(), sender.clone(), one, None));
                    }
                }
                Err(error) => tracing::warn!(error = %error, "could not claim webhook deliveries"),
            }
        }
        // A full claim may have left more due: look again as soon as a slot frees up.
        let wait = if filled {
            Duration::ZERO
        } else {
            listener::until_due(next_due, Utc::now(), BUSY_POLL, FALLBACK_POLL)
        };
        tokio::select! {
            _ = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep(wait), if !filled || tasks.is_empty() => {}
            _ = woken.0.notified() => {}
            _ = stopped.changed() => {}
        }
        // Every slot freed meanwhile is filled by the next claim: one claim for several
        // finished deliveries rather than one each.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!("webhook worker stopped");
}
