//! Customers of a program: the people who refer and are referred.
//!
//! Every query here is scoped by `program_id`: nothing leaks across programs.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::customers;
use crate::error::Error;

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize)]
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
    pub status: String,
    pub approved: bool,
    pub referrer_id: Option<i64>,
    pub referrals_count: i32,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Customer {
    pub fn is_deleted(&self) -> bool {
        self.status == "deleted"
    }

    /// "Ada Lovelace", or the email, or the key: whatever names this customer best.
    pub fn display_name(&self) -> String {
        let full = [self.name.as_deref(), self.surname.as_deref()]
            .into_iter()
            .flatten()
            .filter(|part| !part.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !full.is_empty() {
            full
        } else if let Some(email) = &self.email {
            email.clone()
        } else {
            self.key.clone()
        }
    }
}

/// A customer by public key (dashboard URLs use the key).
pub fn find_by_key(conn: &mut PgConnection, program_id: i64, key: &str) -> Result<Customer, Error> {
    Ok(customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::key.eq(key))
        .select(Customer::as_select())
        .first(conn)?)
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
