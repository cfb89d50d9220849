//! [`prepared`]: a statement written in SQL, as with `diesel::sql_query`, that Diesel
//! prepares once per connection.
//!
//! `sql_query` marks its statement as not cacheable, so PostgreSQL parses and plans it on
//! every execution. For the statements that run on every API call or every webhook
//! delivery that costs more than running them. A [`Prepared`] statement's text is always a
//! literal of this code base, never input; its `QueryId` is not static, so Diesel caches
//! it by its SQL text, and PostgreSQL reuses its plan.
//!
//! The text names its values `$1`, `$2`, … in the order they are bound, as with
//! `sql_query`; a value may be named more than once. `$` must not appear anywhere else in
//! the text (no dollar quoting, no `$` inside literals).

use std::marker::PhantomData;

use diesel::pg::{Pg, PgConnection};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// A statement of SQL text and its bound values; see the module documentation.
pub struct Prepared<'a> {
    sql: &'static str,
    values: Vec<Box<dyn Value + 'a>>,
}

/// Starts a [`Prepared`] statement.
pub fn prepared<'a>(sql: &'static str) -> Prepared<'a> {
    Prepared {
        sql,
        values: Vec::new(),
    }
}

impl<'a> Prepared<'a> {
    /// Binds the next value (`$1` first) as SQL type `ST`.
    pub fn bind<ST, T>(mut self, value: T) -> Self
    where
        Pg: HasSqlType<ST>,
        T: ToSql<ST, Pg> + 'a,
        ST: 'a,
    {
        self.values.push(Box::new(Bound {
            value,
            sql_type: PhantomData::<ST>,
        }));
        self
    }
}

/// One bound value, whatever its type.
trait Value {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

struct Bound<ST, T> {
    value: T,
    sql_type: PhantomData<ST>,
}

impl<ST, T> Value for Bound<ST, T>
where
    Pg: HasSqlType<ST>,
    T: ToSql<ST, Pg>,
{
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, T>(&self.value)
    }
}

impl QueryFragment<Pg> for Prepared<'_> {
    /// The text with each `$n` replaced by the n-th value (Diesel numbers the placeholders
    /// it writes, so the text it sends is the same on every execution).
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut rest = self.sql;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let after = &rest[at + 1..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let value = after[..digits]
                .parse::<usize>()
                .ok()
                .and_then(|number| number.checked_sub(1))
                .and_then(|index| self.values.get(index))
                .ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        format!("`${}` names no bound value in: {}", &after[..digits], self.sql).into(),
                    )
                })?;
            value.push(&mut out)?;
            rest = &after[digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl QueryId for Prepared<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

impl RunQueryDsl<PgConnection> for Prepared<'_> {}

#[cfg(test)]
mod tests {
    use diesel::debug_query;
    use diesel::sql_types::{BigInt, Text};

    use super::*;

    #[test]
    fn values_are_bound_where_the_text_names_them_also_twice() {
        let statement = prepared("SELECT $2 WHERE id = $1 OR parent = $1")
            .bind::<BigInt, _>(7_i64)
            .bind::<Text, _>("x");
        let shown = debug_query::<Pg, _>(&statement).to_string();
        assert!(
            shown.starts_with("SELECT $1 WHERE id = $2 OR parent = $3"),
            "{shown}"
        );
        assert!(shown.contains(r#"["x", 7, 7]"#), "{shown}");
    }

    #[test]
    fn a_placeholder_without_a_value_is_an_error_not_a_panic() {
        let statement = prepared("SELECT $3").bind::<BigInt, _>(1_i64);
        let mut builder = diesel::pg::PgQueryBuilder::default();
        assert!(statement.to_sql(&mut builder, &Pg).is_err());
    }
}
