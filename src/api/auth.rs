//! `Authorization: Bearer <token>` on every `/v1` call; the token decides the program.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use crate::db;
use crate::domain::programs::Program;
use crate::domain::tokens::{self, ApiToken};
use crate::domain::Actor;
use crate::error::{ApiError, Error};
use crate::web::access::client_address;
use crate::AppState;

/// The authenticated caller of an API request.
pub struct ApiClient {
    pub token: ApiToken,
    pub program: Program,
    pub actor: Actor,
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

impl FromRequest for ApiClient {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<ApiClient, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let secret = bearer(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let address = client_address(req);
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ApiError(Error::Internal(anyhow::anyhow!("AppState missing"))))?;
            let secret = secret.ok_or(ApiError(Error::Unauthenticated))?;
            let found = db::run(&state.pool, move |conn| tokens::authenticate(conn, &secret)).await?;
            let (token, program) = found.ok_or(ApiError(Error::Unauthenticated))?;
            state.api_limiter.check(token.id).map_err(|retry_after_secs| {
                ApiError(Error::TooManyRequests {
                    message: "Too many requests. Slow down and retry later.".into(),
                    retry_after_secs,
                })
            })?;
            let actor = token.actor(Some(address));
            Ok(ApiClient {
                token,
                program,
                actor,
            })
        })
    }
}
