//! `Authorization: Bearer <token>` on every `/v1` call; the token decides the program.
//!
//! The token is looked up in the same blocking task, on the same pooled connection, as the
//! call's own work ([`ApiCall::run`]): one hand-off to a blocking thread and one pool
//! checkout per call instead of two. With a pool of a few connections shared by many
//! callers, that is also one wait in the pool's queue fewer.

use std::future::{ready, Ready};

use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use diesel::PgConnection;

use crate::api::throttle;
use crate::client_address::client_address;
use crate::db;
use crate::domain::programs::Program;
use crate::domain::tokens::{self, ApiToken};
use crate::domain::{sha256_hex, Actor};
use crate::error::{ApiError, Error};
use crate::AppState;

/// The authenticated caller of an API request.
pub struct ApiClient {
    pub token: ApiToken,
    pub program: Program,
    pub actor: Actor,
}

/// An API request's credentials as sent, not yet checked: [`ApiCall::run`] checks them
/// before anything else the call does. A request without any bearer token is refused
/// here, before its body is read.
pub struct ApiCall {
    state: web::Data<AppState>,
    secret: String,
    address: String,
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

impl FromRequest for ApiCall {
    type Error = ApiError;
    type Future = Ready<Result<ApiCall, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        ready(match (state, bearer(req)) {
            (Some(state), Some(secret)) => Ok(ApiCall {
                state,
                secret,
                address: client_address(req),
            }),
            (Some(_), None) => Err(ApiError(Error::Unauthenticated)),
            (None, _) => Err(ApiError(Error::Internal(anyhow::anyhow!("AppState missing")))),
        })
    }
}

impl ApiCall {
    /// Checks the token and the caller's rate, then hands `input` to `work`, all on one
    /// connection in one blocking task.
    ///
    /// `input` is what the handler read from the request (its body, query or headers):
    /// an error in it is answered only once the caller is known, so an unauthenticated
    /// client learns nothing but 401 (or 429 once over its rate).
    pub async fn run<I, T, F>(self, input: Result<I, ApiError>, work: F) -> Result<T, ApiError>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&mut PgConnection, ApiClient, I) -> Result<T, Error> + Send + 'static,
    {
        self.run_on(false, input, work).await
    }

    /// [`run`](Self::run) for work made of lookups by key, whose statements use their
    /// reusable plans ([`db::run_lookups`]).
    pub async fn run_lookups<I, T, F>(self, input: Result<I, ApiError>, work: F) -> Result<T, ApiError>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&mut PgConnection, ApiClient, I) -> Result<T, Error> + Send + 'static,
    {
        self.run_on(true, input, work).await
    }

    async fn run_on<I, T, F>(
        self,
        generic_plans: bool,
        input: Result<I, ApiError>,
        work: F,
    ) -> Result<T, ApiError>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&mut PgConnection, ApiClient, I) -> Result<T, Error> + Send + 'static,
    {
        let secret = self.secret;
        let state = self.state.clone();
        let address = self.address;
        // With replicas, a read goes to a replica after its token is read (and its use
        // counted) on the primary; a write records where its token's reads must wait.
        let route = db::reads::current().filter(|_| self.state.pool.replicas().is_some());
        let run_work = move |conn: &mut PgConnection, client: ApiClient, input: Result<I, ApiError>| {
            let input = input.map_err(|ApiError(error)| error)?;
            if generic_plans {
                db::with_generic_plans(conn, |conn| work(conn, client, input))
            } else {
                work(conn, client, input)
            }
        };
        if let Some(route) = route.as_ref().filter(|route| route.replica_allowed()) {
            let client = db::run_primary(&self.state.pool, move |conn| {
                db::with_generic_plans_unflushed(conn, |conn| {
                    Ok(authenticate(conn, &state, &secret, address))
                })?
            })
            .await?;
            route.require(client.token.read_after_lsn);
            return Ok(db::run(&self.state.pool, move |conn| run_work(conn, client, input)).await?);
        }
        let records_writes = route.is_some();
        let done = db::run(&self.state.pool, move |conn| {
            // Outside the work's transaction: a call that fails still counts as a use. In a
            // transaction of its own with reusable plans (the counters' statements would
            // otherwise be planned anew on every call, costing more than running them),
            // committed also when the call is refused, so that the refusal counts, and
            // without waiting for the disk (see `with_generic_plans_unflushed`).
            let client = db::with_generic_plans_unflushed(conn, |conn| {
                Ok(authenticate(conn, &state, &secret, address))
            })??;
            let token_id = client.token.id;
            let done = run_work(conn, client, input);
            if records_writes {
                // After the work's commit, whether it succeeded or not (a failure may
                // follow a write).
                if let Err(error) = tokens::record_write(conn, token_id) {
                    tracing::warn!(%error, "could not record the token's write position");
                }
            }
            done
        })
        .await?;
        Ok(done)
    }
}

/// The throttles (`api::throttle`, counters shared by every process) and the token.
fn authenticate(
    conn: &mut PgConnection,
    state: &AppState,
    secret: &str,
    address: String,
) -> Result<ApiClient, Error> {
    let token_hash = sha256_hex(secret);
    // Before the token is looked up: an address guessing tokens is refused here.
    throttle::admit_address(conn, &address, &token_hash)?;
    let Some((token, program)) = tokens::authenticate(conn, secret)? else {
        return Err(throttle::unknown(conn, &address));
    };
    throttle::take_call(conn, &token_hash, state.config.api_rate_per_minute)?;
    let actor = token.actor(Some(address));
    Ok(ApiClient {
        token,
        program,
        actor,
    })
}
