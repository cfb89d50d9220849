//! Routes that never use a session: those declared [`Access::Sessionless`] (the health
//! probes, the API's description) or [`Access::ApiToken`] (the JSON API), as the route
//! table says (`RouteTable::is_sessionless`).
//!
//! The session middleware reads the session from PostgreSQL for every request that sends
//! its cookie, before any handler runs. These routes must answer without the database
//! (`/healthz`), within their own bound (`/readyz`), or before any database work (an API
//! call refused by its throttle), so their requests reach the session middleware without
//! cookies, and the sessions table is never read for them.
//!
//! [`Access::Sessionless`]: crate::routes::Access::Sessionless
//! [`Access::ApiToken`]: crate::routes::Access::ApiToken

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web;

use crate::routes::RouteTable;

pub async fn skip_sessions(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let sessionless = req
        .app_data::<web::Data<RouteTable>>()
        .is_some_and(|table| table.is_sessionless(req.path(), req.match_pattern().as_deref()));
    if sessionless {
        req.headers_mut().remove(header::COOKIE);
    }
    next.call(req).await
}
