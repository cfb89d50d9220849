//! A listed customer with who referred them, loaded for a whole page at once.

use std::collections::HashMap;

use diesel::prelude::*;

use crate::db::schema::customers;
use crate::domain::customers::Customer;
use crate::error::Error;

/// A customer in a list, with who referred them (loaded for the whole page at once).
#[derive(Clone, Debug)]
pub struct CustomerRow {
    pub customer: Customer,
    pub referrer: Option<ReferrerSummary>,
}

#[derive(Clone, Debug, Queryable)]
pub struct ReferrerSummary {
    pub id: i64,
    pub key: String,
    pub external_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
}

impl ReferrerSummary {
    /// The summary of a customer already loaded.
    pub fn of(customer: &Customer) -> ReferrerSummary {
        ReferrerSummary {
            id: customer.id,
            key: customer.key.clone(),
            external_id: customer.external_id.clone(),
            email: customer.email.clone(),
            name: customer.name.clone(),
            surname: customer.surname.clone(),
        }
    }

    /// As [`Customer::display_name`].
    pub fn display_name(&self) -> String {
        crate::domain::customers::display_name_of(&self.name, &self.surname, &self.email, &self.key)
    }
}

/// The referrers of `rows`, by internal id, in one query.
pub fn referrer_summaries(
    conn: &mut PgConnection,
    rows: &[Customer],
) -> Result<HashMap<i64, ReferrerSummary>, Error> {
    let mut ids: Vec<i64> = rows.iter().filter_map(|row| row.referrer_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(customers::table
        .filter(customers::id.eq_any(&ids))
        .select((
            customers::id,
            customers::key,
            customers::external_id,
            customers::email,
            customers::name,
            customers::surname,
        ))
        .load::<ReferrerSummary>(conn)?
        .into_iter()
        .map(|summary| (summary.id, summary))
        .collect())
}

/// `rows` with their referrers (loaded for all rows at once).
pub fn with_referrers(conn: &mut PgConnection, rows: Vec<Customer>) -> Result<Vec<CustomerRow>, Error> {
    let referrers = referrer_summaries(conn, &rows)?;
    Ok(rows
        .into_iter()
        .map(|customer| CustomerRow {
            referrer: customer.referrer_id.and_then(|id| referrers.get(&id).cloned()),
            customer,
        })
        .collect())
}
