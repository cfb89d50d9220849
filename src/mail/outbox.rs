//! The outbox table: claiming due messages, and recording what became of them.
//!
//! One message per transaction: the row is locked (`FOR UPDATE SKIP LOCKED`, so several
//! workers or servers never take the same row), sent, and marked `sent` (or its failure
//! recorded) before the transaction commits. A message is therefore sent again only if
//! the process dies, or the database connection drops, between the transport accepting it
//! and the commit: that window is the one at-least-once case. Each message carries a
//! stable `Message-ID`, so a receiving server can recognise such a repeat.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;

use crate::db::schema::{invites, mail_outbox};
use crate::domain::invites::DeliveryStatus;
use crate::error::Error;
use crate::mail::transport::{SendError, Transport};

/// Longest stored error text; SMTP servers can be chatty.
const MAX_ERROR_CHARS: usize = 1000;
/// The longest wait between two attempts.
const MAX_BACKOFF_SECS: u64 = 3600;

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = mail_outbox)]
pub struct OutboxMessage {
    pub id: i64,
    pub invite_id: Option<i64>,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_secs: u64,
}

impl RetryPolicy {
    /// The wait after the `attempt`-th failed attempt: base · 2^(attempt-1), at most 1 h.
    pub fn backoff_secs(&self, attempt: u32) -> u64 {
        let factor = 1u64 << attempt.saturating_sub(1).min(20);
        self.base_secs.saturating_mul(factor).min(MAX_BACKOFF_SECS)
    }
}

/// What happened to the message handled by one [`deliver_next`] call.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Will be tried again later.
    Deferred,
    Failed,
}

/// Builds the RFC 5322 message for an outbox row.
pub fn build_message(row: &OutboxMessage, from: &Mailbox) -> Result<Message, SendError> {
    let to: Mailbox = row
        .recipient
        .parse()
        .map_err(|error| SendError::permanent(format!("invalid recipient address: {error}")))?;
    let domain = from.email.domain().to_string();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(row.subject.clone())
        .message_id(Some(format!(
            "<referdesk.outbox.{}.{}@{}>",
            row.id,
            row.created_at.timestamp(),
            domain
        )))
        .multipart(MultiPart::alternative_plain_html(
            row.body_text.clone(),
            row.body_html.clone(),
        ))
        .map_err(|error| SendError::permanent(format!("could not build the message: {error}")))
}

/// Sends the next due message, if any. `Ok(None)`: nothing is due.
pub fn deliver_next(
    conn: &mut PgConnection,
    transport: &Transport,
    from: &Mailbox,
    policy: RetryPolicy,
) -> Result<Option<(i64, Outcome)>, Error> {
    conn.transaction::<_, Error, _>(|conn| {
        let due: Option<OutboxMessage> = mail_outbox::table
            .filter(mail_outbox::status.eq(DeliveryStatus::Queued))
            .filter(mail_outbox::next_attempt_at.le(Utc::now()))
            .order((mail_outbox::next_attempt_at, mail_outbox::id))
            .select(OutboxMessage::as_select())
            .for_update()
            .skip_locked()
            .first(conn)
            .optional()?;
        let Some(row) = due else {
            return Ok(None);
        };
        let sent = build_message(&row, from).and_then(|message| transport.send(row.id, &message));
        let outcome = match sent {
            Ok(()) => {
                mark_sent(conn, &row)?;
                tracing::info!(outbox_id = row.id, invite_id = ?row.invite_id, "mail sent");
                Outcome::Sent
            }
            Err(error) => {
                let outcome = record_failure(conn, &row, &error, policy)?;
                tracing::warn!(outbox_id = row.id, invite_id = ?row.invite_id, ?outcome, error = %error.message, "mail not delivered");
                outcome
            }
        };
        Ok(Some((row.id, outcome)))
    })
}

/// When the next queued message falls due (it may be due already, and locked by another
/// process sending it).
pub fn next_due(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(mail_outbox::table
        .filter(mail_outbox::status.eq(DeliveryStatus::Queued))
        .select(diesel::dsl::min(mail_outbox::next_attempt_at))
        .first(conn)?)
}

