//! Clearing out rows that are of no use any more: sessions past their expiry, sign-in
//! failures older than any throttle looks back, and one-time links (setup, set-password)
//! that were used or have expired, and past windows of the shared rate limits. The server runs [`prune`] every [`PRUNE_INTERVAL`]
//! (`crate::pruner`); several server processes on one database share one pass per
//! interval through the `maintenance_runs` row they claim.

use chrono::{Duration, Utc};
use diesel::prelude::*;

use crate::db::schema::{login_failures, maintenance_runs, one_time_tokens};
use crate::domain::{rate_limits, sessions, team, webhooks};
use crate::error::Error;

/// The `maintenance_runs` row of the pruning pass.
const PRUNE_TASK: &str = "prune";

/// How often expired rows are pruned, across all server processes on the database.
pub const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// What one pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub sessions: usize,
    pub login_failures: usize,
    pub one_time_tokens: usize,
    /// Past windows of the shared rate limits (`rate_limits`).
    pub rate_windows: usize,
}

/// Runs one pruning pass unless another process is running one, or one ran less than
/// `min_gap` ago. Returns what it deleted, or `None` when it left the work to the other.
///
/// The pass holds the task's row locked (`FOR UPDATE SKIP LOCKED`) until it commits, so
/// a concurrent call skips at once instead of waiting, and a later one sees when it ran.
pub fn prune(conn: &mut PgConnection, min_gap: Duration) -> Result<Option<Pruned>, Error> {
    let retention = Duration::days(webhooks::DEFAULT_RETENTION_DAYS);
    Ok(prune_with(conn, min_gap, retention)?.map(|(pruned, _)| pruned))
}

/// [`prune`], also deleting webhook attempts (and finished deliveries) older than
/// `webhook_retention` (`REFERDESK_WEBHOOK_RETENTION_DAYS`).
pub fn prune_with(
    conn: &mut PgConnection,
    min_gap: Duration,
    webhook_retention: Duration,
) -> Result<Option<(Pruned, webhooks::log::Pruned)>, Error> {
    conn.transaction(|conn| {
        let now = Utc::now();
        let claimed: Option<String> = maintenance_runs::table
            .find(PRUNE_TASK)
            .filter(
                maintenance_runs::last_run_at
                    .is_null()
                    .or(maintenance_runs::last_run_at.le(now - min_gap)),
            )
            .select(maintenance_runs::task)
            .for_update()
            .skip_locked()
            .first(conn)
            .optional()?;
        if claimed.is_none() {
            return Ok(None);
        }
        let failures_before = now - Duration::minutes(team::LOGIN_FAILURES_KEPT_MINUTES);
        let pruned = Pruned {
            sessions: sessions::delete_expired(conn)?,
            login_failures: diesel::delete(
                login_failures::table.filter(login_failures::created_at.lt(failures_before)),
            )
            .execute(conn)?,
            one_time_tokens: diesel::delete(
                one_time_tokens::table.filter(
                    one_time_tokens::used_at
                        .is_not_null()
                        .or(one_time_tokens::expires_at.le(now)),
                ),
            )
            .execute(conn)?,
            rate_windows: rate_limits::prune(conn, now)?,
        };
        let webhooks = webhooks::log::prune(conn, now, webhook_retention)?;
        diesel::update(maintenance_runs::table.find(PRUNE_TASK))
            .set(maintenance_runs::last_run_at.eq(now))
            .execute(conn)?;
        Ok(Some((pruned, webhooks)))
    })
}
