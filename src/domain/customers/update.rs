//! Editing a customer's fields; a new key keeps the old one working.

use chrono::Utc;
use diesel::prelude::*;
use serde_json::{json, Map, Value};

use crate::db::schema::{customers, retired_keys};
use crate::domain::programs::Program;
use crate::domain::{referral_links as links, Actor};
use crate::error::{Error, FieldErrors};

use super::{lock, record_change, taken, unique_to_field, Customer, CustomerChanges, CustomerInput, Lock};

pub(super) fn key_of(conn: &mut PgConnection, id: Option<i64>) -> Result<Option<String>, Error> {
    match id {
        None => Ok(None),
        Some(id) => Ok(customers::table
            .find(id)
            .select(customers::key)
            .first(conn)
            .optional()?),
    }
}

/// Applies `changes`. A new key renames the default referral link; the old key is
/// retired, so `/r/{program}/{old key}` keeps crediting this customer and nobody else
/// can take it. Nothing changes (and nothing is recorded) when the values are the same.
pub fn update(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
    changes: CustomerChanges,
) -> Result<Customer, Error> {
    checked_update(conn, program, actor, customer_id, changes, FieldErrors::new())
}

/// [`update`] from raw input, reporting every problem at once: a new key or email that
/// parsed is checked against the other customers even when another field did not parse.
pub fn update_from_input(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
    input: CustomerInput,
) -> Result<Customer, Error> {
    let (changes, refused) = CustomerChanges::parse_partial(input);
    checked_update(conn, program, actor, customer_id, changes, refused)
}

/// [`update`], refused with `refused` (messages of fields that did not parse) together
/// with whatever its own checks find.
fn checked_update(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
    changes: CustomerChanges,
    refused: FieldErrors,
) -> Result<Customer, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program.id, customer_id, Lock::ForUpdate)?;
        let new = Fields::merged(&current, changes);

        let key_changed = new.key != current.key;
        let email_changed =
            new.email.as_deref().map(str::to_lowercase) != current.email.as_deref().map(str::to_lowercase);
        let mut errors = taken(
            conn,
            program.id,
            Some(current.id),
            key_changed.then_some(new.key.as_str()),
            None,
            if email_changed { new.email.as_deref() } else { None },
        )?;
        for (field, messages) in refused {
            errors.entry(field).or_default().extend(messages);
        }
        if !errors.is_empty() {
            return Err(Error::invalid_fields(errors));
        }

        let (before, after) = new.differences(&current);
        if after.is_empty() {
            return Ok(current);
        }
        if key_changed {
            links::set_default_code(conn, &current, &new.key).map_err(unique_to_field)?;
            retire_key(conn, &current, &new.key)?;
        }
        let updated = diesel::update(customers::table.find(current.id))
            .set((
                customers::key.eq(&new.key),
                customers::email.eq(&new.email),
                customers::name.eq(&new.name),
                customers::surname.eq(&new.surname),
                customers::metadata.eq(&new.metadata),
                customers::custom_fields.eq(&new.custom_fields),
                customers::updated_at.eq(Utc::now()),
            ))
            .returning(Customer::as_returning())
            .get_result(conn)
            .map_err(unique_to_field)?;
        record_change(
            conn,
            actor,
            program.id,
            &updated,
            "customer.update",
            Some(Value::Object(before)),
            Some(Value::Object(after)),
        )?;
        Ok(updated)
    })
}

/// A customer's editable fields after a change: each one changed or kept.
struct Fields {
    key: String,
    email: Option<String>,
    name: Option<String>,
    surname: Option<String>,
    metadata: Value,
    custom_fields: Value,
}

impl Fields {
    fn merged(current: &Customer, changes: CustomerChanges) -> Fields {
        let mut metadata = current.metadata.as_object().cloned().unwrap_or_default();
        match changes.date_of_birth {
            Some(Some(date)) => {
                metadata.insert("date_of_birth".into(), json!(date.format("%Y-%m-%d").to_string()));
            }
            Some(None) => {
                metadata.remove("date_of_birth");
            }
            None => {}
        }
        Fields {
            key: changes.key.unwrap_or_else(|| current.key.clone()),
            email: changes.email.unwrap_or_else(|| current.email.clone()),
            name: changes.name.unwrap_or_else(|| current.name.clone()),
            surname: changes.surname.unwrap_or_else(|| current.surname.clone()),
            metadata: Value::Object(metadata),
            custom_fields: changes
                .custom_fields
                .map(Value::Object)
                .unwrap_or_else(|| current.custom_fields.clone()),
        }
    }

    /// The audit event's `before` and `after`: only the fields that change.
    fn differences(&self, current: &Customer) -> (Map<String, Value>, Map<String, Value>) {
        let mut before = Map::new();
        let mut after = Map::new();
        let mut diff = |field: &str, old: Value, new: Value| {
            if old != new {
                before.insert(field.to_string(), old);
                after.insert(field.to_string(), new);
            }
        };
        diff("key", json!(current.key), json!(self.key));
        diff("email", json!(current.email), json!(self.email));
        diff("name", json!(current.name), json!(self.name));
        diff("surname", json!(current.surname), json!(self.surname));
        diff("metadata", current.metadata.clone(), self.metadata.clone());
        diff(
            "custom_fields",
            current.custom_fields.clone(),
            self.custom_fields.clone(),
        );
        (before, after)
    }
}

/// Retires the customer's current key for them alone; taking back one's own old key makes
/// it current again.
fn retire_key(conn: &mut PgConnection, current: &Customer, new_key: &str) -> Result<(), Error> {
    diesel::delete(
        retired_keys::table
            .filter(retired_keys::program_id.eq(current.program_id))
            .filter(retired_keys::key.eq(new_key))
            .filter(retired_keys::customer_id.eq(current.id)),
    )
    .execute(conn)?;
    diesel::insert_into(retired_keys::table)
        .values((
            retired_keys::program_id.eq(current.program_id),
            retired_keys::key.eq(&current.key),
            retired_keys::customer_id.eq(current.id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}