fn mark_sent(conn: &mut PgConnection, row: &OutboxMessage) -> Result<(), Error> {
    let now = Utc::now();
    diesel::update(mail_outbox::table.find(row.id))
        .set((
            mail_outbox::status.eq(DeliveryStatus::Sent),
            mail_outbox::attempts.eq(row.attempts + 1),
            mail_outbox::sent_at.eq(now),
            mail_outbox::last_error.eq(None::<String>),
        ))
        .execute(conn)?;
    if let Some(invite_id) = row.invite_id {
        diesel::update(invites::table.find(invite_id))
            .set((
                invites::status.eq(DeliveryStatus::Sent),
                invites::sent_at.eq(now),
                invites::last_error.eq(None::<String>),
                invites::updated_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(())
}

fn record_failure(
    conn: &mut PgConnection,
    row: &OutboxMessage,
    error: &SendError,
    policy: RetryPolicy,
) -> Result<Outcome, Error> {
    let attempts = row.attempts + 1;
    let message: String = error.message.chars().take(MAX_ERROR_CHARS).collect();
    let give_up = error.permanent || attempts as u32 >= policy.max_attempts;
    let now = Utc::now();
    if give_up {
        diesel::update(mail_outbox::table.find(row.id))
            .set((
                mail_outbox::status.eq(DeliveryStatus::Failed),
                mail_outbox::attempts.eq(attempts),
                mail_outbox::last_error.eq(&message),
            ))
            .execute(conn)?;
        if let Some(invite_id) = row.invite_id {
            diesel::update(invites::table.find(invite_id))
                .set((
                    invites::status.eq(DeliveryStatus::Failed),
                    invites::last_error.eq(&message),
                    invites::updated_at.eq(now),
                ))
                .execute(conn)?;
        }
        Ok(Outcome::Failed)
    } else {
        let wait = chrono::Duration::seconds(policy.backoff_secs(attempts as u32) as i64);
        diesel::update(mail_outbox::table.find(row.id))
            .set((
                mail_outbox::attempts.eq(attempts),
                mail_outbox::last_error.eq(&message),
                mail_outbox::next_attempt_at.eq(now + wait),
            ))
            .execute(conn)?;
        if let Some(invite_id) = row.invite_id {
            // Still queued, but the list shows why it has not arrived yet.
            diesel::update(invites::table.find(invite_id))
                .set((invites::last_error.eq(&message), invites::updated_at.eq(now)))
                .execute(conn)?;
        }
        Ok(Outcome::Deferred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_secs: 30,
        };
        assert_eq!(policy.backoff_secs(1), 30);
        assert_eq!(policy.backoff_secs(2), 60);
        assert_eq!(policy.backoff_secs(4), 240);
        assert_eq!(policy.backoff_secs(10), 3600);
        assert_eq!(policy.backoff_secs(100), 3600);
    }

    #[test]
    fn the_default_sender_is_a_valid_mailbox() {
        let default = crate::config::DEFAULT_MAIL_FROM;
        let from: Mailbox = default.parse().expect("the default REFERDESK_MAIL_FROM parses");
        assert_eq!(from.email.to_string(), "referdesk@localhost");
    }

    #[test]
    fn messages_have_both_parts_and_a_stable_id() {
        let row = OutboxMessage {
            id: 7,
            invite_id: Some(3),
            recipient: "friend@example.com".into(),
            subject: "You are invited".into(),
            body_text: "Join: https://example.com/?ref=abc".into(),
            body_html: "<p>Join</p>".into(),
            attempts: 0,
            created_at: Utc::now(),
        };
        let from: Mailbox = "Referdesk <desk@example.org>".parse().unwrap();
        let text = String::from_utf8(build_message(&row, &from).unwrap().formatted()).unwrap();
        assert!(text.contains("To: friend@example.com"));
        assert!(text.contains("Subject: You are invited"));
        assert!(text.contains("Message-ID: <referdesk.outbox.7."));
        assert!(text.contains("text/plain") && text.contains("text/html"));
        let bad = OutboxMessage {
            recipient: "not an address".into(),
            ..row
        };
        assert!(build_message(&bad, &from).unwrap_err().permanent);
    }
}
