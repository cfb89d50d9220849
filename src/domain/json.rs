//! The pieces every JSON object shares, whether the API answers with it or a webhook
//! carries it: amounts as JSON numbers and timestamps in RFC 3339. Kept in the domain so
//! that an object has one shape wherever it is sent (`api::views` re-exports them).

use bigdecimal::{BigDecimal, ToPrimitive};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

pub fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Amounts are JSON numbers, as the original service sends them. Every stored amount has
/// at most 4 decimals and at most 7 integer digits, which an f64 prints back exactly.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Amount {
    Number(f64),
    Text(String),
}

pub fn amount(value: &BigDecimal) -> Amount {
    match value.to_f64() {
        Some(number) => Amount::Number(number),
        None => Amount::Text(value.to_string()),
    }
}
