//! SQL pieces of the customer list that Diesel's DSL cannot spell, written so that the
//! statements stay *prepared*.
//!
//! `diesel::dsl::sql` marks a whole statement as not cacheable, so PostgreSQL would parse
//! and plan it on every page view — with fifteen indexes on `customers`, planning cost more
//! than running the query. These fragments push fixed SQL text (the ORDER BY and search
//! expressions of this module's callers, never input) and bind every value, so Diesel
//! keeps one prepared statement per distinct SQL text and PostgreSQL can reuse its plan.
//! Their `QueryId` is not static: Diesel then caches them by their SQL text. (See also
//! `db::fixed`.)

pub use crate::db::fixed::fixed;

use diesel::expression::{is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Text};
use diesel::{PgConnection, QueryResult, RunQueryDsl};

/// One way a search term can match a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchArm {
    /// `expression LIKE lower(pattern)`, served by the expression's trigram index.
    Contains(&'static str),
    /// `(expression LIKE lower(part_pattern) AND strpos(expression, lower(term)) > 0)`:
    /// the trigram index looks up a part of the term (cheaper; see
    /// `listing::EmailSamples`), and the rows it finds are checked for the whole term
    /// (literally: `term` is not a pattern). The index cannot serve `strpos`, so
    /// PostgreSQL leaves that check out of the index scan.
    ContainsPart {
        expression: &'static str,
        part_pattern: String,
        term: String,
    },
    /// `(guard AND expression LIKE lower(pattern))`: the term holds a character that only
    /// the rows passing `guard` can hold, and a partial index lists exactly those rows.
    ContainsWhere(&'static str, &'static str),
    /// An email holding `local@domain`: its local part ends with `local` and its domain
    /// starts with `domain` (stored emails have exactly one `@`). `local_reversed` is the
    /// local part reversed, `local_reversed_upper` the same followed by U+10FFFF (the end
    /// of the range of strings starting with it); the patterns are it and the domain
    /// escaped, each followed by `%`.
    EmailAround {
        local_reversed: String,
        local_reversed_upper: String,
        local_reversed_pattern: String,
        domain: String,
    },
}

/// `(arm OR arm …)`: the search, each arm served by an index of its own.
#[derive(Debug, Clone)]
pub struct SearchMatch {
    pub arms: Vec<SearchArm>,
    /// `%term%`, escaped.
    pub pattern: String,
}

impl QueryId for SearchMatch {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Expression for SearchMatch {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for SearchMatch {}

impl<QS> SelectableExpression<QS> for SearchMatch {}

impl<GB> ValidGrouping<GB> for SearchMatch {
    type IsAggregate = is_aggregate::Never;
}

/// `expression LIKE lower(pattern)`, the pattern a bound parameter.
fn push_like<'b>(out: &mut AstPass<'_, 'b, Pg>, expression: &'b str, pattern: &'b String) -> QueryResult<()> {
    out.push_sql(expression);
    out.push_sql(" LIKE lower(");
    out.push_bind_param::<Text, String>(pattern)?;
    out.push_sql(")");
    Ok(())
}

impl QueryFragment<Pg> for SearchMatch {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if self.arms.is_empty() {
            out.push_sql("FALSE");
            return Ok(());
        }
        out.push_sql("(");
        for (index, arm) in self.arms.iter().enumerate() {
            if index > 0 {
                out.push_sql(" OR ");
            }
            match arm {
                SearchArm::Contains(expression) => push_like(&mut out, expression, &self.pattern)?,
                SearchArm::ContainsPart {
                    expression,
                    part_pattern,
                    term,
                } => {
                    out.push_sql("(");
                    push_like(&mut out, expression, part_pattern)?;
                    out.push_sql(" AND strpos(");
                    out.push_sql(expression);
                    out.push_sql(", lower(");
                    out.push_bind_param::<Text, String>(term)?;
                    out.push_sql(")) > 0)");
                }
                SearchArm::ContainsWhere(guard, expression) => {
                    out.push_sql("(");
                    out.push_sql(guard);
                    out.push_sql(" AND ");
                    push_like(&mut out, expression, &self.pattern)?;
                    out.push_sql(")");
                }
                SearchArm::EmailAround {
                    local_reversed,
                    local_reversed_upper,
                    local_reversed_pattern,
                    domain,
                } => {
                    // The reversed local part as a range of the btree (what PostgreSQL
                    // makes of a `LIKE 'prefix%'` only when it plans with the value at
                    // hand): written out, the index can serve a reusable plan of this
                    // prepared statement too (PostgreSQL keeps one when it costs no more
                    // than a plan made per call). The upper end is the prefix followed by
                    // U+10FFFF, the highest code point (a noncharacter no email holds), so
                    // everything starting with the prefix sorts below it. `LIKE` then
                    // checks the match exactly.
                    const REVERSED_LOCAL: &str = "reverse(split_part(lower(customers.email), '@', 1))";
                    out.push_sql("(");
                    out.push_sql(REVERSED_LOCAL);
                    out.push_sql(" ~>=~ lower(");
                    out.push_bind_param::<Text, String>(local_reversed)?;
                    out.push_sql(") AND ");
                    out.push_sql(REVERSED_LOCAL);
                    out.push_sql(" ~<~ lower(");
                    out.push_bind_param::<Text, String>(local_reversed_upper)?;
                    out.push_sql(") AND ");
                    push_like(&mut out, REVERSED_LOCAL, local_reversed_pattern)?;
                    out.push_sql(" AND ");
                    push_like(&mut out, "split_part(lower(customers.email), '@', 2)", domain)?;
                    out.push_sql(")");
                }
            }
        }
        out.push_sql(")");
        Ok(())
    }
}

