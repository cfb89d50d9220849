//! A signup's writes as one statement.
//!
//! A new customer brings three more writes: their default referral link, the audit event,
//! and (when referred) one more on the referrer's count. Rather than five round trips
//! inside `BEGIN` … `COMMIT`, they are one data-modifying `WITH`
//! statement, which PostgreSQL runs atomically on its own — all four writes or none, with
//! the error of the part that failed — so a caller needs no transaction for them. The
//! link and the event take the customer's id from the inserted row (`FROM created`). Every
//! part runs against the same snapshot, so none may need another's effect: the referrer's
//! row is only updated, and the triggers on `customers` run at the end of the statement.
//! So the referrer's row is locked before the list tallies the new row's trigger updates;
//! every change of a customer's status or referrer takes them in the same order (its
//! referrers' counts first), or two of them could each wait for the other's lock.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Jsonb, Nullable, Text, Timestamptz, Untyped};
use diesel::{PgConnection, QueryResult, QueryableByName, RunQueryDsl};
use serde_json::Value;

use super::Customer;
use crate::domain::referral_links::ReferralLink;
use crate::domain::Actor;

/// The columns of a new customer that the caller chooses.
pub(super) struct NewRow<'a> {
    pub program_id: i64,
    pub external_id: &'a str,
    pub key: &'a str,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub surname: Option<&'a str>,
    pub metadata: &'a Value,
    pub custom_fields: &'a Value,
    pub approved: bool,
    pub referrer_id: Option<i64>,
}

/// The statement: the customer, their default link (their key as its code), the
/// `customer.create` event with `after`, and one more referral for the referrer.
struct SignUp<'a> {
    row: NewRow<'a>,
    actor: &'a Actor,
    after: &'a Value,
}

impl QueryId for SignUp<'_> {
    type QueryId = ();
    // Cached by its SQL text (two texts: with and without a referrer).
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for SignUp<'_> {
    type SqlType = Untyped;
}

impl RunQueryDsl<PgConnection> for SignUp<'_> {}

impl QueryFragment<Pg> for SignUp<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let row = &self.row;
        out.push_sql(
            "WITH created AS (INSERT INTO customers (program_id, external_id, key, email, name, \
             surname, metadata, custom_fields, approved, referrer_id) VALUES (",
        );
        out.push_bind_param::<BigInt, _>(&row.program_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&row.external_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&row.key)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&row.email)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&row.name)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&row.surname)?;
        out.push_sql(", ");
        out.push_bind_param::<Jsonb, _>(row.metadata)?;
        out.push_sql(", ");
        out.push_bind_param::<Jsonb, _>(row.custom_fields)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&row.approved)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(&row.referrer_id)?;
        out.push_sql(
            ") RETURNING *), \
             link AS (INSERT INTO referral_links (program_id, customer_id, code, is_default) \
             SELECT program_id, id, key, TRUE FROM created RETURNING id, created_at), \
             event AS (INSERT INTO audit_events (program_id, actor_member_id, actor_token_id, \
             actor_label, action, subject_type, subject_id, customer_id, after, address) \
             SELECT program_id, ",
        );
        out.push_bind_param::<Nullable<BigInt>, _>(&self.actor.member_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.actor.token_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.actor.label)?;
        out.push_sql(", 'customer.create', 'customer', id::text, id, ");
        out.push_bind_param::<Jsonb, _>(self.after)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.actor.address)?;
        out.push_sql(" FROM created)");
        if let Some(referrer_id) = &row.referrer_id {
            out.push_sql(
                ", counted AS (UPDATE customers SET referrals_count = referrals_count + 1 WHERE id = ",
            );
            out.push_bind_param::<BigInt, _>(referrer_id)?;
            out.push_sql(")");
        }
        out.push_sql(
            " SELECT created.*, link.id AS link_id, link.created_at AS link_created_at \
             FROM created, link",
        );
        Ok(())
    }
}

#[derive(QueryableByName)]
struct SignedUp {
    #[diesel(embed)]
    customer: Customer,
    #[diesel(sql_type = BigInt)]
    link_id: i64,
    #[diesel(sql_type = Timestamptz)]
    link_created_at: DateTime<Utc>,
}

/// Writes the new customer with everything their signup implies (see the module
/// documentation); `after` is the audit event's record of them. Returns the raw database
/// error, so that the caller can name the field a clash concerns.
pub(super) fn insert(
    conn: &mut PgConnection,
    row: NewRow<'_>,
    actor: &Actor,
    after: &Value,
) -> QueryResult<(Customer, ReferralLink)> {
    let signed_up: SignedUp = SignUp { row, actor, after }.get_result(conn)?;
    let customer = signed_up.customer;
    let link = ReferralLink {
        id: signed_up.link_id,
        program_id: customer.program_id,
        customer_id: customer.id,
        code: customer.key.clone(),
        is_default: true,
        clicks: 0,
        created_at: signed_up.link_created_at,
        deleted_at: None,
    };
    Ok((customer, link))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statement(referrer_id: Option<i64>) -> String {
        let empty = json!({});
        let after = json!({"key": "ada"});
        let actor = Actor::system();
        let sign_up = SignUp {
            row: NewRow {
                program_id: 1,
                external_id: "ada-1",
                key: "ada",
                email: None,
                name: None,
                surname: None,
                metadata: &empty,
                custom_fields: &empty,
                approved: true,
                referrer_id,
            },
            actor: &actor,
            after: &after,
        };
        diesel::debug_query::<Pg, _>(&sign_up).to_string()
    }

    #[test]
    fn the_referrer_is_counted_only_when_there_is_one() {
        let referred = statement(Some(7));
        assert!(
            referred.contains(
                "counted AS (UPDATE customers SET referrals_count = referrals_count + 1 WHERE id = $16)"
            ),
            "{referred}"
        );
        assert!(referred.ends_with("-- binds: [1, \"ada-1\", \"ada\", None, None, None, Object {}, Object {}, true, Some(7), None, None, \"system\", Object {\"key\": String(\"ada\")}, None, 7]"), "{referred}");
        let unreferred = statement(None);
        assert!(!unreferred.contains("UPDATE"), "{unreferred}");
        assert!(
            unreferred.contains(" FROM created) SELECT created.*"),
            "{unreferred}"
        );
    }
}
