//! Erasing a customer's personal data on request (the "right to erasure").
//!
//! What is personal: the name, surname and email, the metadata (date of birth) and the
//! custom fields. They are replaced in the customer row and wherever Referdesk copied
//! them: the before/after values of the customer's audit events, invites addressed to the
//! customer's email, and the rendered invite messages that carry their name. What stays:
//! the row itself, its key and id (the integrator's identifiers, used in links), the
//! ledger, the referral structure and counts, and the fact that an erasure happened (the
//! `customer.erase` audit event, which names the erased fields but holds no value).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use serde_json::{json, Map, Value};

use super::{lock, record_change, Customer, Lock};
use crate::db::schema::{audit_events, customers, invites, mail_outbox};
use crate::domain::invites::DeliveryStatus;
use crate::domain::programs::Program;
use crate::domain::Actor;
use crate::error::Error;

/// The name an erased customer is shown under.
pub const ERASED_NAME: &str = "Erased customer";
/// What an erased value becomes in the audit log and in invite messages.
pub const ERASED: &str = "[erased]";
/// Invites to an erased address get `erased-{invite id}@` this domain: `.invalid` is
/// reserved (RFC 2606), so the placeholder never reaches anyone and never collides.
pub const ERASED_EMAIL_DOMAIN: &str = "erased.invalid";

/// The customer fields that hold personal data, by their audit-log names.
const PERSONAL_FIELDS: &[&str] = &["email", "name", "surname", "metadata", "custom_fields"];
/// The invite fields that hold the recipient's personal data.
const INVITE_FIELDS: &[&str] = &["email", "name", "personalization"];

const NOT_SENT_RECIPIENT: &str = "Not sent: the recipient's personal data was erased.";
const NOT_SENT_INVITER: &str = "Not sent: the inviting customer's personal data was erased.";

impl Customer {
    /// True while any erasable personal value is stored.
    pub fn has_personal_data(&self) -> bool {
        let filled = |value: &Value| value.as_object().is_some_and(|object| !object.is_empty());
        self.email.is_some()
            || self.surname.is_some()
            || self.name.as_deref().is_some_and(|name| name != ERASED_NAME)
            || filled(&self.metadata)
            || filled(&self.custom_fields)
    }

    /// True once the personal data was erased: what an erasure leaves (the placeholder
    /// name and nothing personal). The erasure's time is in its audit event
    /// ([`erased_at`]).
    pub fn is_erased(&self) -> bool {
        self.name.as_deref() == Some(ERASED_NAME) && !self.has_personal_data()
    }

    /// True when `typed` names this customer as an erasure's confirmation asks: their
    /// email (in any case) or their key, surrounding spaces aside.
    pub fn erasure_confirmed_by(&self, typed: &str) -> bool {
        let typed = typed.trim();
        !typed.is_empty()
            && (typed == self.key
                || self
                    .email
                    .as_deref()
                    .is_some_and(|email| email.to_lowercase() == typed.to_lowercase()))
    }
}

/// Replaces the named fields of a JSON object with [`ERASED`]; true when anything changed.
fn scrub(value: &mut Option<Value>, fields: &[&str]) -> bool {
    let Some(Value::Object(object)) = value else {
        return false;
    };
    let mut changed = false;
    for field in fields {
        if let Some(stored) = object.get_mut(*field) {
            let erased = json!(ERASED);
            if !stored.is_null() && *stored != erased {
                *stored = erased;
                changed = true;
            }
        }
    }
    changed
}

/// Scrubs the personal fields of the given audit events' before/after values.
fn scrub_events<F>(conn: &mut PgConnection, select: F, fields: &[&str]) -> Result<usize, Error>
where
    F: FnOnce(&mut PgConnection) -> QueryResult<Vec<(i64, Option<Value>, Option<Value>)>>,
{
    let events = select(conn)?;
    let mut scrubbed = 0;
    for (id, mut before, mut after) in events {
        let changed_before = scrub(&mut before, fields);
        let changed_after = scrub(&mut after, fields);
        if changed_before || changed_after {
            diesel::update(audit_events::table.find(id))
                .set((audit_events::before.eq(before), audit_events::after.eq(after)))
                .execute(conn)?;
            scrubbed += 1;
        }
    }
    Ok(scrubbed)
}

