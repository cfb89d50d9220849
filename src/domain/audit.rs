//! Audit events: who changed what, before and after, when and from where.

pub mod log;
pub mod timeline;

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use diesel::query_dsl::methods::ExecuteDsl;
use serde_json::Value;

use crate::db::schema::audit_events;
use crate::domain::Actor;
use crate::error::Error;

/// One change to record. Built by the domain function that makes the change and written
/// in the same transaction.
pub struct Change<'a> {
    pub program_id: Option<i64>,
    pub action: &'a str,
    pub subject_type: &'a str,
    pub subject_id: Option<String>,
    pub customer_id: Option<i64>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

pub fn record(conn: &mut PgConnection, actor: &Actor, change: Change<'_>) -> Result<(), Error> {
    ExecuteDsl::execute(insert(actor, change), conn)?;
    Ok(())
}

/// Records many changes by one actor in one statement per thousand (a batch of rewards
/// credited by the hold release).
pub fn record_many(conn: &mut PgConnection, actor: &Actor, changes: Vec<Change<'_>>) -> Result<(), Error> {
    // Eleven parameters a row: a thousand rows stay far below PostgreSQL's 65,535.
    for chunk in changes.chunks(1000) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|change| {
                (
                    audit_events::program_id.eq(change.program_id),
                    audit_events::actor_member_id.eq(actor.member_id),
                    audit_events::actor_token_id.eq(actor.token_id),
                    audit_events::actor_label.eq(&actor.label),
                    audit_events::action.eq(change.action),
                    audit_events::subject_type.eq(change.subject_type),
                    audit_events::subject_id.eq(&change.subject_id),
                    audit_events::customer_id.eq(change.customer_id),
                    audit_events::before.eq(&change.before),
                    audit_events::after.eq(&change.after),
                    audit_events::address.eq(&actor.address),
                )
            })
            .collect();
        diesel::insert_into(audit_events::table)
            .values(rows)
            .execute(conn)?;
    }
    Ok(())
}

fn insert<'a>(
    actor: &'a Actor,
    change: Change<'a>,
) -> impl QueryFragment<Pg> + ExecuteDsl<PgConnection> + 'a {
    diesel::insert_into(audit_events::table).values((
        audit_events::program_id.eq(change.program_id),
        audit_events::actor_member_id.eq(actor.member_id),
        audit_events::actor_token_id.eq(actor.token_id),
        audit_events::actor_label.eq(&actor.label),
        audit_events::action.eq(change.action),
        audit_events::subject_type.eq(change.subject_type),
        audit_events::subject_id.eq(change.subject_id),
        audit_events::customer_id.eq(change.customer_id),
        audit_events::before.eq(change.before),
        audit_events::after.eq(change.after),
        audit_events::address.eq(&actor.address),
    ))
}

/// One event on a customer's activity panel.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct CustomerEvent {
    pub id: i64,
    pub actor_member_id: Option<i64>,
    pub actor_token_id: Option<i64>,
    pub actor_label: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: Option<String>,
    pub customer_id: Option<i64>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub address: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A field an event changed, its values as short text.
pub struct FieldChange {
    pub field: String,
    pub before: String,
    pub after: String,
}

impl CustomerEvent {
    /// The fields this event touched, from its before/after objects.
    pub fn changes(&self) -> Vec<FieldChange> {
        fn text(value: Option<&Value>) -> String {
            match value {
                None | Some(Value::Null) => "—".to_string(),
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
            }
        }
        let empty = serde_json::Map::new();
        let before = self.before.as_ref().and_then(Value::as_object).unwrap_or(&empty);
        let after = self.after.as_ref().and_then(Value::as_object).unwrap_or(&empty);
        let mut fields: Vec<&String> = before.keys().chain(after.keys()).collect();
        fields.sort();
        fields.dedup();
        fields
            .into_iter()
            .map(|field| FieldChange {
                field: field.clone(),
                before: text(before.get(field)),
                after: text(after.get(field)),
            })
            .collect()
    }
}

/// The latest events about one customer of a program, newest first.
pub fn for_customer(
    conn: &mut PgConnection,
    program_id: i64,
    customer_id: i64,
    limit: i64,
) -> Result<Vec<CustomerEvent>, Error> {
    Ok(audit_events::table
        .filter(audit_events::customer_id.eq(customer_id))
        .filter(audit_events::program_id.eq(program_id))
        .order((audit_events::created_at.desc(), audit_events::id.desc()))
        .limit(limit)
        .select(CustomerEvent::as_select())
        .load(conn)?)
}
