//! Reading invites for the pages: the program's list with its filters and status counts,
//! a customer's latest invites, and which invited addresses became customers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::{DeliveryStatus, Invite};
use crate::db::schema::{customers, invites, mail_outbox};
use crate::domain::customers::Customer;
use crate::error::Error;

/// An invite sent in a customer's name, with the customer its address became, if any.
#[derive(Clone, Debug)]
pub struct CustomerInvite {
    pub invite: Invite,
    /// As [`InviteRow::joined`]: the new customer's key and name.
    pub joined: Option<(String, String)>,
}

/// A customer's most recent invites, newest first, each with whom it brought in.
pub fn for_customer(
    conn: &mut PgConnection,
    customer: &Customer,
    limit: i64,
) -> Result<Vec<CustomerInvite>, Error> {
    let found: Vec<Invite> = invites::table
        .filter(invites::customer_id.eq(customer.id))
        .order((invites::created_at.desc(), invites::id.desc()))
        .limit(limit.clamp(1, 250))
        .select(Invite::as_select())
        .load(conn)?;
    let mut joined = joined_customers(conn, customer.program_id, &found)?;
    Ok(found
        .into_iter()
        .map(|invite| CustomerInvite {
            joined: joined.remove(&invite.id),
            invite,
        })
        .collect())
}

/// What the invites page filters by.
#[derive(Clone, Debug, Default)]
pub struct InviteFilter {
    /// `None` for all.
    pub status: Option<DeliveryStatus>,
    /// Part of the recipient's email.
    pub email: Option<String>,
}

/// An invite as listed: with the inviting customer's key and the delivery attempts.
#[derive(Clone, Debug, Serialize)]
pub struct InviteRow {
    pub invite: Invite,
    pub customer_key: Option<String>,
    /// The inviting customer's name, for people.
    pub customer_name: Option<String>,
    /// The customer the invited address became (a customer with this email, created at
    /// or after the invite, however they were created): their key and name.
    pub joined: Option<(String, String)>,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

diesel::define_sql_function!(fn lower(value: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// One page of a program's invites, newest first, and how many match in all.
pub fn list(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &InviteFilter,
    page: i64,
    per_page: i64,
) -> Result<(Vec<InviteRow>, i64), Error> {
    let per_page = per_page.clamp(1, 250);
    let page = page.max(1);
    let filtered = || {
        let mut query = invites::table
            .filter(invites::program_id.eq(program_id))
            .into_boxed();
        if let Some(status) = filter.status {
            query = query.filter(invites::status.eq(status));
        }
        if let Some(email) = &filter.email {
            let escaped = email
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            query = query.filter(lower(invites::email).like(format!("%{escaped}%")));
        }
        query
    };
    let total: i64 = filtered().count().get_result(conn)?;
    let found: Vec<Invite> = filtered()
        .order((invites::created_at.desc(), invites::id.desc()))
        .limit(per_page)
        .offset((page - 1).saturating_mul(per_page))
        .select(Invite::as_select())
        .load(conn)?;
    let customer_ids: Vec<i64> = found.iter().filter_map(|invite| invite.customer_id).collect();
    let inviters: Vec<(i64, String, String)> = customers::table
        .filter(customers::id.eq_any(&customer_ids))
        .select(CustomerName::as_select())
        .load::<CustomerName>(conn)?
        .into_iter()
        .map(|customer| (customer.id, customer.display_name(), customer.key))
        .collect();
    let joined = joined_customers(conn, program_id, &found)?;
    let invite_ids: Vec<i64> = found.iter().map(|invite| invite.id).collect();
    let deliveries: Vec<(Option<i64>, i32, DateTime<Utc>, DeliveryStatus)> = mail_outbox::table
        .filter(mail_outbox::invite_id.eq_any(&invite_ids))
        .select((
            mail_outbox::invite_id,
            mail_outbox::attempts,
            mail_outbox::next_attempt_at,
            mail_outbox::status,
        ))
        .load(conn)?;
    let rows = found
        .into_iter()
        .map(|invite| {
            let delivery = deliveries.iter().find(|(id, ..)| *id == Some(invite.id));
            let inviter = inviters.iter().find(|(id, ..)| Some(*id) == invite.customer_id);
            InviteRow {
                customer_key: inviter.map(|(_, _, key)| key.clone()),
                customer_name: inviter.map(|(_, name, _)| name.clone()),
                joined: joined.get(&invite.id).cloned(),
                attempts: delivery.map(|(_, attempts, ..)| *attempts).unwrap_or(0),
                next_attempt_at: delivery
                    .filter(|(.., status)| *status == DeliveryStatus::Queued)
                    .map(|(_, _, at, _)| *at),
                invite,
            }
        })
        .collect();
    Ok((rows, total))
}

/// A customer's name columns.
#[derive(Queryable, Selectable)]
#[diesel(table_name = customers)]
struct CustomerName {
    id: i64,
    key: String,
    email: Option<String>,
    name: Option<String>,
    surname: Option<String>,
    created_at: DateTime<Utc>,
}

impl CustomerName {
    fn display_name(&self) -> String {
        crate::domain::customers::display_name_of(&self.name, &self.surname, &self.email, &self.key)
    }
}

/// For each invite whose address became a customer of the program (created at or after
/// the invite; by the dashboard, the API or a transaction alike): that customer's key and
/// name, by invite id. Read when shown, so no signup path has to remember invites.
pub fn joined_customers(
    conn: &mut PgConnection,
    program_id: i64,
    invites: &[Invite],
) -> Result<std::collections::HashMap<i64, (String, String)>, Error> {
    let emails: Vec<String> = invites.iter().map(|invite| invite.email.to_lowercase()).collect();
    if emails.is_empty() {
        return Ok(Default::default());
    }
    let found: Vec<CustomerName> = customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(lower(customers::email.assume_not_null()).eq_any(&emails))
        .select(CustomerName::as_select())
        .load(conn)?;
    Ok(invites
        .iter()
        .filter_map(|invite| {
            let customer = found.iter().find(|customer| {
                customer
                    .email
                    .as_deref()
                    .is_some_and(|email| email.to_lowercase() == invite.email.to_lowercase())
                    && customer.created_at >= invite.created_at
            })?;
            Some((invite.id, (customer.key.clone(), customer.display_name())))
        })
        .collect())
}

/// Invites per status in a program (for the filter's counts).
pub fn status_counts(
    conn: &mut PgConnection,
    program_id: i64,
) -> Result<BTreeMap<DeliveryStatus, i64>, Error> {
    let counts: Vec<(DeliveryStatus, i64)> = invites::table
        .filter(invites::program_id.eq(program_id))
        .group_by(invites::status)
        .select((invites::status, diesel::dsl::count_star()))
        .load(conn)?;
    Ok(counts.into_iter().collect())
}
