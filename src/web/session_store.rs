//! actix-session's `SessionStore` over the `sessions` table.
//!
//! Loading a session also reads its signed-in member, in the same statement
//! (`sessions::load`), and hands it to the access check (`web::access::enforce`) inside
//! the loaded state under [`LOADED_MEMBER_KEY`]: one round trip and one hand-off to a
//! blocking thread per page fewer than looking the member up again. That entry is always
//! the one just read — load replaces it, and save and update strip it, so it never reaches
//! the database and a stale copy is never trusted.
//!
//! Only a signed-in member's session is ever written: a visitor who is not signed in
//! keeps nothing in the session (public forms' CSRF tokens live in their own cookie,
//! `web::csrf`), and [`PgSessionStore`] refuses to insert a row without a member.

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_session::Session;
use actix_web::cookie::time::Duration;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::db::{self, DbPool};
use crate::domain::sessions;
use crate::domain::team::Member;
use crate::random::random_token;

/// The state entry holding the [`LoadedMember`] of the session just loaded.
const LOADED_MEMBER_KEY: &str = "loaded_member";

/// The signed-in member as the session's load read them.
#[derive(Serialize, Deserialize)]
pub struct LoadedMember {
    pub member: Member,
    /// The programs' fingerprint read with the member (`web::access::ProgramsCache`).
    pub programs_fingerprint: String,
}

/// The member the session was loaded with, if it names one that exists.
pub fn loaded_member(session: &Session) -> Option<LoadedMember> {
    session.get::<LoadedMember>(LOADED_MEMBER_KEY).ok().flatten()
}

/// The state as actix-session sees it: the stored entries plus the member just read.
fn with_loaded_member(loaded: sessions::Loaded) -> sessions::State {
    let mut state = loaded.state;
    state.remove(LOADED_MEMBER_KEY);
    if let Some((member, programs_fingerprint)) = loaded.member {
        let entry = LoadedMember {
            member,
            programs_fingerprint,
        };
        if let Ok(json) = serde_json::to_string(&entry) {
            state.insert(LOADED_MEMBER_KEY.to_string(), json);
        }
    }
    state
}

/// The state as stored: without the member read on load.
fn to_store(mut state: sessions::State) -> sessions::State {
    state.remove(LOADED_MEMBER_KEY);
    state
}

#[derive(Clone)]
pub struct PgSessionStore {
    pool: DbPool,
}

impl PgSessionStore {
    pub fn new(pool: DbPool) -> Self {
        PgSessionStore { pool }
    }
}

fn expiry(ttl: &Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(ttl.whole_seconds())
}

fn new_key() -> SessionKey {
    // 64 alphanumeric characters: ~380 bits, far beyond guessing.
    SessionKey::try_from(random_token(64)).expect("64 characters fit in a cookie")
}

impl SessionStore for PgSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<sessions::State>, LoadError> {
        let key = session_key.as_ref().to_string();
        let loaded = db::run(&self.pool, move |conn| sessions::load(conn, &key))
            .await
            .map_err(|error| LoadError::Other(anyhow::anyhow!(error)))?;
        Ok(loaded.map(with_loaded_member))
    }

    async fn save(&self, state: sessions::State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        let state = to_store(state);
        let key = new_key();
        if !state.contains_key(sessions::MEMBER_ID_KEY) {
            // Rows are for signed-in members only: anything else a visitor could create
            // by the thousand. The key names no row, so it loads as an empty session.
            tracing::debug!("not storing a session without a signed-in member");
            return Ok(key);
        }
        let raw = key.as_ref().to_string();
        let expires_at = expiry(ttl);
        db::run(&self.pool, move |conn| {
            sessions::insert(conn, &raw, &state, expires_at)
        })
        .await
        .map_err(|error| SaveError::Other(anyhow::anyhow!(error)))?;
        Ok(key)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: sessions::State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let state = to_store(state);
        let raw = session_key.as_ref().to_string();
        let expires_at = expiry(ttl);
        let still_there = {
            let state = state.clone();
            db::run(&self.pool, move |conn| {
                sessions::update(conn, &raw, &state, expires_at)
            })
            .await
            .map_err(|error| UpdateError::Other(anyhow::anyhow!(error)))?
        };
        if still_there {
            return Ok(session_key);
        }
        // The session was ended meanwhile (logout elsewhere, member disabled): drop the
        // sign-in rather than resurrecting the old row (`save` stores no row without one).
        let mut state = state;
        state.remove(sessions::MEMBER_ID_KEY);
        self.save(state, ttl)
            .await
            .map_err(|error| UpdateError::Other(anyhow::anyhow!(error.to_string())))
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        let raw = session_key.as_ref().to_string();
        let expires_at = expiry(ttl);
        db::run(&self.pool, move |conn| sessions::touch(conn, &raw, expires_at))
            .await
            .map_err(|error| anyhow::anyhow!(error))
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        let raw = session_key.as_ref().to_string();
        db::run(&self.pool, move |conn| sessions::delete(conn, &raw))
            .await
            .map_err(|error| anyhow::anyhow!(error))
    }
}
