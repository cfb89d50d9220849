//! Server-side session rows. The cookie carries a random key; rows are stored under the
//! key's SHA-256, with the signed-in member pulled out of the state so that disabling a
//! member or changing a password can end their sessions with one DELETE.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

use crate::db::schema::{sessions, team_members};
use crate::domain::sha256_hex;
use crate::domain::team::{Member, PROGRAMS_FINGERPRINT};
use crate::error::Error;

/// The session-state entry that names the signed-in member.
pub const MEMBER_ID_KEY: &str = "member_id";

pub type State = HashMap<String, String>;

pub fn row_id(session_key: &str) -> String {
    sha256_hex(session_key)
}

fn member_of(state: &State) -> Option<i64> {
    state.get(MEMBER_ID_KEY).and_then(|value| value.parse().ok())
}

/// A session as loaded, with its signed-in member read in the same statement.
pub struct Loaded {
    pub state: State,
    /// The member the session is signed in as, as they are now, and the fingerprint of the
    /// programs table (see `web::access::ProgramsCache`); `None` when the session names no
    /// member or the member no longer exists.
    pub member: Option<(Member, String)>,
}

/// A live session. Every signed-in page needs the member's current role and state and
/// the programs' fingerprint; reading them here, joined to the session row, saves each
/// page a round trip and a hand-off to a blocking thread (`web::session_store`).
pub fn load(conn: &mut PgConnection, session_key: &str) -> Result<Option<Loaded>, Error> {
    let row: Option<(serde_json::Value, Option<Member>, Option<String>)> = sessions::table
        .left_join(team_members::table)
        .filter(sessions::id.eq(row_id(session_key)))
        .filter(sessions::expires_at.gt(Utc::now()))
        .select((
            sessions::state,
            Option::<Member>::as_select(),
            crate::db::fixed::fixed::<Nullable<Text>>(PROGRAMS_FINGERPRINT),
        ))
        .first(conn)
        .optional()?;
    Ok(row.and_then(|(state, member, fingerprint)| {
        let state = serde_json::from_value(state).ok()?;
        let member = member.map(|member| (member, fingerprint.unwrap_or_default()));
        Some(Loaded { state, member })
    }))
}

pub fn insert(
    conn: &mut PgConnection,
    session_key: &str,
    state: &State,
    expires_at: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(row_id(session_key)),
            sessions::member_id.eq(member_of(state)),
            sessions::state.eq(serde_json::to_value(state).map_err(anyhow::Error::from)?),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Updates a live session; returns false when the row is gone (ended or expired), in
/// which case the caller must not bring it back.
pub fn update(
    conn: &mut PgConnection,
    session_key: &str,
    state: &State,
    expires_at: DateTime<Utc>,
) -> Result<bool, Error> {
    let updated = diesel::update(
        sessions::table
            .find(row_id(session_key))
            .filter(sessions::expires_at.gt(Utc::now())),
    )
    .set((
        sessions::member_id.eq(member_of(state)),
        sessions::state.eq(serde_json::to_value(state).map_err(anyhow::Error::from)?),
        sessions::expires_at.eq(expires_at),
        sessions::updated_at.eq(Utc::now()),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

pub fn touch(conn: &mut PgConnection, session_key: &str, expires_at: DateTime<Utc>) -> Result<(), Error> {
    diesel::update(sessions::table.find(row_id(session_key)))
        .set(sessions::expires_at.eq(expires_at))
        .execute(conn)?;
    Ok(())
}

pub fn delete(conn: &mut PgConnection, session_key: &str) -> Result<(), Error> {
    diesel::delete(sessions::table.find(row_id(session_key))).execute(conn)?;
    Ok(())
}

pub fn delete_expired(conn: &mut PgConnection) -> Result<usize, Error> {
    Ok(diesel::delete(sessions::table.filter(sessions::expires_at.le(Utc::now()))).execute(conn)?)
}