/// Where a keyset continuation reads the list's order from: the table, its customer id
/// column (which breaks ties) and the sort expression, all fixed SQL text.
#[derive(Debug, Clone, Copy)]
pub struct Keyset {
    pub table: &'static str,
    pub id: &'static str,
    pub expression: &'static str,
}

/// `(expression, id) > (the same of customer $1 of program $2)` (or `<`): the rows after a
/// given customer in the list's order (keyset pagination).
#[derive(Debug, Clone, Copy)]
pub struct Continue {
    pub keyset: Keyset,
    pub greater: bool,
    pub customer_id: i64,
    pub program_id: i64,
}

impl QueryId for Continue {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Expression for Continue {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for Continue {}

impl<QS> SelectableExpression<QS> for Continue {}

impl<GB> ValidGrouping<GB> for Continue {
    type IsAggregate = is_aggregate::Never;
}

impl QueryFragment<Pg> for Continue {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let Keyset {
            table,
            id,
            expression,
        } = self.keyset;
        out.push_sql("(");
        out.push_sql(expression);
        out.push_sql(", ");
        out.push_sql(id);
        out.push_sql(if self.greater {
            ") > (SELECT "
        } else {
            ") < (SELECT "
        });
        out.push_sql(expression);
        out.push_sql(", ");
        out.push_sql(id);
        out.push_sql(" FROM ");
        out.push_sql(table);
        out.push_sql(" WHERE ");
        out.push_sql(id);
        out.push_sql(" = ");
        out.push_bind_param::<BigInt, i64>(&self.customer_id)?;
        out.push_sql(" AND ");
        out.push_sql(table);
        out.push_sql(".program_id = ");
        out.push_bind_param::<BigInt, i64>(&self.program_id)?;
        out.push_sql(")");
        Ok(())
    }
}

/// A query with `LIMIT n` written into its text (and `OFFSET $n` only when there is one).
///
/// With the limit as a parameter PostgreSQL cannot know how few rows are wanted, so a
/// reusable ("generic") plan of the statement looks expensive and it plans every
/// execution anew. The limit takes few values (the page sizes), so a literal costs few
/// prepared statements.
#[derive(Debug, Clone)]
pub struct Limited<Q> {
    pub query: Q,
    pub limit: i64,
    pub offset: i64,
}

impl<Q> QueryId for Limited<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Limited<Q> {
    type SqlType = Q::SqlType;
}

impl<Q> RunQueryDsl<PgConnection> for Limited<Q> {}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Limited<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(&format!(" LIMIT {}", self.limit.max(0)));
        if self.offset > 0 {
            out.push_sql(" OFFSET ");
            out.push_bind_param::<BigInt, i64>(&self.offset)?;
        }
        Ok(())
    }
}

/// `(customers.created_at, customers.id) > ($1, $2)`: the export's next batch.
#[derive(Debug, Clone, Copy)]
pub struct CreatedAfter {
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub id: i64,
}

impl QueryId for CreatedAfter {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Expression for CreatedAfter {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for CreatedAfter {}

impl<QS> SelectableExpression<QS> for CreatedAfter {}

impl<GB> ValidGrouping<GB> for CreatedAfter {
    type IsAggregate = is_aggregate::Never;
}

impl QueryFragment<Pg> for CreatedAfter {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("(customers.created_at, customers.id) > (");
        out.push_bind_param::<diesel::sql_types::Timestamptz, _>(&self.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, i64>(&self.id)?;
        out.push_sql(")");
        Ok(())
    }
}

/// `SELECT id FROM (<query> LIMIT $limit) … WHERE the row's number is a multiple of
/// `every``: the internal id of every `every`-th customer of a walk along the list, in
/// order. `query` selects `(customers.id, customers.created_at)` ordered by
/// `window_order` (the same order, spelled over the walk's columns), which numbers the
/// rows without sorting them again.
#[derive(Debug, Clone)]
pub struct EveryNth<Q> {
    pub query: Q,
    pub window_order: &'static str,
    pub limit: i64,
    pub every: i64,
}

impl<Q> QueryId for EveryNth<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for EveryNth<Q> {
    type SqlType = BigInt;
}

impl<Q> RunQueryDsl<PgConnection> for EveryNth<Q> {}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for EveryNth<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT numbered.id FROM (SELECT walk.id, row_number() OVER (ORDER BY ");
        out.push_sql(self.window_order);
        out.push_sql(") AS n FROM (");
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(" LIMIT ");
        out.push_bind_param::<BigInt, i64>(&self.limit)?;
        out.push_sql(&format!(
            ") AS walk) AS numbered WHERE numbered.n % {} = 0 ORDER BY numbered.n",
            self.every.max(1)
        ));
        Ok(())
    }
}
