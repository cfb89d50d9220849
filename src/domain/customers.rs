//! Customers of a program: the people who refer and are referred.
//!
//! Every query here is scoped by `program_id`: nothing leaks across programs.
//!
//! The rules live here, for the dashboard and the API alike: inputs are parsed once
//! (`input`), every change is written together with the `referrals_count` updates and the
//! audit event it implies (in one transaction, or for a signup in one statement), and the
//! database constraints back up every check.

mod erasure;
mod fragments;
mod input;
pub mod listing;
mod signup;

pub use erasure::{erase_personal_data, erased_at, message_erased, ERASED, ERASED_EMAIL_DOMAIN, ERASED_NAME};

pub use input::{check_code, CustomerChanges, CustomerInput, NewCustomer, ReferrerRef};
pub use listing::{
    contains_pattern, export_batch, list, normalize_search, referrals, with_referrers, CustomerFilter,
    CustomerRow, ExportCursor, ExportRow, Position, ReferStatus, ReferrerSummary, SortColumn, SortDirection,
    StatusFilter, Total, MAX_PER_PAGE,
};

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Bool, Integer};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::db::schema::{customers, referral_links, retired_keys};
use crate::db::text_enum;
use crate::domain::programs::Program;
use crate::domain::{audit, referral_links as links, Actor};
use crate::error::{is_unique_violation, Error, FieldErrors};

text_enum! {
    /// `customers.status`, mirrored in `referral_standings` and `customer_tallies`. A
    /// deleted customer has `deleted_at` set and leaves the default list.
    pub enum CustomerStatus {
        Active = "active",
        Deleted = "deleted",
    }
}

