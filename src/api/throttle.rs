//! API throttling, shared by every server process on the database: a fixed one-minute
//! window per token, and one per client address for tokens that match no live token. The
//! counters are rows in PostgreSQL (`domain::rate_limits`), so N processes allow the
//! documented rate in total, not N times it.

use chrono::Duration;
use diesel::PgConnection;

use crate::domain::rate_limits::{self, Scope};
use crate::error::Error;

/// Requests per client address and minute whose bearer token matches no live token.
pub const UNKNOWN_TOKENS_PER_MINUTE: u32 = 20;

/// How long a token that was used stays exempt from its address's refusals.
const REMEMBERED_FOR: Duration = Duration::minutes(15);

/// Guessing tokens, per client address: the first check of every API call, before its
/// token is looked up.
///
/// Each request whose token matched no live token counts against its address
/// ([`unknown`]); once an address has [`UNKNOWN_TOKENS_PER_MINUTE`] of them in the minute,
/// its requests are refused without looking the token up — except those with a token used
/// in the last 15 minutes (its per-token window, by hash, is recent), so a guesser sharing
/// an address with a real client (a NAT, a proxy) does not lock that client out, and a
/// lucky guess past the limit is refused like any other.
pub fn admit_address(conn: &mut PgConnection, address: &str, token_hash: &str) -> Result<(), Error> {
    let refused = rate_limits::spent_unless(
        conn,
        (Scope::UnknownToken, address),
        UNKNOWN_TOKENS_PER_MINUTE,
        (Scope::ApiToken, token_hash),
        REMEMBERED_FOR,
    )?;
    match refused {
        Some(retry_after_secs) => Err(unknown_tokens(retry_after_secs)),
        None => Ok(()),
    }
}

/// The token matched no live token: it counts against the address. The answer to give:
/// 401, or 429 once the address is over its limit.
pub fn unknown(conn: &mut PgConnection, address: &str) -> Error {
    match rate_limits::take(conn, Scope::UnknownToken, address, UNKNOWN_TOKENS_PER_MINUTE) {
        Ok(Ok(())) => Error::Unauthenticated,
        Ok(Err(retry_after_secs)) => unknown_tokens(retry_after_secs),
        Err(error) => error,
    }
}

/// A live token's call: one of its `per_minute`, or 429.
pub fn take_call(conn: &mut PgConnection, token_hash: &str, per_minute: u32) -> Result<(), Error> {
    rate_limits::take(conn, Scope::ApiToken, token_hash, per_minute)?.map_err(|retry_after_secs| {
        Error::TooManyRequests {
            message: "Too many requests. Slow down and retry later.".into(),
            retry_after_secs,
        }
    })
}

fn unknown_tokens(retry_after_secs: u64) -> Error {
    Error::TooManyRequests {
        message: "Too many requests with unknown tokens. Check the token and retry later.".into(),
        retry_after_secs,
    }
}