/// Erases the customer's personal data, in one transaction with everything it implies and
/// an audit event (`customer.erase`) that names the erased fields, never their values.
/// Erasing a customer with nothing left to erase changes nothing.
pub fn erase_personal_data(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
) -> Result<Customer, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program.id, customer_id, Lock::ForNoKeyUpdate)?;
        let erased = personal_fields_held(&current);
        let addressed = invites_addressed_to(conn, program.id, current.email.as_deref())?;
        if erased.is_empty() {
            // Nothing personal is stored (or it was erased before): nothing to do.
            return Ok(current);
        }

        let now = Utc::now();
        let updated = diesel::update(customers::table.find(current.id))
            .set((
                customers::email.eq(None::<String>),
                customers::name.eq(Some(ERASED_NAME)),
                customers::surname.eq(None::<String>),
                customers::metadata.eq(Value::Object(Map::new())),
                customers::custom_fields.eq(Value::Object(Map::new())),
                customers::updated_at.eq(now),
            ))
            .returning(Customer::as_returning())
            .get_result(conn)?;

        // The customer's history keeps who did what, not the values.
        let events = scrub_events(
            conn,
            |conn| {
                audit_events::table
                    .filter(audit_events::customer_id.eq(current.id))
                    .filter(audit_events::subject_type.eq("customer"))
                    .select((audit_events::id, audit_events::before, audit_events::after))
                    .load(conn)
            },
            PERSONAL_FIELDS,
        )?;

        erase_invites_to(conn, program.id, &addressed, now)?;

        // Invites the customer sent: the friend's address is the friend's, but the
        // messages carry the customer's name.
        let sent_by: Vec<i64> = invites::table
            .filter(invites::customer_id.eq(current.id))
            .select(invites::id)
            .load(conn)?;
        cancel_and_erase_messages(conn, &sent_by, NOT_SENT_INVITER, now)?;

        record_change(
            conn,
            actor,
            program.id,
            &updated,
            "customer.erase",
            None,
            Some(json!({
                "erased": erased,
                "audit_events_scrubbed": events,
                "invites_to_customer": addressed.len(),
                "invites_by_customer": sent_by.len(),
            })),
        )?;
        Ok(updated)
    })
}

/// The personal fields the customer still holds (a name already erased does not count).
fn personal_fields_held(current: &Customer) -> Vec<&'static str> {
    let mut held = Vec::new();
    if current.email.is_some() {
        held.push("email");
    }
    if current.name.as_deref().is_some_and(|name| name != ERASED_NAME) {
        held.push("name");
    }
    if current.surname.is_some() {
        held.push("surname");
    }
    if current
        .metadata
        .as_object()
        .is_some_and(|object| !object.is_empty())
    {
        held.push("metadata");
    }
    if current
        .custom_fields
        .as_object()
        .is_some_and(|object| !object.is_empty())
    {
        held.push("custom_fields");
    }
    held
}

/// The program's invites sent to this address (compared without case).
fn invites_addressed_to(
    conn: &mut PgConnection,
    program_id: i64,
    email: Option<&str>,
) -> Result<Vec<i64>, Error> {
    let Some(email) = email else {
        return Ok(Vec::new());
    };
    Ok(invites::table
        .filter(invites::program_id.eq(program_id))
        .filter(
            diesel::dsl::sql::<Bool>("lower(email) = lower(")
                .bind::<Text, _>(email.to_string())
                .sql(")"),
        )
        .select(invites::id)
        .load(conn)?)
}

/// Invites addressed to the customer: the address, name and personalization go; a queued
/// one is not sent any more.
fn erase_invites_to(
    conn: &mut PgConnection,
    program_id: i64,
    addressed: &[i64],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for invite_id in addressed {
        let placeholder = format!("erased-{invite_id}@{ERASED_EMAIL_DOMAIN}");
        diesel::update(invites::table.find(invite_id))
            .set((
                invites::email.eq(&placeholder),
                invites::name.eq(None::<String>),
                invites::personalization.eq(Value::Object(Map::new())),
                invites::updated_at.eq(now),
            ))
            .execute(conn)?;
        diesel::update(mail_outbox::table.filter(mail_outbox::invite_id.eq(invite_id)))
            .set(mail_outbox::recipient.eq(&placeholder))
            .execute(conn)?;
    }
    let addressed_ids: Vec<String> = addressed.iter().map(i64::to_string).collect();
    scrub_events(
        conn,
        |conn| {
            audit_events::table
                .filter(audit_events::subject_type.eq("invite"))
                .filter(audit_events::subject_id.eq_any(&addressed_ids))
                .filter(audit_events::program_id.eq(program_id))
                .select((audit_events::id, audit_events::before, audit_events::after))
                .load(conn)
        },
        INVITE_FIELDS,
    )?;
    cancel_and_erase_messages(conn, addressed, NOT_SENT_RECIPIENT, now)
}

