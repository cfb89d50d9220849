//! Liveness and readiness probes.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::db;
use crate::AppState;

/// The process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// The primary database answers within [`db::READY_WITHIN`]; 503 otherwise. The JSON
/// body lists each database: the primary, and each replica as the background check last
/// found it. A replica that is down or lagging leaves the server ready, since its reads
/// go to the primary.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = db::answers(&state.pool).await;
    let mut databases = vec![db::replicas::Report {
        name: "primary".into(),
        status: if ready { "up" } else { "down" },
        lag_ms: None,
    }];
    if let Some(replicas) = state.pool.replicas() {
        databases.extend(replicas.reports());
    }
    let body = json!({
        "status": if ready { "ready" } else { "database unavailable" },
        "databases": databases,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
