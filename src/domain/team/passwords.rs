//! Passwords: strength rules, hashing and verifying, setting a new one.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::Utc;
use diesel::prelude::*;

use crate::db::schema::team_members;
use crate::domain::{audit, Actor};
use crate::error::{add_messages, Error, FieldErrors};

use super::{end_sessions, member_change};

pub const MIN_PASSWORD_LENGTH: usize = 10;
pub const MAX_PASSWORD_LENGTH: usize = 128;

pub fn check_password_strength(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_LENGTH {
        return Err(format!("Use at least {MIN_PASSWORD_LENGTH} characters."));
    }
    if length > MAX_PASSWORD_LENGTH {
        return Err(format!("Use at most {MAX_PASSWORD_LENGTH} characters."));
    }
    Ok(())
}

/// Every problem with a new password typed twice: its strength on `field`, and a
/// confirmation that differs on `password_confirmation`, both at once.
pub fn new_password_problems(field: &str, password: &str, confirmation: &str) -> FieldErrors {
    let mut fields = FieldErrors::new();
    if password.is_empty() {
        add_messages(&mut fields, field, ["Choose a password.".to_string()]);
    } else if let Err(message) = check_password_strength(password) {
        add_messages(&mut fields, field, [message]);
    }
    if password != confirmation {
        add_messages(
            &mut fields,
            "password_confirmation",
            ["The two passwords differ.".to_string()],
        );
    }
    fields
}

pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| Error::Internal(anyhow::anyhow!("could not hash a password: {error}")))
}

pub(super) fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Verifying against this when the email is unknown keeps the answer time the same, so
/// timing does not reveal which emails have accounts.
pub(super) fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a real password, only for timing").unwrap_or_default())
}

/// Sets a new password and ends the member's other sessions.
pub fn set_password(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    password: &str,
    keep_session_id: Option<&str>,
) -> Result<(), Error> {
    check_password_strength(password).map_err(|message| Error::invalid("password", message))?;
    let hash = hash_password(password)?;
    conn.transaction(|conn| {
        diesel::update(team_members::table.find(member_id))
            .set((
                team_members::password_hash.eq(hash),
                team_members::updated_at.eq(Utc::now()),
            ))
            .execute(conn)?;
        end_sessions(conn, member_id, keep_session_id)?;
        audit::record(
            conn,
            actor,
            member_change("member.password_change", Some(member_id), None, None),
        )
    })
}
