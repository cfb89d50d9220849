//! The API's other customer lists: exact lookups by identifier, and a customer's
//! referrals.

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use super::MAX_PER_PAGE;
use crate::db::schema::customers;
use crate::domain::customers::{Customer, CustomerStatus};
use crate::error::Error;

/// Exact lookups for the API's `customers:search`: every given criterion must match.
#[derive(Clone, Debug, Default)]
pub struct ExactMatch {
    pub key: Option<String>,
    pub external_id: Option<String>,
    /// Compared case-insensitively, like the unique index.
    pub email: Option<String>,
}

/// Customers matching `criteria` (deleted ones included: a search by identifier should
/// find them, and their `status` says what they are), with the number of matches.
pub fn exact_matches(
    conn: &mut PgConnection,
    program_id: i64,
    criteria: &ExactMatch,
    page: i64,
    per_page: i64,
) -> Result<(Vec<Customer>, i64), Error> {
    // A value no customer can hold (PostgreSQL text refuses NUL) matches nobody.
    let given = [&criteria.key, &criteria.external_id, &criteria.email];
    if given.iter().any(|value| {
        value
            .as_deref()
            .is_some_and(|value| !crate::domain::customers::is_storable(value))
    }) {
        return Ok((Vec::new(), 0));
    }
    let query = || {
        let mut query = customers::table
            .filter(customers::program_id.eq(program_id))
            .into_boxed();
        if let Some(key) = &criteria.key {
            query = query.filter(customers::key.eq(key.clone()));
        }
        if let Some(id) = &criteria.external_id {
            query = query.filter(customers::external_id.eq(id.clone()));
        }
        if let Some(email) = &criteria.email {
            query =
                query.filter(sql::<Bool>("lower(customers.email) = ").bind::<Text, _>(email.to_lowercase()));
        }
        query
    };
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let total: i64 = query().count().get_result(conn)?;
    let rows = query()
        .order(customers::id.asc())
        .limit(per_page)
        .offset((page.max(1) - 1).saturating_mul(per_page))
        .select(Customer::as_select())
        .load(conn)?;
    Ok((rows, total))
}

/// The active customers `referrer_id` referred, newest first.
pub fn referrals(
    conn: &mut PgConnection,
    program_id: i64,
    referrer_id: i64,
    page: i64,
    per_page: i64,
) -> Result<Vec<Customer>, Error> {
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let offset = (page.max(1) - 1).saturating_mul(per_page);
    Ok(customers::table
        .filter(customers::referrer_id.eq(referrer_id))
        .filter(customers::program_id.eq(program_id))
        .filter(customers::status.eq(CustomerStatus::Active))
        .order((customers::created_at.desc(), customers::id.desc()))
        .limit(per_page)
        .offset(offset)
        .select(Customer::as_select())
        .load(conn)?)
}
