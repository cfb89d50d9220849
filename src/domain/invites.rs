//! Invites: emails asking someone to join a program, from the program itself or carrying a
//! customer's referral link.
//!
//! [`create`] renders the email (plain text and HTML, from Askama templates) and writes the
//! invite, its `mail_outbox` row and the audit event in one transaction; the mail worker
//! (`crate::mail`) delivers it later and records `sent` or `failed` on both rows.

use std::collections::BTreeMap;

use askama::Template;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::db::schema::{invites, mail_outbox};
use crate::db::text_enum;
use crate::domain::customers::Customer;
use crate::domain::programs::Program;
use crate::domain::team::{check_deliverable_email, check_email};
use crate::domain::{audit, Actor};
use crate::error::{unique_violation_as_field, Error, FieldErrors};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_PERSONALIZATION_PAIRS: usize = 20;
pub const MAX_PERSONALIZATION_KEY_CHARS: usize = 40;
pub const MAX_PERSONALIZATION_VALUE_CHARS: usize = 500;
/// The personalization key whose value the email shows as the personal message.
pub const MESSAGE_KEY: &str = "message";

text_enum! {
    /// Where an invite's delivery stands (`invites.status`, and its `mail_outbox` row's).
    pub enum DeliveryStatus {
        Queued = "queued",
        Sent = "sent",
        Failed = "failed",
    }
}

mod listing;
pub use listing::{
    for_customer, joined_customers, list, status_counts, CustomerInvite, InviteFilter, InviteRow,
};

const PENDING_CONSTRAINT: &str = "invites_pending_key";
const PENDING_MESSAGE: &str = "An invite to this address is already waiting to be sent.";

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = invites)]
pub struct Invite {
    pub id: i64,
    pub program_id: i64,
    pub customer_id: Option<i64>,
    pub email: String,
    pub name: Option<String>,
    pub personalization: serde_json::Value,
    pub status: DeliveryStatus,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub actor_member_id: Option<i64>,
    pub actor_token_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Invite {
    pub fn is_failed(&self) -> bool {
        self.status == DeliveryStatus::Failed
    }

    /// CSS badge modifier for the status.
    pub fn status_badge(&self) -> &'static str {
        match self.status {
            DeliveryStatus::Sent => "badge-green",
            DeliveryStatus::Failed => "badge-red",
            DeliveryStatus::Queued => "badge-yellow",
        }
    }
}

/// A validated invite. Build it with [`NewInvite::parse`]; [`create`] checks it again.
#[derive(Clone, Debug, Default)]
pub struct NewInvite {
    pub email: String,
    pub name: Option<String>,
    pub personalization: BTreeMap<String, String>,
}

fn push(fields: &mut FieldErrors, field: &str, message: impl Into<String>) {
    let messages = fields.entry(field.to_string()).or_default();
    let message = message.into();
    if !messages.contains(&message) {
        messages.push(message);
    }
}

