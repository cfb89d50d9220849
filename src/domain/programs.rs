//! Programs: one refer-a-friend program each; everything else belongs to exactly one.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::programs;
use crate::error::Error;

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = programs)]
pub struct Program {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub referral_base_url: String,
    pub link_param: String,
    pub require_approval: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Program {
    /// `{referral_base_url}?{link_param}={key}`, keeping any query the base URL has.
    pub fn referral_url(&self, key: &str) -> String {
        let separator = if self.referral_base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{}{}={}",
            self.referral_base_url, separator, self.link_param, key
        )
    }
}

pub const DEFAULT_SLUG: &str = "default";

/// A first start creates program `default`.
pub fn ensure_default_program(conn: &mut PgConnection) -> Result<(), Error> {
    diesel::insert_into(programs::table)
        .values((
            programs::slug.eq(DEFAULT_SLUG),
            programs::name.eq("Default program"),
            programs::referral_base_url.eq("https://example.com/"),
        ))
        .on_conflict(programs::slug)
        .do_nothing()
        .execute(conn)?;
    Ok(())
}

pub fn list(conn: &mut PgConnection) -> Result<Vec<Program>, Error> {
    Ok(programs::table
        .order(programs::id)
        .select(Program::as_select())
        .load(conn)?)
}

pub fn find(conn: &mut PgConnection, id: i64) -> Result<Program, Error> {
    Ok(programs::table
        .find(id)
        .select(Program::as_select())
        .first(conn)?)
}

pub fn find_by_slug(conn: &mut PgConnection, slug: &str) -> Result<Program, Error> {
    Ok(programs::table
        .filter(programs::slug.eq(slug))
        .select(Program::as_select())
        .first(conn)?)
}
