//! One-time links: the first-run setup link and set-password links.

use chrono::{Duration, Utc};
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::one_time_tokens;
use crate::domain::{audit, sha256_hex, Actor};
use crate::error::Error;
use crate::random::random_token;

use super::{
    any_members, create_member, find, member_change, set_password, LinkPurpose, Member, NewMember, Role,
};

pub enum OneTimePurpose {
    Setup,
    SetPassword(i64),
}

/// Creates a one-time link token (returned in clear once; only its hash is stored).
pub fn create_one_time_token(
    conn: &mut PgConnection,
    purpose: OneTimePurpose,
    valid_for: Duration,
) -> Result<String, Error> {
    let token = random_token(40);
    let (purpose, member_id) = match purpose {
        OneTimePurpose::Setup => (LinkPurpose::Setup, None),
        OneTimePurpose::SetPassword(member_id) => (LinkPurpose::SetPassword, Some(member_id)),
    };
    diesel::insert_into(one_time_tokens::table)
        .values((
            one_time_tokens::token_hash.eq(sha256_hex(&token)),
            one_time_tokens::purpose.eq(purpose),
            one_time_tokens::member_id.eq(member_id),
            one_time_tokens::expires_at.eq(Utc::now() + valid_for),
        ))
        .execute(conn)?;
    Ok(token)
}

/// A usable one-time token: unused, unexpired, of the given purpose. Returns its id and member.
pub fn find_one_time_token(
    conn: &mut PgConnection,
    token: &str,
    purpose: LinkPurpose,
) -> Result<(i64, Option<i64>), Error> {
    one_time_tokens::table
        .filter(one_time_tokens::token_hash.eq(sha256_hex(token)))
        .filter(one_time_tokens::purpose.eq(purpose))
        .filter(one_time_tokens::used_at.is_null())
        .filter(one_time_tokens::expires_at.gt(Utc::now()))
        .select((one_time_tokens::id, one_time_tokens::member_id))
        .first(conn)
        .optional()?
        .ok_or_else(|| {
            Error::BadRequest("This link is invalid, used or expired. Ask an admin for a new one.".into())
        })
}

/// Marks a token used; false when another request used it first.
pub fn use_one_time_token(conn: &mut PgConnection, token_id: i64) -> Result<bool, Error> {
    let updated = diesel::update(
        one_time_tokens::table
            .find(token_id)
            .filter(one_time_tokens::used_at.is_null()),
    )
    .set(one_time_tokens::used_at.eq(Utc::now()))
    .execute(conn)?;
    Ok(updated == 1)
}

/// First run: when nobody can sign in yet, a setup link creates the first admin.
pub fn setup_token_if_needed(conn: &mut PgConnection) -> Result<Option<String>, Error> {
    if any_members(conn)? {
        return Ok(None);
    }
    create_one_time_token(conn, OneTimePurpose::Setup, Duration::hours(24)).map(Some)
}

/// Creates the first admin through the setup link, in one transaction with using the link.
pub fn complete_setup(
    conn: &mut PgConnection,
    token: &str,
    new: NewMember,
    address: Option<String>,
) -> Result<Member, Error> {
    conn.transaction(|conn| {
        let (token_id, _) = find_one_time_token(conn, token, LinkPurpose::Setup)?;
        if any_members(conn)? || !use_one_time_token(conn, token_id)? {
            return Err(Error::BadRequest(
                "Setup is already complete. Please sign in.".into(),
            ));
        }
        let actor = Actor {
            member_id: None,
            token_id: None,
            label: "setup".into(),
            address,
        };
        create_member(
            conn,
            &actor,
            NewMember {
                role: Role::Admin,
                ..new
            },
        )
    })
}

/// How long a set-password link given to a member stays valid.
pub const SET_PASSWORD_LINK_HOURS: i64 = 72;

/// A fresh one-time set-password link for a member (valid [`SET_PASSWORD_LINK_HOURS`]).
/// Older unused links of the member stop working: only the latest one handed out counts.
pub fn issue_password_link(conn: &mut PgConnection, actor: &Actor, member_id: i64) -> Result<String, Error> {
    conn.transaction(|conn| {
        let member = find(conn, member_id)?;
        let now = Utc::now();
        diesel::update(
            one_time_tokens::table
                .filter(one_time_tokens::member_id.eq(member.id))
                .filter(one_time_tokens::purpose.eq(LinkPurpose::SetPassword))
                .filter(one_time_tokens::used_at.is_null())
                .filter(one_time_tokens::expires_at.gt(now)),
        )
        .set(one_time_tokens::expires_at.eq(now))
        .execute(conn)?;
        let token = create_one_time_token(
            conn,
            OneTimePurpose::SetPassword(member.id),
            Duration::hours(SET_PASSWORD_LINK_HOURS),
        )?;
        audit::record(
            conn,
            actor,
            member_change(
                "member.password_link",
                Some(member.id),
                None,
                Some(json!({"valid_hours": SET_PASSWORD_LINK_HOURS})),
            ),
        )?;
        Ok(token)
    })
}

/// The member a usable set-password link belongs to (for showing the form).
pub fn member_for_password_link(conn: &mut PgConnection, token: &str) -> Result<Member, Error> {
    let (_, member_id) = find_one_time_token(conn, token, LinkPurpose::SetPassword)?;
    let member_id = member_id.ok_or(Error::NotFound)?;
    let member = find(conn, member_id)?;
    if member.disabled {
        return Err(Error::BadRequest(
            "This account is disabled. Ask an admin to enable it.".into(),
        ));
    }
    Ok(member)
}

/// Sets a password through a one-time link: the link is used up and every session of the
/// member ends, all in one transaction (a refused password leaves the link usable).
pub fn complete_password_link(
    conn: &mut PgConnection,
    token: &str,
    password: &str,
    address: Option<String>,
) -> Result<Member, Error> {
    conn.transaction(|conn| {
        let (token_id, _) = find_one_time_token(conn, token, LinkPurpose::SetPassword)?;
        let member = member_for_password_link(conn, token)?;
        if !use_one_time_token(conn, token_id)? {
            return Err(Error::BadRequest(
                "This link is invalid, used or expired. Ask an admin for a new one.".into(),
            ));
        }
        set_password(conn, &member.actor(address), member.id, password, None)?;
        Ok(member)
    })
}
