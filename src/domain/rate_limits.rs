//! Limits shared by every server process on one database: a counter per limit, key and
//! fixed window in `rate_windows`, taken with one atomic statement.
//!
//! The window is the database clock's, so processes on hosts whose clocks differ still
//! count into the same window. The table is unlogged (see its migration): a crash empties
//! it, which only ever lets a client through sooner.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};

use crate::db::prepared::prepared;
use crate::db::schema::rate_windows;
use crate::error::Error;

/// What a counter limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Calls per API token (`REFERDESK_API_RATE` per minute); the key is the token's hash.
    ApiToken,
    /// Calls per client address whose bearer token matched no live token.
    UnknownToken,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::ApiToken => "api_token",
            Scope::UnknownToken => "unknown_token",
        }
    }
}

/// Every window is a minute, starting on the minute of the database clock.
pub const WINDOW_SECS: i64 = 60;

#[derive(QueryableByName)]
struct Taken {
    #[diesel(sql_type = Nullable<Integer>)]
    hits: Option<i32>,
    #[diesel(sql_type = BigInt)]
    retry_after_secs: i64,
}

#[derive(QueryableByName)]
struct Spent {
    #[diesel(sql_type = BigInt)]
    retry_after_secs: i64,
}

/// The current window's start and the seconds left in it, by the database clock.
macro_rules! window_start {
    () => {
        "to_timestamp(floor(extract(epoch FROM now()) / 60) * 60)"
    };
}
macro_rules! seconds_left {
    () => {
        "ceil(60 - extract(epoch FROM now())::numeric % 60)::bigint"
    };
}

/// Counts one hit for `key` in the current window if fewer than `limit` were counted
/// there; otherwise counts nothing and returns `Err(seconds)` until the window ends.
///
/// One statement, whatever the number of processes: the insert or the increment happens
/// under the row's lock, so concurrent callers never both take the last slot.
pub fn take(conn: &mut PgConnection, scope: Scope, key: &str, limit: u32) -> Result<Result<(), u64>, Error> {
    let limit = limit.min(i32::MAX as u32) as i32;
    let taken: Taken = prepared(concat!(
        "WITH hit AS (INSERT INTO rate_windows AS w (scope, key, window_start, hits) VALUES ($1, $2, ",
        window_start!(),
        ", 1) ON CONFLICT (scope, key, window_start) DO UPDATE SET hits = w.hits + 1 WHERE w.hits < $3",
        " RETURNING hits) SELECT (SELECT hits FROM hit) AS hits, ",
        seconds_left!(),
        " AS retry_after_secs"
    ))
    .bind::<Text, _>(scope.name())
    .bind::<Text, _>(key)
    .bind::<Integer, _>(limit)
    .get_result(conn)?;
    Ok(match taken.hits {
        // A limit of 0 refuses even the first hit, which the insert would have counted.
        Some(hits) if hits <= limit => Ok(()),
        _ => Err(taken.retry_after_secs.clamp(1, WINDOW_SECS) as u64),
    })
}

/// Whether `key` has used up `limit` in the current window, unless `exempt` (another
/// scope and key) took a hit within `exempt_within`: `Some(seconds)` until the window ends,
/// or `None`. Counts nothing, and reads nothing but `rate_windows`.
pub fn spent_unless(
    conn: &mut PgConnection,
    (scope, key): (Scope, &str),
    limit: u32,
    (exempt_scope, exempt_key): (Scope, &str),
    exempt_within: Duration,
) -> Result<Option<u64>, Error> {
    let spent: Option<Spent> = prepared(concat!(
        "SELECT ",
        seconds_left!(),
        " AS retry_after_secs FROM rate_windows WHERE scope = $1 AND key = $2 AND window_start = ",
        window_start!(),
        " AND hits >= $3 AND NOT EXISTS (SELECT 1 FROM rate_windows WHERE scope = $4 AND key = $5",
        " AND window_start > now() - make_interval(secs => $6))"
    ))
    .bind::<Text, _>(scope.name())
    .bind::<Text, _>(key)
    .bind::<Integer, _>(limit.min(i32::MAX as u32) as i32)
    .bind::<Text, _>(exempt_scope.name())
    .bind::<Text, _>(exempt_key)
    .bind::<Double, _>(exempt_within.num_seconds() as f64)
    .get_result(conn)
    .optional()?;
    Ok(spent.map(|spent| spent.retry_after_secs.clamp(1, WINDOW_SECS) as u64))
}

/// How long past windows are kept: a token's windows tell for this long that it was used
/// (the exemption of [`spent_unless`]).
pub const KEPT_MINUTES: i64 = 16;

/// Deletes the windows older than [`KEPT_MINUTES`] (by the pruner).
pub fn prune(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<usize, Error> {
    let before = now - Duration::minutes(KEPT_MINUTES);
    Ok(diesel::delete(rate_windows::table.filter(rate_windows::window_start.lt(before))).execute(conn)?)
}
