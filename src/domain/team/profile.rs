//! A member's changes to their own profile.

use chrono::Utc;
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::team_members;
use crate::domain::{audit, Actor};
use crate::error::{add_messages, Error, FieldErrors};

use super::{dummy_hash, member_change, new_password_problems, set_password, verify_password, Member};

/// A member's change to their own profile, parsed from the form.
pub struct ProfileChange {
    pub name: String,
    pub password: Option<PasswordChange>,
}

pub struct PasswordChange {
    pub current: String,
    pub new: String,
}

impl ProfileChange {
    /// The new password is optional; when given, the current one and a matching
    /// confirmation are required.
    pub fn parse(name: &str, current: &str, new: &str, confirmation: &str) -> Result<ProfileChange, Error> {
        let mut fields = FieldErrors::new();
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > 200 || crate::domain::has_control_chars(&name) {
            fields
                .entry("name".into())
                .or_default()
                .push("Enter a name (at most 200 characters, without control characters).".into());
        }
        let wants_password = !new.is_empty() || !confirmation.is_empty();
        if wants_password {
            if current.is_empty() {
                fields
                    .entry("current_password".into())
                    .or_default()
                    .push("Enter your current password to set a new one.".into());
            }
            for (field, messages) in new_password_problems("new_password", new, confirmation) {
                add_messages(&mut fields, &field, messages);
            }
        }
        if !fields.is_empty() {
            return Err(Error::invalid_fields(fields));
        }
        Ok(ProfileChange {
            name,
            password: wants_password.then(|| PasswordChange {
                current: current.to_string(),
                new: new.to_string(),
            }),
        })
    }
}

/// [`ProfileChange::parse`], and, when that refuses the form while a current password was
/// typed for a new one, that password checked too: every problem in one round. (A form
/// that parses has its current password checked by [`update_profile`].)
pub fn parse_checked(
    conn: &mut PgConnection,
    member_id: i64,
    name: &str,
    current: &str,
    new: &str,
    confirmation: &str,
) -> Result<ProfileChange, Error> {
    let mut fields = FieldErrors::new();
    let change = Error::collect(
        &mut fields,
        ProfileChange::parse(name, current, new, confirmation),
    )?;
    let wants_password = !new.is_empty() || !confirmation.is_empty();
    if change.is_none() && wants_password && !current.is_empty() {
        let hash: Option<String> = team_members::table
            .find(member_id)
            .select(team_members::password_hash)
            .first(conn)?;
        let right = hash.as_deref().is_some_and(|hash| verify_password(current, hash));
        if !right {
            add_messages(
                &mut fields,
                "current_password",
                [WRONG_CURRENT_PASSWORD.to_string()],
            );
        }
    }
    Error::checked(change, fields)
}

const WRONG_CURRENT_PASSWORD: &str = "Your current password is not correct.";

/// Saves a member's own name and, when asked, password. The current password must be
/// right; a new password ends every other session of the member (`keep_session_id` is the
/// row id of the session making the change, which stays signed in).
pub fn update_profile(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    change: ProfileChange,
    keep_session_id: Option<&str>,
) -> Result<Member, Error> {
    conn.transaction(|conn| {
        let member = team_members::table
            .find(member_id)
            .select(Member::as_select())
            .for_update()
            .first(conn)?;
        if let Some(password) = &change.password {
            let hash = member.password_hash.as_deref().unwrap_or_else(|| dummy_hash());
            if member.password_hash.is_none() || !verify_password(&password.current, hash) {
                return Err(Error::invalid("current_password", WRONG_CURRENT_PASSWORD));
            }
        }
        let member = if change.name != member.name {
            let updated = diesel::update(team_members::table.find(member_id))
                .set((
                    team_members::name.eq(&change.name),
                    team_members::updated_at.eq(Utc::now()),
                ))
                .returning(Member::as_returning())
                .get_result(conn)?;
            audit::record(
                conn,
                actor,
                member_change(
                    "member.update",
                    Some(member_id),
                    Some(json!({"name": member.name})),
                    Some(json!({"name": updated.name})),
                ),
            )?;
            updated
        } else {
            member
        };
        if let Some(password) = &change.password {
            set_password(conn, actor, member_id, &password.new, keep_session_id)?;
        }
        Ok(member)
    })
}
