//! Domain rules as plain functions over Diesel: validated inputs, queries, transactions.
//! Nothing in here knows about HTTP; the dashboard and the API both call these.

pub mod audit;
pub mod customers;
pub mod dashboard;
pub mod imports;
pub mod invites;
pub mod jobs;
pub mod json;
pub mod ledger;
pub mod maintenance;
pub mod programs;
pub mod rate_limits;
pub mod referral_links;
pub mod rewards;
pub mod sessions;
pub mod team;
pub mod tokens;
pub mod transactions;
pub mod webhooks;

use sha2::{Digest, Sha256};

/// Whether `text` holds a control character: NUL (which PostgreSQL text cannot store),
/// line breaks, escapes and the like — none belong in a one-line field.
pub fn has_control_chars(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// [`has_control_chars`] for text that may run over several lines (notes, messages):
/// line breaks and tabs are allowed.
pub fn has_control_chars_beyond_lines(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// Hex SHA-256: how tokens and session keys are stored (never in clear).
pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Who is doing something, for permissions and the audit log.
#[derive(Clone, Debug)]
pub struct Actor {
    pub member_id: Option<i64>,
    pub token_id: Option<i64>,
    /// Shown in the audit log: the member's email or the token's name.
    pub label: String,
    /// The client address the request came from.
    pub address: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Actor {
            member_id: None,
            token_id: None,
            label: "system".to_string(),
            address: None,
        }
    }
}
