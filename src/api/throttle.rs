//! API throttling, kept in memory: a fixed one-minute window per token, and one per client
//! address for tokens that match no live token.
//!
//! In-process on purpose: Referdesk runs as one server process, and a restart forgetting
//! the counts only ever lets a client through sooner, never locks it out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::sha256_hex;

const WINDOW: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    per_window: u32,
    windows: Mutex<HashMap<i64, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn per_minute(per_window: u32) -> Self {
        RateLimiter {
            per_window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request for `token_id`; `Err(seconds)` tells when to retry.
    pub fn check(&self, token_id: i64) -> Result<(), u64> {
        let now = Instant::now();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (started, _)| now.duration_since(*started) < WINDOW);
        }
        let (started, count) = windows.entry(token_id).or_insert((now, 0));
        if now.duration_since(*started) >= WINDOW {
            *started = now;
            *count = 0;
        }
        if *count >= self.per_window {
            let retry = WINDOW
                .saturating_sub(now.duration_since(*started))
                .as_secs()
                .max(1);
            return Err(retry);
        }
        *count += 1;
        Ok(())
    }
}

/// Requests per client address and minute whose bearer token matches no live token.
pub const UNKNOWN_TOKENS_PER_MINUTE: u32 = 20;

/// How long a token that authenticated stays exempt from its address's refusals.
const REMEMBERED_FOR: Duration = Duration::from_secs(15 * 60);

/// Guessing tokens, per client address.
///
/// Each request whose token matched no live token counts against its address; once an
/// address has [`UNKNOWN_TOKENS_PER_MINUTE`] of them in the minute, its requests are
/// refused before any database work — except those with a token that authenticated in the
/// last 15 minutes (remembered by its hash), so a guesser sharing an address with a real
/// client (a NAT, a proxy) does not lock that client out. Only refused tokens count: a
/// burst of requests with a valid token is never refused here, whatever its size. (Guesses
/// sent all at once may each be looked up before the first is counted; the limit holds from
/// then on.)
pub struct UnknownTokens {
    windows: Arc<Mutex<Windows>>,
    live: Mutex<HashMap<String, Instant>>,
}

type Windows = HashMap<String, (Instant, u32)>;

/// A request admitted by [`UnknownTokens::admit`] to look its token up.
pub struct Admitted {
    windows: Arc<Mutex<Windows>>,
    address: String,
}

impl Admitted {
    /// The token matched no live token: it counts against the address.
    pub fn unknown(self) {
        let now = Instant::now();
        let mut windows = lock(&self.windows);
        let (started, count) = windows.entry(self.address).or_insert((now, 0));
        if now.duration_since(*started) >= WINDOW {
            *started = now;
            *count = 0;
        }
        *count += 1;
    }
}

impl UnknownTokens {
    pub fn new() -> Self {
        UnknownTokens {
            windows: Arc::new(Mutex::new(HashMap::new())),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Lets a request with `secret` from `address` look its token up, or `Err(seconds)`
    /// to retry in.
    pub fn admit(&self, address: &str, secret: &str) -> Result<Admitted, u64> {
        let now = Instant::now();
        let admitted = Admitted {
            windows: self.windows.clone(),
            address: address.to_string(),
        };
        let mut windows = lock(&self.windows);
        if windows.len() > 10_000 {
            windows.retain(|_, (started, _)| now.duration_since(*started) < WINDOW);
        }
        let retry = match windows.get(address) {
            Some((started, count))
                if now.duration_since(*started) < WINDOW && *count >= UNKNOWN_TOKENS_PER_MINUTE =>
            {
                WINDOW
                    .saturating_sub(now.duration_since(*started))
                    .as_secs()
                    .max(1)
            }
            _ => return Ok(admitted),
        };
        drop(windows);
        let remembered = lock(&self.live)
            .get(&sha256_hex(secret))
            .is_some_and(|at| now.duration_since(*at) < REMEMBERED_FOR);
        if remembered {
            Ok(admitted)
        } else {
            Err(retry)
        }
    }

    /// The admitted request's token is live: it is remembered.
    pub fn live(&self, secret: &str, _admitted: Admitted) {
        let now = Instant::now();
        let mut live = lock(&self.live);
        if live.len() > 10_000 {
            live.retain(|_, at| now.duration_since(*at) < REMEMBERED_FOR);
        }
        live.insert(sha256_hex(secret), now);
    }
}

impl Default for UnknownTokens {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_rate_and_counts_tokens_apart() {
        let limiter = RateLimiter::per_minute(2);
        assert!(limiter.check(1).is_ok());
        assert!(limiter.check(1).is_ok());
        let retry = limiter.check(1).unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(limiter.check(2).is_ok());
    }

    #[test]
    fn unknown_tokens_are_refused_per_address_past_the_limit_but_live_ones_pass() {
        let guard = UnknownTokens::new();
        let live = guard.admit("10.0.0.1", "rd_live").unwrap();
        guard.live("rd_live", live);
        for n in 0..UNKNOWN_TOKENS_PER_MINUTE {
            let admitted = guard.admit("10.0.0.1", &format!("rd_guess{n}"));
            admitted.expect("under the limit").unknown();
        }
        let Err(retry) = guard.admit("10.0.0.1", "rd_another") else {
            panic!("the address is over its limit");
        };
        assert!((1..=60).contains(&retry));
        assert!(guard.admit("10.0.0.2", "rd_another").is_ok(), "another address");
        assert!(
            guard.admit("10.0.0.1", "rd_live").is_ok(),
            "a token known to be live"
        );
    }

    #[test]
    fn a_burst_with_a_valid_token_is_never_refused() {
        let guard = UnknownTokens::new();
        // A hundred lookups in flight at once, before the token is known to be live.
        let in_flight: Vec<Admitted> = (0..100)
            .map(|_| guard.admit("a", "rd_new").expect("nothing refused yet"))
            .collect();
        for admitted in in_flight {
            guard.live("rd_new", admitted);
        }
        // Lookups that did not happen (the database away) count for nothing either.
        for _ in 0..100 {
            drop(guard.admit("a", "rd_x").expect("nothing refused"));
        }
        for _ in 0..UNKNOWN_TOKENS_PER_MINUTE {
            guard.admit("a", "rd_x").unwrap().unknown();
        }
        assert!(
            guard.admit("a", "rd_y").is_err(),
            "refused once the unknown ones add up"
        );
    }
}
