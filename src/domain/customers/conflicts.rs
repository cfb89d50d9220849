//! Field messages for input that clashes with other customers of the program.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::lower;
use crate::db::schema::{customers, referral_links, retired_keys};
use crate::error::{is_unique_violation, Error, FieldErrors};

fn add_message(errors: &mut FieldErrors, field: &str, message: impl Into<String>) {
    errors.entry(field.to_string()).or_default().push(message.into());
}

/// Folds a validation error into `errors`; any other error is returned.
pub(super) fn collect<T>(errors: &mut FieldErrors, result: Result<T, Error>) -> Result<Option<T>, Error> {
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
pub(super) fn unique_to_field(error: DieselError) -> Error {
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
pub(super) fn taken(
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
