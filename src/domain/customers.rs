//! Customers of a program: the people who refer and are referred.
//!
//! Every query here is scoped by `program_id`: nothing leaks across programs.
//!
//! The rules live here, for the dashboard and the API alike: inputs are parsed once
//! (`input`), every change is written together with the `referrals_count` updates and the
//! audit event it implies (in one transaction, or for a signup in one statement), and the
//! database constraints back up every check.

pub mod bulk;
mod erasure;
mod fragments;
mod input;
pub mod listing;
mod signup;

pub use erasure::{erase_personal_data, erased_at, message_erased, ERASED, ERASED_EMAIL_DOMAIN, ERASED_NAME};

pub use input::{
    check_code, parse_custom_fields, CustomerChanges, CustomerInput, NewCustomer, ReferrerRef,
    MAX_CUSTOM_FIELDS,
};
pub use listing::{
    referrals, with_referrers, CustomerFilter, CustomerRow, ExportRow, ReferStatus, ReferrerSummary,
    SortColumn, SortDirection, StatusFilter, Total, MAX_PER_PAGE,
};

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::db::schema::customers;
use crate::db::text_enum;
use crate::domain::{audit, webhooks, Actor};
use crate::error::Error;

mod conflicts;
mod create;
mod referrer;
mod status;
mod update;

use conflicts::{collect, taken, unique_to_field};
pub use create::{create, create_from_input, sign_up, Created};
pub(crate) use create::{random_code, random_key, GENERATED_LENGTH};
pub use referrer::{change_referrer, find_referrer, proposed_referrer};
pub use status::{delete, restore, set_approved};
use update::key_of;
pub use update::{update, update_from_input};

text_enum! {
    /// `customers.status`, mirrored in `referral_standings` and `customer_tallies`. A
    /// deleted customer has `deleted_at` set and leaves the default list.
    pub enum CustomerStatus {
        Active = "active",
        Deleted = "deleted",
    }
}

