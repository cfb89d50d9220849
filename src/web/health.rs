//! Liveness and readiness probes.

use actix_web::{web, HttpResponse};

use crate::db;
use crate::AppState;

/// The process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// The database answers too, within [`db::READY_WITHIN`]; 503 otherwise.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if db::answers(&state.pool).await {
        HttpResponse::Ok().content_type("text/plain").body("ready")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("database unavailable")
    }
}
