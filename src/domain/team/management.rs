//! Team management by admins: roles, disabling, adding members, resetting passwords.

use chrono::Utc;
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::team_members;
use crate::domain::{audit, Actor};
use crate::error::Error;

use super::{
    check_email, create_member, end_sessions, find, issue_password_link, member_change, normalize_email,
    set_password, Member, NewMember, Role, EMAIL_TAKEN,
};

diesel::define_sql_function!(fn lower(value: diesel::sql_types::Text) -> diesel::sql_types::Text);

pub const LAST_ADMIN_MESSAGE: &str =
    "This is the last enabled admin. Make another member an admin first, so that someone can still manage the team.";

/// Locks every enabled admin (in id order, so concurrent changes queue up instead of
/// deadlocking), then the member to change. Two admins demoting each other at the same
/// moment therefore cannot both succeed: the second sees the first's change.
fn lock_for_admin_change(conn: &mut PgConnection, member_id: i64) -> Result<(Member, usize), Error> {
    let enabled_admins: Vec<i64> = team_members::table
        .filter(team_members::role.eq(Role::Admin))
        .filter(team_members::disabled.eq(false))
        .order(team_members::id)
        .select(team_members::id)
        .for_update()
        .load(conn)?;
    let member = team_members::table
        .find(member_id)
        .select(Member::as_select())
        .for_update()
        .first(conn)?;
    Ok((member, enabled_admins.len()))
}

fn is_enabled_admin(member: &Member) -> bool {
    !member.disabled && member.role == Role::Admin
}

/// Changes a member's role. The last enabled admin cannot be demoted.
pub fn change_role(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    role: Role,
) -> Result<Member, Error> {
    conn.transaction(|conn| {
        let (member, enabled_admins) = lock_for_admin_change(conn, member_id)?;
        if member.role == role {
            return Ok(member);
        }
        if is_enabled_admin(&member) && enabled_admins <= 1 {
            return Err(Error::invalid("role", LAST_ADMIN_MESSAGE));
        }
        let updated = diesel::update(team_members::table.find(member_id))
            .set((
                team_members::role.eq(role),
                team_members::updated_at.eq(Utc::now()),
            ))
            .returning(Member::as_returning())
            .get_result(conn)?;
        audit::record(
            conn,
            actor,
            member_change(
                "member.role_change",
                Some(member_id),
                Some(json!({"role": member.role})),
                Some(json!({"role": updated.role})),
            ),
        )?;
        Ok(updated)
    })
}

/// Disables or enables a member. Disabling ends all their sessions in the same
/// transaction, so their next request is signed out. Nobody disables themselves, and the
/// last enabled admin cannot be disabled.
pub fn set_disabled(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    disabled: bool,
) -> Result<Member, Error> {
    if disabled && actor.member_id == Some(member_id) {
        return Err(Error::invalid("disabled", "You cannot disable your own account."));
    }
    conn.transaction(|conn| {
        let (member, enabled_admins) = lock_for_admin_change(conn, member_id)?;
        if member.disabled == disabled {
            return Ok(member);
        }
        if disabled && is_enabled_admin(&member) && enabled_admins <= 1 {
            return Err(Error::invalid("disabled", LAST_ADMIN_MESSAGE));
        }
        let updated = diesel::update(team_members::table.find(member_id))
            .set((
                team_members::disabled.eq(disabled),
                team_members::updated_at.eq(Utc::now()),
            ))
            .returning(Member::as_returning())
            .get_result(conn)?;
        if disabled {
            end_sessions(conn, member_id, None)?;
        }
        audit::record(
            conn,
            actor,
            member_change(
                if disabled {
                    "member.disable"
                } else {
                    "member.enable"
                },
                Some(member_id),
                Some(json!({"disabled": member.disabled})),
                Some(json!({"disabled": updated.disabled})),
            ),
        )?;
        Ok(updated)
    })
}

/// Adds a member. Without an initial password, a set-password link is created in the same
/// transaction and returned (in clear, once) for the admin to pass on.
pub fn add_member(
    conn: &mut PgConnection,
    actor: &Actor,
    new: NewMember,
) -> Result<(Member, Option<String>), Error> {
    let wants_link = new.password.is_none();
    conn.transaction(|conn| {
        let member = create_member(conn, actor, new)?;
        let link = if wants_link {
            Some(issue_password_link(conn, actor, member.id)?)
        } else {
            None
        };
        Ok((member, link))
    })
}

/// A refusal of a new member's input, with the message for an email another member
/// already has (which only the database can tell): one round reports both.
pub fn with_email_clash(conn: &mut PgConnection, email: &str, refusal: Error) -> Result<Error, Error> {
    let Error::Invalid { mut fields, .. } = refusal else {
        return Ok(refusal);
    };
    let email = normalize_email(email);
    if !fields.contains_key("email") && check_email(&email).is_ok() {
        use diesel::dsl::{exists, select};
        let taken: bool = select(exists(
            team_members::table.filter(lower(team_members::email).eq(email.to_lowercase())),
        ))
        .get_result(conn)?;
        if taken {
            fields.insert("email".into(), vec![EMAIL_TAKEN.into()]);
        }
    }
    Ok(Error::invalid_fields(fields))
}

/// An admin sets a member's password; all of that member's sessions end.
pub fn reset_password(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    password: &str,
) -> Result<Member, Error> {
    let member = find(conn, member_id)?;
    set_password(conn, actor, member.id, password, None)?;
    Ok(member)
}
