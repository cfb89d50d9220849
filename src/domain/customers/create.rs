//! Creating customers: generated keys and ids, the checks, the signup.

use diesel::prelude::*;
use serde_json::{json, Map, Value};

use crate::domain::programs::Program;
use crate::domain::{referral_links as links, rewards, webhooks, Actor};
use crate::error::{Error, FieldErrors};

use super::{
    collect, find_referrer, input, signup, taken, unique_to_field, Customer, CustomerInput, CustomerStatus,
    NewCustomer,
};

/// Lengths of generated keys and ids: short, URL-safe, unguessable (about 51 bits).
pub(crate) const GENERATED_LENGTH: usize = 10;

/// Lower-case letters and digits from the OS-seeded CSPRNG.
pub(crate) fn random_code(length: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..length)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// A random key as a customer could have chosen it (checked for being free with the other
/// fields, in [`sign_up`]).
pub(crate) fn random_key() -> String {
    loop {
        let candidate = random_code(GENERATED_LENGTH);
        if input::parse_key(&candidate).is_ok() {
            return candidate;
        }
    }
}

/// How often a generated key or id is drawn again when it happens to be taken.
const GENERATION_ATTEMPTS: usize = 8;

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

/// [`create`] from raw input, reporting every problem at once: the fields that parsed are
/// checked against the program's customers (a taken email, an unknown referrer) even when
/// another field did not parse.
pub fn create_from_input(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    input: CustomerInput,
) -> Result<Customer, Error> {
    let (new, refused) = NewCustomer::parse_partial(input);
    checked_sign_up(conn, program, actor, new, refused).map(|created| created.customer)
}

/// A customer just created, with what was read or written on the way: their referrer and
/// their (only) referral link.
#[derive(Debug)]
pub struct Created {
    pub customer: Customer,
    pub referrer: Option<Customer>,
    pub link: links::ReferralLink,
}

/// [`create`], returning what an answer about the new customer needs. The checks only
/// read, and the customer is written in one statement (`signup`), so a clash found by a
/// unique index after the checks (a concurrent signup) still changes nothing and is
/// reported on its field; that statement and the webhook events share one transaction.
pub fn sign_up(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    input: NewCustomer,
) -> Result<Created, Error> {
    checked_sign_up(conn, program, actor, input, FieldErrors::new())
}

/// [`sign_up`], refused with `refused` (messages of fields that did not parse) together
/// with whatever its own checks find.
fn checked_sign_up(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    input: NewCustomer,
    refused: FieldErrors,
) -> Result<Created, Error> {
    let (key, external_id, mut errors) = free_key_and_id(conn, program.id, &input)?;
    let referrer = match &input.referrer {
        Some(referrer) => collect(&mut errors, find_referrer(conn, program.id, referrer))?,
        None => None,
    };
    for (field, messages) in refused {
        errors.entry(field).or_default().extend(messages);
    }
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
    let (customer, link) = insert_signup(conn, program.id, actor, row, &after, referrer.as_ref())?;
    Ok(Created {
        customer,
        referrer,
        link,
    })
}

/// Writes the signup's row: with its webhook events and signup rules in one transaction
/// when the program has any, else in its one statement.
fn insert_signup(
    conn: &mut PgConnection,
    program_id: i64,
    actor: &Actor,
    row: signup::NewRow<'_>,
    after: &Value,
    referrer: Option<&Customer>,
) -> Result<(Customer, links::ReferralLink), Error> {
    // A referred signup fires the program's signup rules, and webhook events go out with
    // the customer or not at all (`webhooks::emit`), in the same transaction. A program
    // without signup rules and subscriptions keeps its signup one statement: a subscription
    // made at this moment is, as with `emit`'s own look, one the change came before.
    let rules = match referrer {
        Some(_) => rewards::engine::signup_rules(conn, program_id, row.approved)?,
        None => Vec::new(),
    };
    let listening = webhooks::has_subscriptions(conn, program_id)?;
    if !rules.is_empty() || listening {
        conn.transaction(|conn| {
            let (customer, link) = signup::insert(conn, row, actor, after).map_err(unique_to_field)?;
            if listening {
                webhooks::customer_created(conn, &customer, referrer)?;
            }
            let known = rewards::engine::Known {
                referrer,
                new_event: true,
                listening: Some(listening),
            };
            rewards::engine::on_signup(conn, program_id, &customer, &rules, known)?;
            Ok::<_, Error>((customer, link))
        })
    } else {
        signup::insert(conn, row, actor, after).map_err(unique_to_field)
    }
}

/// The key and id to sign up with, and the messages for the fields already taken. A
/// blank key or id is generated first, so that one statement checks every field; a
/// generated value that happens to be taken is drawn again.
fn free_key_and_id(
    conn: &mut PgConnection,
    program_id: i64,
    input: &NewCustomer,
) -> Result<(String, String, FieldErrors), Error> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let key = input.key.clone().unwrap_or_else(random_key);
        let external_id = input
            .external_id
            .clone()
            .unwrap_or_else(|| random_code(GENERATED_LENGTH));
        let errors = taken(
            conn,
            program_id,
            None,
            Some(&key),
            Some(&external_id),
            input.email.as_deref(),
        )?;
        let generated_taken = (input.key.is_none() && errors.contains_key("key"))
            || (input.external_id.is_none() && errors.contains_key("id"));
        if !generated_taken {
            return Ok((key, external_id, errors));
        }
        if attempts == GENERATION_ATTEMPTS {
            return Err(Error::Internal(anyhow::anyhow!(
                "could not generate a free customer key and id"
            )));
        }
    }
}
