//! Audit events: who changed what, before and after, when and from where.

use diesel::prelude::*;
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
    diesel::insert_into(audit_events::table)
        .values((
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
        .execute(conn)?;
    Ok(())
}
