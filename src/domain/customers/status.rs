//! Deleting, restoring, approving and unapproving a customer.

use chrono::Utc;
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::customers;
use crate::domain::programs::Program;
use crate::domain::rewards::{self, engine::Event};
use crate::domain::Actor;
use crate::error::Error;

use super::{add_referrals, lock, record_change, Customer, CustomerStatus, Lock};

/// Soft delete: the customer leaves default lists and no longer counts as a referral of
/// their referrer. Deleting a deleted customer changes nothing.
pub fn delete(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
) -> Result<Customer, Error> {
    set_status(conn, program, actor, customer_id, true)
}

/// Brings a deleted customer back; they count as their referrer's referral again.
pub fn restore(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
) -> Result<Customer, Error> {
    set_status(conn, program, actor, customer_id, false)
}

fn set_status(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
    deleted: bool,
) -> Result<Customer, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program.id, customer_id, Lock::ForNoKeyUpdate)?;
        if current.is_deleted() == deleted {
            return Ok(current);
        }
        let now = Utc::now();
        let (status, deleted_at, action, delta) = if deleted {
            (CustomerStatus::Deleted, Some(now), "customer.delete", -1)
        } else {
            (CustomerStatus::Active, None, "customer.restore", 1)
        };
        // The referrer's row before the tallies (which the status change below moves):
        // the order a signup takes them in (see `signup`), so the two never deadlock.
        if let Some(referrer_id) = current.referrer_id {
            add_referrals(conn, referrer_id, delta)?;
        }
        let updated = diesel::update(customers::table.find(current.id))
            .set((
                customers::status.eq(status),
                customers::deleted_at.eq(deleted_at),
                customers::updated_at.eq(now),
            ))
            .returning(Customer::as_returning())
            .get_result(conn)?;
        if deleted {
            rewards::voiding::void_unpaid_of_friend(conn, updated.id, now)?;
        }
        record_change(
            conn,
            actor,
            program.id,
            &updated,
            action,
            Some(json!({"status": current.status})),
            Some(json!({"status": updated.status})),
        )?;
        Ok(updated)
    })
}

/// Approves or unapproves; the same value again changes nothing.
pub fn set_approved(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
    approved: bool,
) -> Result<Customer, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program.id, customer_id, Lock::ForNoKeyUpdate)?;
        if current.approved == approved {
            return Ok(current);
        }
        let updated = diesel::update(customers::table.find(current.id))
            .set((
                customers::approved.eq(approved),
                customers::updated_at.eq(Utc::now()),
            ))
            .returning(Customer::as_returning())
            .get_result(conn)?;
        if approved {
            rewards::engine::fire(
                conn,
                program.id,
                &updated,
                Event::CustomerApproved,
                Utc::now(),
                rewards::engine::Known::default(),
            )?;
        }
        let action = if approved {
            "customer.approve"
        } else {
            "customer.unapprove"
        };
        record_change(
            conn,
            actor,
            program.id,
            &updated,
            action,
            Some(json!({"approved": current.approved})),
            Some(json!({"approved": approved})),
        )?;
        Ok(updated)
    })
}