fn valid_key(key: &str) -> bool {
    (1..=MAX_PERSONALIZATION_KEY_CHARS).contains(&key.len())
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

impl NewInvite {
    /// Parses raw input. `pairs` are the personalization rows as typed; rows with neither
    /// key nor value are skipped (blank form rows). Messages go to `email`, `name` and
    /// `personalization`.
    pub fn parse(email: &str, name: &str, pairs: &[(String, String)]) -> Result<NewInvite, Error> {
        let mut fields = FieldErrors::new();
        let mut personalization = BTreeMap::new();
        let mut count = 0;
        for (key, value) in pairs {
            let key = key.trim();
            if key.is_empty() && value.trim().is_empty() {
                continue;
            }
            count += 1;
            if !valid_key(key) {
                push(
                    &mut fields,
                    "personalization",
                    format!(
                        "Name each value with 1 to {MAX_PERSONALIZATION_KEY_CHARS} letters, digits or underscores (got {key:?})."
                    ),
                );
            } else if personalization
                .insert(key.to_string(), value.trim().to_string())
                .is_some()
            {
                push(&mut fields, "personalization", format!("{key} is given twice."));
            }
        }
        if count > MAX_PERSONALIZATION_PAIRS {
            push(
                &mut fields,
                "personalization",
                format!("Use at most {MAX_PERSONALIZATION_PAIRS} personalization values."),
            );
        }
        let name = name.trim();
        let invite = NewInvite {
            email: email.trim().to_string(),
            name: (!name.is_empty()).then(|| name.to_string()),
            personalization,
        };
        invite.check_into(&mut fields);
        if fields.is_empty() {
            Ok(invite)
        } else {
            Err(Error::invalid_fields(fields))
        }
    }

    fn check_into(&self, fields: &mut FieldErrors) {
        if self.email.is_empty() {
            push(fields, "email", "Enter the email address to invite.");
        } else if check_email(&self.email).is_err() || self.email.parse::<lettre::Address>().is_err() {
            push(fields, "email", "Enter a valid email address.");
        } else if let Err(message) = check_deliverable_email(&self.email) {
            push(fields, "email", message);
        }
        if self
            .name
            .as_ref()
            .is_some_and(|name| name.chars().count() > MAX_NAME_CHARS)
        {
            push(
                fields,
                "name",
                format!("Keep the name to {MAX_NAME_CHARS} characters."),
            );
        }
        if self.name.as_deref().is_some_and(super::has_control_chars) {
            push(fields, "name", "A name cannot hold control characters.");
        }
        if self.personalization.len() > MAX_PERSONALIZATION_PAIRS {
            push(
                fields,
                "personalization",
                format!("Use at most {MAX_PERSONALIZATION_PAIRS} personalization values."),
            );
        }
        for (key, value) in &self.personalization {
            if !valid_key(key) {
                push(
                    fields,
                    "personalization",
                    format!(
                        "Name each value with 1 to {MAX_PERSONALIZATION_KEY_CHARS} letters, digits or underscores (got {key:?})."
                    ),
                );
            }
            if value.chars().count() > MAX_PERSONALIZATION_VALUE_CHARS {
                push(
                    fields,
                    "personalization",
                    format!("Keep {key} to {MAX_PERSONALIZATION_VALUE_CHARS} characters."),
                );
            }
            if super::has_control_chars_beyond_lines(value) {
                push(
                    fields,
                    "personalization",
                    format!("{key} cannot hold control characters (line breaks and tabs are fine)."),
                );
            }
        }
    }

    fn check(&self) -> Result<(), Error> {
        let mut fields = FieldErrors::new();
        self.check_into(&mut fields);
        if fields.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_fields(fields))
        }
    }
}

/// The invite email, plain text.
#[derive(Template)]
#[template(path = "email/invite.txt")]
struct InviteText<'a> {
    email: &'a InviteEmail,
}

/// The invite email, HTML (every value escaped by Askama).
#[derive(Template)]
#[template(path = "email/invite.html")]
struct InviteHtml<'a> {
    email: &'a InviteEmail,
}

/// What the invite email says; both templates render from it.
pub struct InviteEmail {
    pub program_name: String,
    pub recipient_name: Option<String>,
    /// The inviting customer's name, for a customer's invite.
    pub inviter: Option<String>,
    pub referral_link: String,
    /// The `message` personalization value, shown as a personal note.
    pub message: Option<String>,
    /// The other personalization values, in key order.
    pub details: Vec<(String, String)>,
}

