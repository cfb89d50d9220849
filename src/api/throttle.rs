//! Per-token request throttling: a fixed one-minute window per token, kept in memory.
//!
//! In-process on purpose: Referdesk runs as one server process, and a restart forgetting
//! the counts only ever lets a client through sooner, never locks it out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}
