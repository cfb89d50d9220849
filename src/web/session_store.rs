//! actix-session's `SessionStore` over the `sessions` table.

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;
use chrono::Utc;

use crate::db::{self, DbPool};
use crate::domain::{random_token, sessions};

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
        db::run(&self.pool, move |conn| sessions::load(conn, &key))
            .await
            .map_err(|error| LoadError::Other(anyhow::anyhow!(error)))
    }

    async fn save(&self, state: sessions::State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        let key = new_key();
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
        // The session was ended meanwhile (logout elsewhere, member disabled): start a
        // fresh one without the sign-in rather than resurrecting the old row.
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