/// A rendered email, ready for the outbox.
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl InviteEmail {
    pub fn new(program: &Program, inviter: Option<&Customer>, invite: &NewInvite) -> InviteEmail {
        InviteEmail {
            program_name: program.name.clone(),
            recipient_name: invite.name.clone(),
            inviter: inviter.map(Customer::display_name),
            referral_link: match inviter {
                Some(customer) => program.referral_url(&customer.key),
                None => program.referral_base_url.clone(),
            },
            message: invite
                .personalization
                .get(MESSAGE_KEY)
                .filter(|message| !message.is_empty())
                .cloned(),
            details: invite
                .personalization
                .iter()
                .filter(|(key, _)| key.as_str() != MESSAGE_KEY)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }

    pub fn subject(&self) -> String {
        // Line breaks can never reach a header.
        let subject = match &self.inviter {
            Some(inviter) => format!("{inviter} invites you to join {}", self.program_name),
            None => format!("You are invited to join {}", self.program_name),
        };
        subject.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    pub fn render(&self) -> Result<RenderedEmail, Error> {
        let failed = |error: askama::Error| Error::Internal(anyhow::anyhow!("email template: {error}"));
        Ok(RenderedEmail {
            subject: self.subject(),
            text: InviteText { email: self }.render().map_err(failed)?,
            html: InviteHtml { email: self }.render().map_err(failed)?,
        })
    }
}

/// Creates an invite and queues its email, in one transaction with the audit event.
pub fn create(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    inviting_customer: Option<&Customer>,
    new: NewInvite,
) -> Result<Invite, Error> {
    new.check()?;
    if let Some(customer) = inviting_customer {
        if customer.program_id != program.id {
            return Err(Error::NotFound);
        }
        if customer.is_deleted() {
            return Err(Error::invalid(
                "customer",
                "This customer is deleted; restore them before sending invites in their name.",
            ));
        }
    }
    let email = InviteEmail::new(program, inviting_customer, &new).render()?;
    let personalization = serde_json::to_value(&new.personalization)
        .map_err(|error| Error::Internal(anyhow::anyhow!("personalization: {error}")))?;
    let created = conn.transaction::<_, Error, _>(|conn| {
        let invite: Invite = diesel::insert_into(invites::table)
            .values((
                invites::program_id.eq(program.id),
                invites::customer_id.eq(inviting_customer.map(|customer| customer.id)),
                invites::email.eq(&new.email),
                invites::name.eq(&new.name),
                invites::personalization.eq(&personalization),
                invites::actor_member_id.eq(actor.member_id),
                invites::actor_token_id.eq(actor.token_id),
            ))
            .returning(Invite::as_returning())
            .get_result(conn)
            .map_err(pending_to_field)?;
        diesel::insert_into(mail_outbox::table)
            .values((
                mail_outbox::invite_id.eq(invite.id),
                mail_outbox::recipient.eq(&invite.email),
                mail_outbox::subject.eq(&email.subject),
                mail_outbox::body_text.eq(&email.text),
                mail_outbox::body_html.eq(&email.html),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(program.id),
                action: "invite.create",
                subject_type: "invite",
                subject_id: Some(invite.id.to_string()),
                customer_id: invite.customer_id,
                before: None,
                after: Some(json!({
                    "email": invite.email,
                    "name": invite.name,
                    "personalization": invite.personalization,
                    "status": invite.status,
                })),
            },
        )?;
        Ok(invite)
    })?;
    Ok(created)
}

/// Puts a failed invite back in the queue, to be sent at once.
pub fn retry(
    conn: &mut PgConnection,
    program_id: i64,
    actor: &Actor,
    invite_id: i64,
) -> Result<Invite, Error> {
    conn.transaction::<_, Error, _>(|conn| {
        let invite: Invite = invites::table
            .filter(invites::program_id.eq(program_id))
            .filter(invites::id.eq(invite_id))
            .select(Invite::as_select())
            .for_update()
            .first(conn)?;
        if !invite.is_failed() {
            return Err(Error::BadRequest(format!(
                "Only a failed invite can be retried; this one is {}.",
                invite.status
            )));
        }
        if crate::domain::customers::message_erased(conn, invite.id)? {
            return Err(Error::BadRequest(
                "This invite's message was erased with the personal data it carried; it cannot be sent."
                    .to_string(),
            ));
        }
        let now = Utc::now();
        let updated: Invite = diesel::update(invites::table.find(invite.id))
            .set((
                invites::status.eq(DeliveryStatus::Queued),
                invites::last_error.eq(None::<String>),
                invites::updated_at.eq(now),
            ))
            .returning(Invite::as_returning())
            .get_result(conn)
            .map_err(pending_to_field)?;
        diesel::update(mail_outbox::table.filter(mail_outbox::invite_id.eq(invite.id)))
            .set((
                mail_outbox::status.eq(DeliveryStatus::Queued),
                mail_outbox::attempts.eq(0),
                mail_outbox::next_attempt_at.eq(now),
                mail_outbox::last_error.eq(None::<String>),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(program_id),
                action: "invite.retry",
                subject_type: "invite",
                subject_id: Some(invite.id.to_string()),
                customer_id: invite.customer_id,
                before: Some(json!({ "status": invite.status, "last_error": invite.last_error })),
                after: Some(json!({ "status": updated.status })),
            },
        )?;
        Ok(updated)
    })
}

pub fn find(conn: &mut PgConnection, program_id: i64, invite_id: i64) -> Result<Invite, Error> {
    Ok(invites::table
        .filter(invites::program_id.eq(program_id))
        .filter(invites::id.eq(invite_id))
        .select(Invite::as_select())
        .first(conn)?)
}

/// A second pending invite to the same address (a race the checks could not see), as a
/// message on the email field.
fn pending_to_field(error: diesel::result::Error) -> Error {
    unique_violation_as_field(error, PENDING_CONSTRAINT, "email", PENDING_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_address_without_a_dot_in_its_domain_is_refused() {
        let error = NewInvite::parse("friend@example", "", &[]).unwrap_err();
        let Error::Invalid { fields, .. } = error else {
            panic!("a field error");
        };
        assert!(fields["email"][0].contains("has no dot"), "{:?}", fields);
        assert!(NewInvite::parse("friend@example.com", "", &[]).is_ok());
    }

    #[test]
    fn valid_input_is_accepted_and_blank_rows_skipped() {
        let invite = NewInvite::parse(
            " friend@example.com ",
            " Bob ",
            &pairs(&[("message", "Join us!"), ("", ""), ("code_1", "X")]),
        )
        .unwrap();
        assert_eq!(invite.email, "friend@example.com");
        assert_eq!(invite.name.as_deref(), Some("Bob"));
        assert_eq!(invite.personalization.len(), 2);
    }

    #[test]
    fn the_email_escapes_html_and_keeps_text_plain() {
        let email = InviteEmail {
            program_name: "Shop & Co".into(),
            recipient_name: Some("Bob".into()),
            inviter: Some("Ada <Admin>".into()),
            referral_link: "https://shop.example.com/?ref=abc".into(),
            message: Some("Hi <b>there</b>".into()),
            details: vec![("coupon".into(), "\"SAVE\" & more".into())],
        };
        let rendered = email.render().unwrap();
        assert_eq!(rendered.subject, "Ada <Admin> invites you to join Shop & Co");
        assert!(rendered
            .text
            .starts_with("Hello Bob,\n\nAda <Admin> invites you to join Shop & Co.\n"));
        assert!(rendered.text.contains("\n    Hi <b>there</b>\n"));
        assert!(rendered.text.contains("\nhttps://shop.example.com/?ref=abc\n"));
        assert!(rendered.text.contains("coupon: \"SAVE\" & more"));
        assert!(
            rendered.text.lines().all(|line| line.len() <= 76),
            "short lines stay readable as 7bit"
        );
        assert!(rendered.html.contains("Hi &#60;b&#62;there&#60;/b&#62;"));
        assert!(rendered.html.contains("Ada &#60;Admin&#62;"));
        assert!(rendered.html.contains("&#34;SAVE&#34; &#38; more"));
        assert!(rendered
            .html
            .contains("href=\"https://shop.example.com/?ref=abc\""));
        assert!(!rendered.html.contains("<b>"));
    }

    #[test]
    fn subjects_never_carry_line_breaks() {
        let email = InviteEmail {
            program_name: "Evil\r\nBcc: x@example.com".into(),
            recipient_name: None,
            inviter: None,
            referral_link: "https://example.com/".into(),
            message: None,
            details: vec![],
        };
        assert_eq!(email.subject(), "You are invited to join Evil Bcc: x@example.com");
    }

    #[test]
    fn bad_input_gets_a_message_per_field() {
        let error = NewInvite::parse("", &"n".repeat(201), &pairs(&[("bad key", "x")])).unwrap_err();
        let fields = error.field_errors().unwrap();
        assert!(fields.contains_key("email"));
        assert!(fields.contains_key("name"));
        assert!(fields.contains_key("personalization"));

        let error = NewInvite::parse("a@example.com", "", &pairs(&[("k", &"v".repeat(501))])).unwrap_err();
        assert!(error.field_errors().unwrap().contains_key("personalization"));

        let many: Vec<(String, String)> = (0..21).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert!(NewInvite::parse("a@example.com", "", &many).is_err());

        let twice = pairs(&[("k", "1"), ("k", "2")]);
        assert!(NewInvite::parse("a@example.com", "", &twice).is_err());
        assert!(NewInvite::parse("not-an-email", "", &[]).is_err());
    }
}
