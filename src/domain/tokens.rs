//! API tokens: each belongs to one program, is shown once, and is stored only as a hash.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use serde_json::json;
use uuid::Uuid;

use crate::db::schema::{api_tokens, programs};
use crate::domain::programs::Program;
use crate::domain::{audit, sha256_hex, Actor};
use crate::error::{is_unique_violation, Error};
use crate::random::random_token;

diesel::define_sql_function!(fn lower(text: diesel::sql_types::Text) -> diesel::sql_types::Text);

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = api_tokens)]
pub struct ApiToken {
    pub id: i64,
    pub program_id: i64,
    pub name: String,
    pub token_prefix: String,
    pub created_by: Option<i64>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// With replicas: the primary's log position after this token's last write; its reads
    /// wait for a replica past it (`db::reads`).
    pub read_after_lsn: Option<i64>,
}

impl ApiToken {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// The audit log's actor for calls made with this token.
    pub fn actor(&self, address: Option<String>) -> Actor {
        Actor {
            member_id: None,
            token_id: Some(self.id),
            label: format!("API token \"{}\"", self.name),
            address,
        }
    }
}

/// Tokens look like `rd_` + 40 letters and digits (~238 bits).
const TOKEN_PREFIX: &str = "rd_";
/// How much of a token is kept in clear to tell tokens apart in lists.
const SHOWN_PREFIX_LENGTH: usize = 10;

pub fn parse_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || super::has_control_chars(name) {
        return Err(Error::invalid(
            "name",
            "Give the token a name of 1 to 100 characters, without control characters.",
        ));
    }
    Ok(name.to_string())
}

/// Creates a token; the clear text is returned once and never stored.
pub fn create(
    conn: &mut PgConnection,
    program_id: i64,
    name: &str,
    actor: &Actor,
) -> Result<(ApiToken, String), Error> {
    insert(conn, program_id, name, None, actor)
}

/// What a creation form did.
pub enum Created {
    /// A new token, with its clear text.
    New(ApiToken, String),
    /// This form had created this token already; nothing new was created.
    Before(ApiToken),
}

/// Creates a token for a form carrying the one-time `form_token`: the same form sent
/// again (a reload, a double click) creates nothing more.
pub fn create_once(
    conn: &mut PgConnection,
    program_id: i64,
    name: &str,
    form_token: Uuid,
    actor: &Actor,
) -> Result<Created, Error> {
    if let Some(token) = created_by_form(conn, form_token)? {
        return Ok(Created::Before(token));
    }
    match insert(conn, program_id, name, Some(form_token), actor) {
        Ok((token, secret)) => Ok(Created::New(token, secret)),
        // The same form, sent twice at once: the other request created it.
        Err(error) if violates(&error, "api_tokens_form_token_key") => created_by_form(conn, form_token)?
            .map(Created::Before)
            .ok_or(error),
        Err(other) => Err(other),
    }
}

fn created_by_form(conn: &mut PgConnection, form_token: Uuid) -> Result<Option<ApiToken>, Error> {
    Ok(api_tokens::table
        .filter(api_tokens::form_token.eq(form_token))
        .select(ApiToken::as_select())
        .first(conn)
        .optional()?)
}

fn name_taken(name: &str) -> Error {
    Error::invalid(
        "name",
        format!(
            "A live token of this program is already named \"{name}\". Choose another name, or revoke that token first."
        ),
    )
}

fn insert(
    conn: &mut PgConnection,
    program_id: i64,
    name: &str,
    form_token: Option<Uuid>,
    actor: &Actor,
) -> Result<(ApiToken, String), Error> {
    let name = parse_name(name)?;
    let secret = format!("{TOKEN_PREFIX}{}", random_token(40));
    // Asked first for a clear message; the unique index decides between two at once.
    let taken: Option<String> = api_tokens::table
        .filter(api_tokens::program_id.eq(program_id))
        .filter(api_tokens::revoked_at.is_null())
        .filter(lower(api_tokens::name).eq(name.to_lowercase()))
        .select(api_tokens::name)
        .first(conn)
        .optional()?;
    if let Some(existing) = taken {
        return Err(name_taken(&existing));
    }
    let inserted = conn.transaction(|conn| {
        let token = diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::program_id.eq(program_id),
                api_tokens::name.eq(&name),
                api_tokens::token_hash.eq(sha256_hex(&secret)),
                api_tokens::token_prefix.eq(&secret[..SHOWN_PREFIX_LENGTH]),
                api_tokens::created_by.eq(actor.member_id),
                api_tokens::form_token.eq(form_token),
            ))
            .returning(ApiToken::as_returning())
            .get_result(conn)?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(program_id),
                action: "api_token.create",
                subject_type: "api_token",
                subject_id: Some(token.id.to_string()),
                customer_id: None,
                before: None,
                after: Some(json!({"name": token.name, "prefix": token.token_prefix})),
            },
        )?;
        Ok((token, secret))
    });
    match inserted {
        Err(error) if violates(&error, "api_tokens_live_name") => Err(name_taken(&name)),
        other => other,
    }
}

