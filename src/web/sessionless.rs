//! Routes that never use a session: the health probes and the JSON API.
//!
//! The session middleware reads the session from PostgreSQL for every request that sends
//! its cookie, before any handler runs. These routes must answer without the database
//! (`/healthz`), within their own bound (`/readyz`), or before any database work (an API
//! call refused by its throttle), so their requests reach the session middleware without
//! cookies, and the sessions table is never read for them.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;

fn uses_no_session(path: &str) -> bool {
    path == "/healthz" || path == "/readyz" || path == "/v1" || path.starts_with("/v1/")
}

pub async fn skip_sessions(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if uses_no_session(req.path()) {
        req.headers_mut().remove(header::COOKIE);
    }
    next.call(req).await
}
