//! Liveness and readiness probes.

use actix_web::{web, HttpResponse};
use diesel::RunQueryDsl;

use crate::db;
use crate::AppState;

/// The process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// The database answers too; 503 otherwise.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ping = db::run(&state.pool, |conn| {
        diesel::sql_query("SELECT 1").execute(conn)?;
        Ok(())
    })
    .await;
    match ping {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready"),
        Err(_) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("database unavailable"),
    }
}
