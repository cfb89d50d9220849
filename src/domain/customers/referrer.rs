//! Who referred a customer: finding the referrer named in input, and re-attributing.

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer};
use serde_json::json;

use crate::db::schema::customers;
use crate::domain::programs::Program;
use crate::domain::{webhooks, Actor};
use crate::error::Error;

use super::{add_referrals, is_storable, key_of, lock, lower, record_change, Customer, Lock, ReferrerRef};

/// The referrer named in input: it must exist in the program and not be deleted.
pub fn find_referrer(
    conn: &mut PgConnection,
    program_id: i64,
    referrer: &ReferrerRef,
) -> Result<Customer, Error> {
    let named = match referrer {
        ReferrerRef::Id(value) | ReferrerRef::Key(value) | ReferrerRef::KeyOrEmail(value) => value,
    };
    if !is_storable(named) {
        return Err(Error::invalid(
            referrer.field(),
            "No customer with this key, id or email in this program.",
        ));
    }
    let in_program = || {
        customers::table
            .filter(customers::program_id.eq(program_id))
            .select(Customer::as_select())
    };
    let (found, message) = match referrer {
        ReferrerRef::Id(id) => (
            in_program()
                .filter(customers::external_id.eq(id))
                .first(conn)
                .optional()?,
            format!("No customer with the id \"{id}\" in this program."),
        ),
        ReferrerRef::Key(key) => (
            in_program()
                .filter(customers::key.eq(key))
                .first(conn)
                .optional()?,
            format!("No customer with the key \"{key}\" in this program."),
        ),
        ReferrerRef::KeyOrEmail(value) => {
            let by_key = in_program()
                .filter(customers::key.eq(value))
                .first(conn)
                .optional()?;
            let found = match by_key {
                Some(found) => Some(found),
                None => in_program()
                    .filter(lower(customers::email).eq(lower(value)))
                    .first(conn)
                    .optional()?,
            };
            (
                found,
                format!("No customer with the key or email \"{value}\" in this program."),
            )
        }
    };
    // The message goes next to the field the referrer was named in.
    let customer = found.ok_or_else(|| Error::invalid(referrer.field(), message))?;
    if customer.is_deleted() {
        return Err(Error::invalid(
            referrer.field(),
            format!("{} is deleted and cannot refer anyone.", customer.display_name()),
        ));
    }
    Ok(customer)
}

/// True when walking up the referral chain from `from` reaches `target`.
fn chain_reaches(conn: &mut PgConnection, from: i64, target: i64) -> Result<bool, Error> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Bool)]
        found: bool,
    }
    // UNION (not UNION ALL) stops on a repeated row, so even a corrupt chain ends.
    let found: Found = diesel::sql_query(
        "WITH RECURSIVE chain(id, referrer_id) AS ( \
             SELECT id, referrer_id FROM customers WHERE id = $1 \
             UNION \
             SELECT c.id, c.referrer_id FROM customers c JOIN chain ON c.id = chain.referrer_id \
         ) SELECT EXISTS (SELECT 1 FROM chain WHERE id = $2) AS found",
    )
    .bind::<BigInt, _>(from)
    .bind::<BigInt, _>(target)
    .get_result(conn)?;
    Ok(found.found)
}

/// The referrer named in input, if it may refer `customer`: it exists, is not deleted, is
/// not the customer, and no cycle would form.
fn acceptable_referrer(
    conn: &mut PgConnection,
    program_id: i64,
    customer: &Customer,
    referrer: &ReferrerRef,
) -> Result<Customer, Error> {
    let new_referrer = find_referrer(conn, program_id, referrer)?;
    if new_referrer.id == customer.id {
        return Err(Error::invalid(
            "referring_customer",
            "A customer cannot refer themselves.",
        ));
    }
    if chain_reaches(conn, new_referrer.id, customer.id)? {
        return Err(Error::invalid(
            "referring_customer",
            format!(
                "{} was referred (directly or through others) by this customer, so this would make a referral cycle.",
                new_referrer.display_name()
            ),
        ));
    }
    Ok(new_referrer)
}

/// The referrer a re-attribution would give `customer`, checked as [`change_referrer`]
/// checks it but without changing anything: what a confirmation names. Naming the current
/// referrer again is refused, as there is nothing to confirm.
pub fn proposed_referrer(
    conn: &mut PgConnection,
    program_id: i64,
    customer: &Customer,
    referrer: &ReferrerRef,
) -> Result<Customer, Error> {
    let new_referrer = acceptable_referrer(conn, program_id, customer, referrer)?;
    if customer.referrer_id == Some(new_referrer.id) {
        return Err(Error::invalid(
            "referring_customer",
            format!(
                "{} already is this customer's referrer.",
                new_referrer.display_name()
            ),
        ));
    }
    Ok(new_referrer)
}

/// Namespace of the per-program advisory lock that serialises re-attributions.
const REATTRIBUTION_LOCK: i32 = 0x5244_4b52;

/// Re-attributes a customer to another referrer (or to none). Refuses self-referral and
/// any change that would make a cycle. Counts move from the old referrer to the new one
/// (a deleted customer counts for nobody).
pub fn change_referrer(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
    referrer: Option<ReferrerRef>,
) -> Result<Customer, Error> {
    conn.transaction(|conn| {
        // Two concurrent re-attributions could each pass the cycle check and together
        // close a loop; one at a time per program, they cannot.
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind::<Integer, _>(REATTRIBUTION_LOCK)
            .bind::<Integer, _>(program.id as i32)
            .execute(conn)?;
        let current = lock(conn, program.id, customer_id, Lock::ForNoKeyUpdate)?;
        let new_referrer = match &referrer {
            Some(referrer) => Some(acceptable_referrer(conn, program.id, &current, referrer)?),
            None => None,
        };
        let new_id = new_referrer.as_ref().map(|referrer| referrer.id);
        if new_id == current.referrer_id {
            return Ok(current);
        }
        let old_key = key_of(conn, current.referrer_id)?;
        // The referrers' rows before the tallies (see `set_status`).
        if !current.is_deleted() {
            if let Some(old) = current.referrer_id {
                add_referrals(conn, old, -1)?;
            }
            if let Some(new) = new_id {
                add_referrals(conn, new, 1)?;
            }
        }
        let updated = diesel::update(customers::table.find(current.id))
            .set((
                customers::referrer_id.eq(new_id),
                customers::updated_at.eq(Utc::now()),
            ))
            .returning(Customer::as_returning())
            .get_result(conn)?;
        record_change(
            conn,
            actor,
            program.id,
            &updated,
            "customer.change_referrer",
            Some(json!({"referring_customer": old_key})),
            Some(json!({"referring_customer": new_referrer.as_ref().map(|referrer| &referrer.key)})),
        )?;
        if let Some(referrer) = &new_referrer {
            let data = webhooks::customer_data(&updated, Some(&referrer.key));
            webhooks::referral_created(conn, &updated, referrer, data)?;
        }
        Ok(updated)
    })
}