#[derive(Clone, Debug, Queryable, QueryableByName, Selectable, Identifiable, Serialize)]
#[diesel(table_name = customers)]
pub struct Customer {
    /// Internal primary key; never shown to integrators.
    pub id: i64,
    pub program_id: i64,
    /// The integrator's identifier, `id` in the API.
    pub external_id: String,
    pub key: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub metadata: serde_json::Value,
    pub custom_fields: serde_json::Value,
    pub status: CustomerStatus,
    pub approved: bool,
    pub referrer_id: Option<i64>,
    pub referrals_count: i32,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Customer {
    pub fn is_deleted(&self) -> bool {
        self.status == CustomerStatus::Deleted
    }

    /// "Ada Lovelace", or the email, or the key: whatever names this customer best.
    pub fn display_name(&self) -> String {
        let full = [self.name.as_deref(), self.surname.as_deref()]
            .into_iter()
            .flatten()
            .filter(|part| !part.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !full.is_empty() {
            full
        } else if let Some(email) = &self.email {
            email.clone()
        } else {
            self.key.clone()
        }
    }

    /// `metadata.date_of_birth` when it holds a date.
    pub fn date_of_birth(&self) -> Option<NaiveDate> {
        self.metadata
            .get("date_of_birth")
            .and_then(Value::as_str)
            .and_then(|value| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
    }

    /// Custom fields as (name, text) pairs, for display and the edit form.
    pub fn custom_field_rows(&self) -> Vec<(String, String)> {
        self.custom_fields
            .as_object()
            .map(|fields| {
                fields
                    .iter()
                    .map(|(name, value)| {
                        let text = match value {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        (name.clone(), text)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A customer by public key (dashboard URLs use the key).
pub fn find_by_key(conn: &mut PgConnection, program_id: i64, key: &str) -> Result<Customer, Error> {
    // No key has another shape; PostgreSQL text would refuse some of them (NUL) anyway.
    if check_code(key).is_err() {
        return Err(Error::NotFound);
    }
    Ok(customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::key.eq(key))
        .select(Customer::as_select())
        .first(conn)?)
}

pub fn find(conn: &mut PgConnection, program_id: i64, id: i64) -> Result<Customer, Error> {
    Ok(customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::id.eq(id))
        .select(Customer::as_select())
        .first(conn)?)
}

/// The API's identifier lookup: the customer's `id`, else `key`, else `email`.
pub fn find_by_ident(conn: &mut PgConnection, program_id: i64, ident: &str) -> Result<Customer, Error> {
    if !is_storable(ident) {
        return Err(Error::NotFound);
    }
    let in_program = || customers::table.filter(customers::program_id.eq(program_id));
    if let Some(found) = in_program()
        .filter(customers::external_id.eq(ident))
        .select(Customer::as_select())
        .first(conn)
        .optional()?
    {
        return Ok(found);
    }
    if let Some(found) = in_program()
        .filter(customers::key.eq(ident))
        .select(Customer::as_select())
        .first(conn)
        .optional()?
    {
        return Ok(found);
    }
    Ok(in_program()
        .filter(lower(customers::email).eq(ident.to_lowercase()))
        .select(Customer::as_select())
        .first(conn)?)
}

diesel::define_sql_function!(fn lower(value: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>);

// ---------------------------------------------------------------------------------------
// Changes. Each runs in one transaction with the counters and the audit event it implies.
// ---------------------------------------------------------------------------------------

/// Lengths of generated keys and ids: short, URL-safe, unguessable (about 51 bits).
const GENERATED_LENGTH: usize = 10;

/// Lower-case letters and digits from the OS-seeded CSPRNG.
fn random_code(length: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..length)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Row locks. Changes that leave the key alone take the weaker lock, which lets
/// concurrent inserts that reference this customer as their referrer go ahead.
enum Lock {
    ForUpdate,
    ForNoKeyUpdate,
}

fn lock(conn: &mut PgConnection, program_id: i64, id: i64, mode: Lock) -> Result<Customer, Error> {
    let query = customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::id.eq(id))
        .select(Customer::as_select());
    Ok(match mode {
        Lock::ForUpdate => query.for_update().first(conn)?,
        Lock::ForNoKeyUpdate => query.for_no_key_update().first(conn)?,
    })
}

/// One atomic `UPDATE … SET referrals_count = referrals_count + delta`: concurrent
/// transactions queue on the row lock, so the count stays exact.
fn add_referrals(conn: &mut PgConnection, referrer_id: i64, delta: i32) -> Result<(), Error> {
    AddReferrals { referrer_id, delta }.execute(conn)?;
    Ok(())
}

/// The statement of [`add_referrals`], written out so that it stays prepared: Diesel sends
/// every `diesel::update` unprepared (an update's text depends on its changeset), so
/// PostgreSQL would parse and plan this one anew on every referred signup — as long as
/// running it. Cached by its SQL text (the `QueryId` is not static).
struct AddReferrals {
    referrer_id: i64,
    delta: i32,
}

impl diesel::query_builder::QueryId for AddReferrals {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for AddReferrals {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Integer};
        out.push_sql("UPDATE customers SET referrals_count = referrals_count + ");
        out.push_bind_param::<Integer, i32>(&self.delta)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<BigInt, i64>(&self.referrer_id)?;
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for AddReferrals {}

fn add_message(errors: &mut FieldErrors, field: &str, message: impl Into<String>) {
    errors.entry(field.to_string()).or_default().push(message.into());
}

/// Folds a validation error into `errors`; any other error is returned.
fn collect<T>(errors: &mut FieldErrors, result: Result<T, Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::Invalid { fields, .. }) => {
            for (field, messages) in fields {
                errors.entry(field).or_default().extend(messages);
            }
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// A unique violation from the database (a race the pre-checks could not see), as a
/// message next to the field it concerns.
fn unique_to_field(error: DieselError) -> Error {
    const FIELDS: &[(&str, &str, &str)] = &[
        (
            "customers_program_id_key_key",
            "key",
            "This key is already taken by another customer.",
        ),
        (
            "customers_program_id_external_id_key",
            "id",
            "A customer with this id already exists.",
        ),
        (
            "customers_email_key",
            "email",
            "A customer with this email already exists.",
        ),
        (
            "referral_links_program_id_code_key",
            "key",
            "This key is already used as a referral link code.",
        ),
        (
            "retired_keys_pkey",
            "key",
            "This key was used by another customer before and cannot be reused.",
        ),
    ];
    for (constraint, field, message) in FIELDS {
        if is_unique_violation(&error, constraint) {
            return Error::invalid(field, *message);
        }
    }
    error.into()
}

/// Messages for the key, id and email another customer of the program already holds (or,
/// for keys, held before, or uses as a link code). `me` is the customer being edited.
fn taken(
    conn: &mut PgConnection,
    program_id: i64,
    me: Option<i64>,
    key: Option<&str>,
    external_id: Option<&str>,
    email: Option<&str>,
) -> Result<FieldErrors, Error> {
    use diesel::dsl::{exists, select};
    // Internal ids start at 1, so 0 stands for "nobody yet" on create.
    let me = me.unwrap_or(0);
    let others = || {
        customers::table
            .filter(customers::program_id.eq(program_id))
            .filter(customers::id.ne(me))
    };
    // Every check in one statement (a signup runs this twice); a value not given is bound
    // as NULL, which matches nothing.
    let (key_held, key_retired, key_linked, id_held, email_held): (bool, bool, bool, bool, bool) = select((
        exists(others().filter(customers::key.nullable().eq(key))),
        exists(
            retired_keys::table
                .filter(retired_keys::program_id.eq(program_id))
                .filter(retired_keys::key.nullable().eq(key))
                .filter(retired_keys::customer_id.ne(me)),
        ),
        exists(
            referral_links::table
                .filter(referral_links::program_id.eq(program_id))
                .filter(referral_links::code.nullable().eq(key))
                .filter(
                    referral_links::customer_id
                        .ne(me)
                        .or(referral_links::is_default.eq(false)),
                ),
        ),
        exists(others().filter(customers::external_id.nullable().eq(external_id))),
        exists(others().filter(lower(customers::email).eq(lower(email)))),
    ))
    .get_result(conn)?;
    let mut errors = FieldErrors::new();
    if key_held {
        add_message(
            &mut errors,
            "key",
            "This key is already taken by another customer.",
        );
    } else if key_retired {
        add_message(
            &mut errors,
            "key",
            "This key belonged to another customer before; their old links still use it, so it cannot be reused.",
        );
    } else if key_linked {
        add_message(
            &mut errors,
            "key",
            "This key is already used as a referral link code.",
        );
    }
    if id_held {
        add_message(&mut errors, "id", "A customer with this id already exists.");
    }
    if email_held {
        add_message(&mut errors, "email", "A customer with this email already exists.");
    }
    Ok(errors)
}

/// A random key as a customer could have chosen it (checked for being free with the other
/// fields, in [`sign_up`]).
fn random_key() -> String {
    loop {
        let candidate = random_code(GENERATED_LENGTH);
        if input::parse_key(&candidate).is_ok() {
            return candidate;
        }
    }
}

/// How often a generated key or id is drawn again when it happens to be taken.
const GENERATION_ATTEMPTS: usize = 8;

/// Text that can match a stored value at all: no control characters (PostgreSQL refuses
/// NUL outright), not absurdly long. Lookups of anything else find nothing.
fn is_storable(value: &str) -> bool {
    value.len() <= 1024 && !super::has_control_chars(value)
}

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

fn key_of(conn: &mut PgConnection, id: Option<i64>) -> Result<Option<String>, Error> {
    match id {
        None => Ok(None),
        Some(id) => Ok(customers::table
            .find(id)
            .select(customers::key)
            .first(conn)
            .optional()?),
    }
}

fn customer_change<'a>(
    program_id: i64,
    customer: &Customer,
    action: &'a str,
    before: Option<Value>,
    after: Option<Value>,
) -> audit::Change<'a> {
    audit::Change {
        program_id: Some(program_id),
        action,
        subject_type: "customer",
        subject_id: Some(customer.id.to_string()),
        customer_id: Some(customer.id),
        before,
        after,
    }
}

/// Creates a customer with its default referral link; generates a blank key and id;
/// counts the referral for the referrer. New customers are approved unless the program
/// requires approval.
pub fn create(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    input: NewCustomer,
) -> Result<Customer, Error> {
    sign_up(conn, program, actor, input).map(|created| created.customer)
}

/// A customer just created, with what was read or written on the way: their referrer and
/// their (only) referral link.
#[derive(Debug)]
pub struct Created {
    pub customer: Customer,
    pub referrer: Option<Customer>,
    pub link: links::ReferralLink,
}

/// [`create`], returning what an answer about the new customer needs. It needs no
/// transaction: the checks only read, and every write is one statement (`signup`), so a
/// clash found by a unique index after the checks (a concurrent signup) still changes
/// nothing and is reported on its field.
pub fn sign_up(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    input: NewCustomer,
) -> Result<Created, Error> {
    // A blank key or id is generated first, so that one statement checks every field;
    // a generated value that happens to be taken is drawn again.
    let mut attempts = 0;
    let (key, external_id, mut errors) = loop {
        attempts += 1;
        let key = input.key.clone().unwrap_or_else(random_key);
        let external_id = input
            .external_id
            .clone()
            .unwrap_or_else(|| random_code(GENERATED_LENGTH));
        let errors = taken(
            conn,
            program.id,
            None,
            Some(&key),
            Some(&external_id),
            input.email.as_deref(),
        )?;
        let generated_taken = (input.key.is_none() && errors.contains_key("key"))
            || (input.external_id.is_none() && errors.contains_key("id"));
        if !generated_taken {
            break (key, external_id, errors);
        }
        if attempts == GENERATION_ATTEMPTS {
            return Err(Error::Internal(anyhow::anyhow!(
                "could not generate a free customer key and id"
            )));
        }
    };
    let referrer = match &input.referrer {
        Some(referrer) => collect(&mut errors, find_referrer(conn, program.id, referrer))?,
        None => None,
    };
    if !errors.is_empty() {
        return Err(Error::invalid_fields(errors));
    }
    let mut metadata = Map::new();
    if let Some(date) = input.date_of_birth {
        metadata.insert("date_of_birth".into(), json!(date.format("%Y-%m-%d").to_string()));
    }
    let metadata = Value::Object(metadata);
    let custom_fields = Value::Object(input.custom_fields);
    let row = signup::NewRow {
        program_id: program.id,
        external_id: &external_id,
        key: &key,
        email: input.email.as_deref(),
        name: input.name.as_deref(),
        surname: input.surname.as_deref(),
        metadata: &metadata,
        custom_fields: &custom_fields,
        approved: !program.require_approval,
        referrer_id: referrer.as_ref().map(|referrer| referrer.id),
    };
    // Everything the event records is chosen here (a new customer is active), so it is
    // written with the customer in one statement.
    let after = json!({
        "id": row.external_id,
        "key": row.key,
        "email": row.email,
        "name": row.name,
        "surname": row.surname,
        "metadata": row.metadata,
        "custom_fields": row.custom_fields,
        "status": CustomerStatus::Active,
        "approved": row.approved,
        "referring_customer": referrer.as_ref().map(|referrer| &referrer.key),
    });
    let (customer, link) = signup::insert(conn, row, actor, &after).map_err(unique_to_field)?;
    Ok(Created {
        customer,
        referrer,
        link,
    })
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
    conn.transaction(|conn| {
        let current = lock(conn, program.id, customer_id, Lock::ForUpdate)?;
        let key = changes.key.unwrap_or_else(|| current.key.clone());
        let email = changes.email.unwrap_or_else(|| current.email.clone());
        let name = changes.name.unwrap_or_else(|| current.name.clone());
        let surname = changes.surname.unwrap_or_else(|| current.surname.clone());
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
        let metadata = Value::Object(metadata);
        let custom_fields = changes
            .custom_fields
            .map(Value::Object)
            .unwrap_or_else(|| current.custom_fields.clone());

        let key_changed = key != current.key;
        let email_changed =
            email.as_deref().map(str::to_lowercase) != current.email.as_deref().map(str::to_lowercase);
        let errors = taken(
            conn,
            program.id,
            Some(current.id),
            key_changed.then_some(key.as_str()),
            None,
            if email_changed { email.as_deref() } else { None },
        )?;
        if !errors.is_empty() {
            return Err(Error::invalid_fields(errors));
        }

        let mut before = Map::new();
        let mut after = Map::new();
        let mut diff = |field: &str, old: Value, new: Value| {
            if old != new {
                before.insert(field.to_string(), old);
                after.insert(field.to_string(), new);
            }
        };
        diff("key", json!(current.key), json!(key));
        diff("email", json!(current.email), json!(email));
        diff("name", json!(current.name), json!(name));
        diff("surname", json!(current.surname), json!(surname));
        diff("metadata", current.metadata.clone(), metadata.clone());
        diff(
            "custom_fields",
            current.custom_fields.clone(),
            custom_fields.clone(),
        );
        if after.is_empty() {
            return Ok(current);
        }

        if key_changed {
            links::set_default_code(conn, &current, &key).map_err(unique_to_field)?;
            // Taking back one's own old key makes it current again.
            diesel::delete(
                retired_keys::table
                    .filter(retired_keys::program_id.eq(program.id))
                    .filter(retired_keys::key.eq(&key))
                    .filter(retired_keys::customer_id.eq(current.id)),
            )
            .execute(conn)?;
            diesel::insert_into(retired_keys::table)
                .values((
                    retired_keys::program_id.eq(program.id),
                    retired_keys::key.eq(&current.key),
                    retired_keys::customer_id.eq(current.id),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
        }
        let updated = diesel::update(customers::table.find(current.id))
            .set((
                customers::key.eq(&key),
                customers::email.eq(&email),
                customers::name.eq(&name),
                customers::surname.eq(&surname),
                customers::metadata.eq(&metadata),
                customers::custom_fields.eq(&custom_fields),
                customers::updated_at.eq(Utc::now()),
            ))
            .returning(Customer::as_returning())
            .get_result(conn)
            .map_err(unique_to_field)?;
        audit::record(
            conn,
            actor,
            customer_change(
                program.id,
                &updated,
                "customer.update",
                Some(Value::Object(before)),
                Some(Value::Object(after)),
            ),
        )?;
        Ok(updated)
    })
}

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
        audit::record(
            conn,
            actor,
            customer_change(
                program.id,
                &updated,
                action,
                Some(json!({"status": current.status})),
                Some(json!({"status": updated.status})),
            ),
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
        let action = if approved {
            "customer.approve"
        } else {
            "customer.unapprove"
        };
        audit::record(
            conn,
            actor,
            customer_change(
                program.id,
                &updated,
                action,
                Some(json!({"approved": current.approved})),
                Some(json!({"approved": approved})),
            ),
        )?;
        Ok(updated)
    })
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
            Some(referrer) => Some(find_referrer(conn, program.id, referrer)?),
            None => None,
        };
        if let Some(new_referrer) = &new_referrer {
            if new_referrer.id == current.id {
                return Err(Error::invalid(
                    "referring_customer",
                    "A customer cannot refer themselves.",
                ));
            }
            if chain_reaches(conn, new_referrer.id, current.id)? {
                return Err(Error::invalid(
                    "referring_customer",
                    format!(
                        "{} was referred (directly or through others) by this customer, so this would make a referral cycle.",
                        new_referrer.display_name()
                    ),
                ));
            }
        }
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
        audit::record(
            conn,
            actor,
            customer_change(
                program.id,
                &updated,
                "customer.change_referrer",
                Some(json!({"referring_customer": old_key})),
                Some(json!({"referring_customer": new_referrer.map(|referrer| referrer.key)})),
            ),
        )?;
        Ok(updated)
    })
}