/// Whether `error` is a unique violation of `constraint` (which the error type keeps as
/// an internal error).
fn violates(error: &Error, constraint: &str) -> bool {
    matches!(error, Error::Internal(inner)
        if inner
            .downcast_ref::<diesel::result::Error>()
            .is_some_and(|error| is_unique_violation(error, constraint)))
}

pub fn list(conn: &mut PgConnection, program_id: i64) -> Result<Vec<ApiToken>, Error> {
    Ok(api_tokens::table
        .filter(api_tokens::program_id.eq(program_id))
        .order((
            api_tokens::revoked_at.is_not_null(),
            api_tokens::created_at.desc(),
        ))
        .select(ApiToken::as_select())
        .load(conn)?)
}

pub fn revoke(
    conn: &mut PgConnection,
    program_id: i64,
    token_id: i64,
    actor: &Actor,
) -> Result<ApiToken, Error> {
    conn.transaction(|conn| {
        let token: ApiToken = api_tokens::table
            .filter(api_tokens::program_id.eq(program_id))
            .filter(api_tokens::id.eq(token_id))
            .select(ApiToken::as_select())
            .for_update()
            .first(conn)?;
        if token.is_revoked() {
            return Ok(token);
        }
        let revoked = diesel::update(api_tokens::table.find(token.id))
            .set(api_tokens::revoked_at.eq(Utc::now()))
            .returning(ApiToken::as_returning())
            .get_result(conn)?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(program_id),
                action: "api_token.revoke",
                subject_type: "api_token",
                subject_id: Some(token.id.to_string()),
                customer_id: None,
                before: Some(json!({"name": token.name, "revoked": false})),
                after: Some(json!({"name": token.name, "revoked": true})),
            },
        )?;
        Ok(revoked)
    })
}

/// Records that token `token_id` has just written (with replicas only): its reads go to
/// the primary until a replica has replayed past the primary's position now. Run after
/// the write's commit. Only raises the mark, so concurrent calls of one token keep the
/// latest.
pub fn record_write(conn: &mut PgConnection, token_id: i64) -> Result<(), Error> {
    crate::db::prepared::prepared(
        "UPDATE api_tokens SET read_after_lsn = (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint \
         WHERE id = $1 AND (read_after_lsn IS NULL \
         OR read_after_lsn < (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint)",
    )
    .bind::<diesel::sql_types::BigInt, _>(token_id)
    .execute(conn)?;
    Ok(())
}

/// `last_used_at` is refreshed at most this often, so a busy token does not turn every
/// read into a write.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// The live token and its program for a presented secret, or `None`.
pub fn authenticate(conn: &mut PgConnection, secret: &str) -> Result<Option<(ApiToken, Program)>, Error> {
    if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 200 {
        return Ok(None);
    }
    let found: Option<(ApiToken, Program)> = api_tokens::table
        .inner_join(programs::table)
        .filter(api_tokens::token_hash.eq(sha256_hex(secret)))
        .filter(api_tokens::revoked_at.is_null())
        .select((ApiToken::as_select(), Program::as_select()))
        .first(conn)
        .optional()?;
    if let Some((token, _)) = &found {
        let stale = token
            .last_used_at
            .is_none_or(|at| Utc::now() - at > Duration::seconds(LAST_USED_RESOLUTION_SECS));
        if stale {
            diesel::update(api_tokens::table.find(token.id))
                .set(api_tokens::last_used_at.eq(Utc::now()))
                .execute(conn)?;
        }
    }
    Ok(found)
}
