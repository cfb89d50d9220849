//! Figures for the dashboard.

use diesel::prelude::*;

use crate::db::schema::customers;
use crate::error::Error;

pub struct Totals {
    pub customers: i64,
    pub referred: i64,
}

pub fn totals(conn: &mut PgConnection, program_id: i64) -> Result<Totals, Error> {
    let active = customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::status.eq("active"));
    Ok(Totals {
        customers: active.count().get_result(conn)?,
        referred: active
            .filter(customers::referrer_id.is_not_null())
            .count()
            .get_result(conn)?,
    })
}