#[derive(Clone, Debug, Queryable, QueryableByName, Selectable, Identifiable, Serialize)]
#[diesel(table_name = customers)]
pub struct Customer {
    /// Internal primary key; never shown to integrators.
    pub id: i64,
    pub program_id: i64,
    /// The integrator's identifier, `id` in the API.
    pub external_id: String,
    pub key: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub metadata: serde_json::Value,
    pub custom_fields: serde_json::Value,
    pub status: CustomerStatus,
    pub approved: bool,
    pub referrer_id: Option<i64>,
    pub referrals_count: i32,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Customer {
    pub fn is_deleted(&self) -> bool {
        self.status == CustomerStatus::Deleted
    }

    /// "Ada Lovelace", or the email, or the key: whatever names this customer best.
    pub fn display_name(&self) -> String {
        display_name_of(&self.name, &self.surname, &self.email, &self.key)
    }

    /// `metadata.date_of_birth` when it holds a date.
    pub fn date_of_birth(&self) -> Option<NaiveDate> {
        self.metadata
            .get("date_of_birth")
            .and_then(Value::as_str)
            .and_then(|value| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
    }

    /// Custom fields as (name, text) pairs, for display and the edit form.
    pub fn custom_field_rows(&self) -> Vec<(String, String)> {
        self.custom_fields
            .as_object()
            .map(|fields| {
                fields
                    .iter()
                    .map(|(name, value)| {
                        let text = match value {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        (name.clone(), text)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A customer by public key (dashboard URLs use the key).
pub fn find_by_key(conn: &mut PgConnection, program_id: i64, key: &str) -> Result<Customer, Error> {
    // No key has another shape; PostgreSQL text would refuse some of them (NUL) anyway.
    if check_code(key).is_err() {
        return Err(Error::NotFound);
    }
    Ok(customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::key.eq(key))
        .select(Customer::as_select())
        .first(conn)?)
}

/// Which of `program_ids` hold a customer with this key (a customer's address opened
/// while another program is selected), in id order.
pub fn programs_holding_key(
    conn: &mut PgConnection,
    program_ids: &[i64],
    key: &str,
) -> Result<Vec<i64>, Error> {
    if check_code(key).is_err() {
        return Ok(Vec::new());
    }
    Ok(customers::table
        .filter(customers::program_id.eq_any(program_ids))
        .filter(customers::key.eq(key))
        .select(customers::program_id)
        .order(customers::program_id.asc())
        .load(conn)?)
}

pub fn find(conn: &mut PgConnection, program_id: i64, id: i64) -> Result<Customer, Error> {
    Ok(customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::id.eq(id))
        .select(Customer::as_select())
        .first(conn)?)
}

/// The API's identifier lookup: the customer's `id`, else `key`, else `email`.
pub fn find_by_ident(conn: &mut PgConnection, program_id: i64, ident: &str) -> Result<Customer, Error> {
    if !is_storable(ident) {
        return Err(Error::NotFound);
    }
    let in_program = || customers::table.filter(customers::program_id.eq(program_id));
    if let Some(found) = in_program()
        .filter(customers::external_id.eq(ident))
        .select(Customer::as_select())
        .first(conn)
        .optional()?
    {
        return Ok(found);
    }
    if let Some(found) = in_program()
        .filter(customers::key.eq(ident))
        .select(Customer::as_select())
        .first(conn)
        .optional()?
    {
        return Ok(found);
    }
    Ok(in_program()
        .filter(lower(customers::email).eq(ident.to_lowercase()))
        .select(Customer::as_select())
        .first(conn)?)
}

diesel::define_sql_function!(fn lower(value: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>);

/// Row locks. Changes that leave the key alone take the weaker lock, which lets
/// concurrent inserts that reference this customer as their referrer go ahead.
enum Lock {
    ForUpdate,
    ForNoKeyUpdate,
}

fn lock(conn: &mut PgConnection, program_id: i64, id: i64, mode: Lock) -> Result<Customer, Error> {
    let query = customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::id.eq(id))
        .select(Customer::as_select());
    Ok(match mode {
        Lock::ForUpdate => query.for_update().first(conn)?,
        Lock::ForNoKeyUpdate => query.for_no_key_update().first(conn)?,
    })
}

/// Locks a customer's row against concurrent reward checks of their sales (the engine's
/// "first sale" count). The weaker lock: signups referencing them go ahead.
pub fn lock_for_rewards(conn: &mut PgConnection, id: i64) -> Result<(), Error> {
    customers::table
        .find(id)
        .select(customers::id)
        .for_no_key_update()
        .first::<i64>(conn)?;
    Ok(())
}

/// One atomic `UPDATE … SET referrals_count = referrals_count + delta`: concurrent
/// transactions queue on the row lock, so the count stays exact.
fn add_referrals(conn: &mut PgConnection, referrer_id: i64, delta: i32) -> Result<(), Error> {
    AddReferrals { referrer_id, delta }.execute(conn)?;
    Ok(())
}

/// The statement of [`add_referrals`], written out so that it stays prepared: Diesel sends
/// every `diesel::update` unprepared (an update's text depends on its changeset), so
/// PostgreSQL would parse and plan this one anew on every referred signup — as long as
/// running it. Cached by its SQL text (the `QueryId` is not static).
struct AddReferrals {
    referrer_id: i64,
    delta: i32,
}

impl diesel::query_builder::QueryId for AddReferrals {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for AddReferrals {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Integer};
        out.push_sql("UPDATE customers SET referrals_count = referrals_count + ");
        out.push_bind_param::<Integer, i32>(&self.delta)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<BigInt, i64>(&self.referrer_id)?;
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for AddReferrals {}

/// Text that can match a stored value at all: no control characters (PostgreSQL refuses
/// NUL outright), not absurdly long. Lookups of anything else find nothing.
fn is_storable(value: &str) -> bool {
    value.len() <= 1024 && !super::has_control_chars(value)
}

/// Writes the audit event of a change to `customer`.
fn record_change(
    conn: &mut PgConnection,
    actor: &Actor,
    program_id: i64,
    customer: &Customer,
    action: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), Error> {
    // Every change to a customer is recorded here, so its webhook event is emitted here.
    let event = if action == "customer.delete" {
        webhooks::Event::CustomerDeleted
    } else {
        webhooks::Event::CustomerUpdated
    };
    let data = webhooks::customer_data_read(conn, customer)?;
    webhooks::emit(conn, program_id, event, Some(customer.id), &data)?;
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(program_id),
            action,
            subject_type: "customer",
            subject_id: Some(customer.id.to_string()),
            customer_id: Some(customer.id),
            before,
            after,
        },
    )
}

/// A customer's name for people: "Ada Lovelace", or the email, or the key (for a
/// [`Customer`] and a [`ReferrerSummary`] alike, and for names read column by column).
pub fn display_name_of(
    name: &Option<String>,
    surname: &Option<String>,
    email: &Option<String>,
    key: &str,
) -> String {
    let full = [name.as_deref(), surname.as_deref()]
        .into_iter()
        .flatten()
        .filter(|part| !part.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !full.is_empty() {
        full
    } else {
        email.clone().unwrap_or_else(|| key.to_string())
    }
}
