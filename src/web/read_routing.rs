//! Which database a request reads from, when replicas are configured
//! (`REFERDESK_REPLICA_URL`; see `db::reads` and `db::replicas`).
//!
//! A GET or HEAD reads from a replica; anything else runs on the primary. After a request
//! that wrote, the member's browser gets a cookie with the primary's log position, and
//! their pages read from the primary until a replica has replayed past it
//! (read-your-writes), whichever server process behind the load balancer serves them.
//! The cookie is not signed: it names a log position, not a right. A browser that
//! changes it only makes its own pages read from the primary (which any POST does), or
//! shows itself a page up to `REFERDESK_REPLICA_MAX_LAG` old.
//!
//! API calls keep their position with their token instead (`api::auth`): API clients do
//! not keep cookies.

use actix_web::body::MessageBody;
use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;

use crate::db::reads::{self, Lsn, ReadRoute};
use crate::db::{self, replicas};
use crate::AppState;

pub const READ_AFTER_COOKIE: &str = "referdesk_read_after";

pub async fn route_reads(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let Some((state, replicas)) =
        state.and_then(|state| state.pool.replicas().cloned().map(|replicas| (state, replicas)))
    else {
        // No replicas: every read is on the primary, as without this middleware.
        let route = ReadRoute::new(false, None);
        return reads::scope(route, next.call(req)).await;
    };
    let reads_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let fence: Option<Lsn> = req
        .cookie(READ_AFTER_COOKIE)
        .and_then(|cookie| cookie.value().parse().ok());
    let fence_passed = fence.is_some_and(|fence| replicas.passed(fence));
    let signed_in = req.cookie(crate::SESSION_COOKIE).is_some();
    let route = ReadRoute::new(reads_only, fence.filter(|_| !fence_passed));
    let mut response = reads::scope(route.clone(), next.call(req)).await?;
    let signing_in = response
        .response()
        .cookies()
        .any(|cookie| cookie.name() == crate::SESSION_COOKIE);
    // API calls carry no cookies (`web::sessionless`); their token keeps the position.
    if (!reads_only || route.wrote()) && (signed_in || signing_in) {
        match db::run_primary(&state.pool, replicas::primary_position).await {
            Ok(position) => {
                let lifetime = state.config.replica_max_lag + 2 * replicas::CHECK_EVERY;
                let cookie = Cookie::build(READ_AFTER_COOKIE, position.to_string())
                    .path("/")
                    .http_only(true)
                    .secure(state.config.serves_https())
                    .same_site(SameSite::Lax)
                    // Any replica in use is this close behind the primary, so it has
                    // replayed the write by the time the cookie expires.
                    .max_age(time::Duration::seconds_f64(lifetime.as_secs_f64().ceil()))
                    .finish();
                let _ = response.response_mut().add_cookie(&cookie);
            }
            Err(error) => {
                // The write is done; this member may see the page before it once.
                tracing::warn!(%error, "could not read the primary's log position");
            }
        }
    } else if fence_passed {
        let _ = response
            .response_mut()
            .add_removal_cookie(&Cookie::build(READ_AFTER_COOKIE, "").path("/").finish());
    }
    Ok(response)
}