/// The messages of these invites lose their text; those not sent yet never will be.
fn cancel_and_erase_messages(
    conn: &mut PgConnection,
    invite_ids: &[i64],
    reason: &str,
    now: chrono::DateTime<Utc>,
) -> Result<(), Error> {
    if invite_ids.is_empty() {
        return Ok(());
    }
    diesel::update(mail_outbox::table.filter(mail_outbox::invite_id.eq_any(invite_ids)))
        .set((
            mail_outbox::subject.eq(ERASED),
            mail_outbox::body_text.eq(ERASED),
            mail_outbox::body_html.eq(ERASED),
        ))
        .execute(conn)?;
    diesel::update(
        mail_outbox::table
            .filter(mail_outbox::invite_id.eq_any(invite_ids))
            .filter(mail_outbox::status.eq(DeliveryStatus::Queued)),
    )
    .set((
        mail_outbox::status.eq(DeliveryStatus::Failed),
        mail_outbox::last_error.eq(reason),
    ))
    .execute(conn)?;
    diesel::update(
        invites::table
            .filter(invites::id.eq_any(invite_ids))
            .filter(invites::status.eq(DeliveryStatus::Queued)),
    )
    .set((
        invites::status.eq(DeliveryStatus::Failed),
        invites::last_error.eq(reason),
        invites::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(())
}

/// `audit_events.action = 'customer.erase'` with the action written into the SQL, not
/// bound: only then can the planner use the partial index of erasure events
/// (`audit_events_erasures_idx`) in the prepared statement's generic plan. A fragment of its
/// own (`diesel::dsl::sql` would do) because its static query id keeps the statement in
/// Diesel's cache of prepared statements.
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
struct IsErasure;

impl diesel::expression::Expression for IsErasure {
    type SqlType = diesel::sql_types::Bool;
}

impl<QS> diesel::expression::AppearsOnTable<QS> for IsErasure {}

impl<QS> diesel::expression::SelectableExpression<QS> for IsErasure {}

impl<GB> diesel::expression::ValidGrouping<GB> for IsErasure {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for IsErasure {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        out.push_sql("audit_events.action = 'customer.erase'");
        Ok(())
    }
}

/// When the customer's personal data was last erased, from the audit log.
pub fn erased_at(conn: &mut PgConnection, customer_id: i64) -> Result<Option<chrono::DateTime<Utc>>, Error> {
    Ok(audit_events::table
        .filter(audit_events::customer_id.eq(customer_id))
        .filter(IsErasure)
        .select(diesel::dsl::max(audit_events::created_at))
        .first(conn)?)
}

/// True when an invite's message was erased: it can never be sent again.
pub fn message_erased(conn: &mut PgConnection, invite_id: i64) -> Result<bool, Error> {
    use diesel::dsl::{exists, select};
    Ok(select(exists(
        mail_outbox::table
            .filter(mail_outbox::invite_id.eq(invite_id))
            .filter(mail_outbox::body_text.eq(ERASED)),
    ))
    .get_result(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_replaces_only_personal_values() {
        let mut value = Some(json!({
            "key": "ada", "email": "ada@example.com", "name": "Ada", "surname": null,
            "metadata": {"date_of_birth": "1990-01-01"}, "status": "active"
        }));
        assert!(scrub(&mut value, PERSONAL_FIELDS));
        assert_eq!(
            value,
            Some(json!({
                "key": "ada", "email": ERASED, "name": ERASED, "surname": null,
                "metadata": ERASED, "status": "active"
            }))
        );
        assert!(
            !scrub(&mut value, PERSONAL_FIELDS),
            "a second pass changes nothing"
        );
        let mut none = None;
        assert!(!scrub(&mut none, PERSONAL_FIELDS));
    }
}
