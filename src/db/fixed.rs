//! [`Fixed`]: SQL text from the code as an expression, without giving up prepared
//! statements.
//!
//! `diesel::dsl::sql` marks a whole statement as not cacheable, so PostgreSQL would parse
//! and plan it on every execution. A `Fixed` expression pushes its text (always a literal
//! of this code base, never input) and leaves the statement cacheable; its `QueryId` is
//! not static, so Diesel caches such statements by their SQL text.

use std::marker::PhantomData;

use diesel::expression::{is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::QueryResult;

/// An expression that is fixed SQL text, e.g. an `ORDER BY` list.
#[derive(Debug, Clone, Copy)]
pub struct Fixed<ST> {
    sql: &'static str,
    _type: PhantomData<ST>,
}

pub fn fixed<ST>(sql: &'static str) -> Fixed<ST> {
    Fixed {
        sql,
        _type: PhantomData,
    }
}

impl<ST> QueryId for Fixed<ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST: diesel::sql_types::SqlType + diesel::expression::TypedExpressionType> Expression for Fixed<ST> {
    type SqlType = ST;
}

impl<ST, QS> AppearsOnTable<QS> for Fixed<ST> where Fixed<ST>: Expression {}

impl<ST, QS> SelectableExpression<QS> for Fixed<ST> where Fixed<ST>: AppearsOnTable<QS> {}

impl<ST, GB> ValidGrouping<GB> for Fixed<ST> {
    type IsAggregate = is_aggregate::Never;
}

impl<ST> QueryFragment<Pg> for Fixed<ST> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(self.sql);
        Ok(())
    }
}
