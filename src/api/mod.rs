//! The `/v1` JSON API, wire-compatible with Partnero's refer-a-friend customers API.
//!
//! Handlers here are thin: they read JSON, call the same domain functions as the dashboard,
//! and shape the answers like the original service (`{"data": ..., "status": 1}`).
//! Every answer is JSON with `Content-Type: application/json` exactly — one widely used
//! client decodes nothing else.

pub mod auth;
pub mod body;
pub mod customers;
pub mod ledger;
pub mod list;
pub mod openapi;
pub mod rewards;
pub mod throttle;
pub mod transactions;
pub mod views;
pub mod webhooks;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::HttpResponse;
use serde::Serialize;

use crate::error::Error;
use crate::routes::Access::{ApiToken, Sessionless};
use crate::routes::Routes;

pub use auth::ApiCall;

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every `/v1` route and who may call it: a bearer token on every call (checked by
/// [`ApiCall`] before the call does anything else), except the description of the API.
/// `customers:search` and `customers:invite` are declared before `customers/{ident}`.
pub fn routes(routes: &mut Routes) {
    routes
        .get("/v1/openapi.json", Sessionless, openapi::document)
        .get("/v1/customers", ApiToken, customers::list)
        .post("/v1/customers", ApiToken, customers::create)
        .put("/v1/customers", ApiToken, customers::update_by_body)
        .get("/v1/customers:search", ApiToken, customers::search)
        .post("/v1/customers:invite", ApiToken, ledger::invite)
        .get("/v1/customers/{ident}", ApiToken, customers::show)
        .put("/v1/customers/{ident}", ApiToken, customers::update)
        .delete("/v1/customers/{ident}", ApiToken, customers::delete)
        .get("/v1/customers/{ident}/referrals", ApiToken, customers::referrals)
        .get("/v1/customers/{ident}/stats", ApiToken, ledger::stats)
        .get("/v1/customers/{ident}/balance", ApiToken, ledger::balance)
        .post("/v1/customers/{ident}/balance/credit", ApiToken, ledger::credit)
        .get(
            "/v1/customers/{ident}/transactions",
            ApiToken,
            ledger::transactions,
        )
        .get("/v1/webhooks", ApiToken, webhooks::list)
        .post("/v1/webhooks", ApiToken, webhooks::create)
        .get("/v1/webhooks/{key}", ApiToken, webhooks::show)
        .put("/v1/webhooks/{key}", ApiToken, webhooks::update)
        .delete("/v1/webhooks/{key}", ApiToken, webhooks::delete)
        .get("/v1/rewards", ApiToken, rewards::list)
        .post("/v1/rewards/{id}/approve", ApiToken, rewards::approve)
        .post("/v1/rewards/{id}/deny", ApiToken, rewards::deny)
        .get(
            "/v1/customers/{ident}/rewards",
            ApiToken,
            transactions::customer_rewards,
        )
        .get("/v1/transactions", ApiToken, transactions::list)
        .post("/v1/transactions", ApiToken, transactions::create)
        .get("/v1/transactions/{key}", ApiToken, transactions::show)
        .delete("/v1/transactions/{key}", ApiToken, transactions::refund)
        .post("/v1/transactions/{key}/archive", ApiToken, transactions::archive)
        .post(
            "/v1/transactions/{key}/revoke-archive",
            ApiToken,
            transactions::revoke_archive,
        );
}

/// Every `/v1` answer, errors included, is `Cache-Control: no-store`: they carry customer
/// data, and no cache between client and server should keep a copy.
pub async fn no_store(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !(req.path() == "/v1" || req.path().starts_with("/v1/")) {
        return next.call(req).await;
    }
    let no_store = (
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    match next.call(req).await {
        Ok(mut response) => {
            response.headers_mut().insert(no_store.0, no_store.1);
            Ok(response)
        }
        // An error still on its way out is rendered here, so its answer gets the header too.
        Err(error) => {
            let mut answer = error.error_response();
            answer.headers_mut().insert(no_store.0, no_store.1);
            Err(actix_web::error::InternalError::from_response(error.to_string(), answer).into())
        }
    }
}

/// A JSON answer with the exact content type clients expect.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    match serde_json::to_string(body) {
        Ok(text) => HttpResponse::build(status)
            .insert_header(("Content-Type", "application/json"))
            .body(text),
        Err(error) => Error::Internal(anyhow::anyhow!("could not encode JSON: {error}")).json_response(),
    }
}

/// `{"data": ..., "status": 1}`
/// 201 for a request that made something now, 200 for a replay answered with what an
/// earlier one made (an idempotency key, a transaction key).
pub fn created_or_replayed(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

pub fn data<T: Serialize>(status: StatusCode, data: &T) -> HttpResponse {
    #[derive(Serialize)]
    struct Data<'a, T> {
        data: &'a T,
        status: u8,
    }
    json(status, &Data { data, status: 1 })
}

/// `{"status": 1}` for actions without a body.
pub fn done() -> HttpResponse {
    #[derive(Serialize)]
    struct Done {
        status: u8,
    }
    json(StatusCode::OK, &Done { status: 1 })
}
