//! [`Together`]: several writes sent to PostgreSQL as one statement.
//!
//! A signup writes four rows one after another; each statement is a round trip (a send, a
//! wake-up and a reply on both sides), and on a busy 2-core machine those round trips cost
//! as much as the writes themselves. Writes that only need values already known can go
//! as data-modifying `WITH` queries in front of the last one:
//!
//! ```sql
//! WITH w0 AS (INSERT INTO audit_events ...), w1 AS (UPDATE customers ...)
//! INSERT INTO referral_links ... RETURNING ...
//! ```
//!
//! PostgreSQL runs every part against the same snapshot, so no part may depend on
//! another's effect (each still sees what earlier statements of the transaction wrote),
//! and the statement fails or succeeds as a whole, with the error of the part that failed.
//! The statement stays prepared: its `QueryId` is not static, so Diesel caches it by its
//! SQL text, as long as every part is cacheable on its own.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::{PgConnection, QueryResult, RunQueryDsl};

/// A write to run in front of another statement: an `INSERT`, `UPDATE` or `DELETE`
/// without `RETURNING`.
pub type Write<'a> = Box<dyn QueryFragment<Pg> + 'a>;

/// `writes`, then `last`, as one statement returning what `last` returns.
pub struct Together<'a, Last> {
    writes: Vec<Write<'a>>,
    last: Last,
}

impl<'a, Last> Together<'a, Last> {
    pub fn new(writes: Vec<Write<'a>>, last: Last) -> Self {
        Together { writes, last }
    }
}

impl<Last> QueryId for Together<'_, Last> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Last: Query> Query for Together<'_, Last> {
    type SqlType = Last::SqlType;
}

impl<Last: QueryFragment<Pg>> QueryFragment<Pg> for Together<'_, Last> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        for (index, write) in self.writes.iter().enumerate() {
            out.push_sql(if index == 0 { "WITH " } else { ", " });
            out.push_sql(&format!("w{index} AS ("));
            write.walk_ast(out.reborrow())?;
            out.push_sql(")");
        }
        if !self.writes.is_empty() {
            out.push_sql(" ");
        }
        self.last.walk_ast(out.reborrow())
    }
}

impl<Last> RunQueryDsl<PgConnection> for Together<'_, Last> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::schema::{audit_events, referral_links};
    use diesel::prelude::*;

    #[test]
    fn writes_go_in_front_of_the_last_statement_with_their_binds_in_order() {
        let first = diesel::delete(audit_events::table.filter(audit_events::id.eq(7_i64)));
        let second = diesel::delete(audit_events::table.filter(audit_events::id.eq(8_i64)));
        let last = diesel::delete(referral_links::table.filter(referral_links::id.eq(9_i64)));
        let together = Together::new(vec![Box::new(first), Box::new(second)], last);
        let sql = diesel::debug_query::<Pg, _>(&together).to_string();
        assert_eq!(
            sql,
            "WITH w0 AS (DELETE FROM \"audit_events\" WHERE (\"audit_events\".\"id\" = $1)), \
             w1 AS (DELETE FROM \"audit_events\" WHERE (\"audit_events\".\"id\" = $2)) \
             DELETE FROM \"referral_links\" WHERE (\"referral_links\".\"id\" = $3) -- binds: [7, 8, 9]"
        );
    }

    #[test]
    fn without_writes_it_is_the_last_statement_alone() {
        let last = diesel::delete(referral_links::table.filter(referral_links::id.eq(9_i64)));
        let together = Together::new(Vec::new(), last);
        let sql = diesel::debug_query::<Pg, _>(&together).to_string();
        assert_eq!(
            sql,
            "DELETE FROM \"referral_links\" WHERE (\"referral_links\".\"id\" = $1) -- binds: [9]"
        );
    }
}
