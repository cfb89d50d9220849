//! The access check: every request is held against the rule its route was declared with
//! (`crate::routes`), by one middleware.
//!
//! A matched route with no rule is refused (fail closed). Signed-in routes load the member
//! with the session and hand the handler a [`SignedIn`]; token routes are left to the
//! API's extractor.

use actix_session::SessionExt;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

use crate::db;
use crate::domain::programs::{self, Program};
use crate::domain::sessions::MEMBER_ID_KEY;
use crate::domain::team::Member;
use crate::error::Error;
use crate::routes::{Access, Lookup, RouteTable};
use crate::web::error_pages;
use crate::web::session_store::{loaded_member, LoadedMember};
use crate::AppState;

/// The signed-in member and the program they are working in, for this request.
#[derive(Clone)]
pub struct SignedIn {
    /// As read with the session: current, but without its password hash (`None`), which
    /// pages never need — the password checks read the member themselves.
    pub member: Member,
    pub program: Program,
    pub programs: Vec<Program>,
}

/// The list of programs, kept in memory between requests: every signed-in page needs it
/// (switcher, current program) and it rarely changes. Each request reads a fingerprint of
/// the programs table with its session and member (one statement, `sessions::load`); the
/// list is read again only when the fingerprint changed, so it is never stale.
#[derive(Default)]
pub struct ProgramsCache {
    loaded: std::sync::RwLock<Option<(String, std::sync::Arc<Vec<Program>>)>>,
}

impl ProgramsCache {
    /// The cached list, if it has this fingerprint.
    pub fn get(&self, fingerprint: &str) -> Option<std::sync::Arc<Vec<Program>>> {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loaded
            .as_ref()
            .filter(|(cached, _)| cached == fingerprint)
            .map(|(_, programs)| programs.clone())
    }

    pub fn store(&self, fingerprint: String, programs: std::sync::Arc<Vec<Program>>) {
        *self
            .loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((fingerprint, programs));
    }
}

/// Session key holding the id of the program the member last switched to.
pub const PROGRAM_ID_KEY: &str = "program_id";

pub async fn enforce(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(pattern) = req.match_pattern() else {
        // Nothing matched: the default service answers 404.
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let lookup = match req.app_data::<web::Data<RouteTable>>() {
        Some(table) => table.lookup(req.method(), &pattern),
        None => Lookup::Undeclared,
    };
    let needed = match lookup {
        Lookup::Rule(Access::Member(role)) => role,
        // Token routes are checked by the API's extractor; a known path with another
        // method gets its 405 from the router.
        Lookup::Rule(Access::Public | Access::Sessionless | Access::ApiToken) | Lookup::OtherMethod => {
            return next.call(req).await.map(ServiceResponse::map_into_left_body);
        }
        Lookup::Undeclared => {
            tracing::error!(method = %req.method(), %pattern, "route has no access rule; refused");
            return Ok(refuse(req, Error::forbidden()));
        }
    };

    let session = req.get_session();
    let member_id = session.get::<i64>(MEMBER_ID_KEY).ok().flatten();
    let Some(member_id) = member_id else {
        return Ok(to_login(req));
    };
    let program_id = session.get::<i64>(PROGRAM_ID_KEY).ok().flatten();
    // Read with the session, in the same statement (`web::session_store`): the member as
    // they are now, not as they were at sign-in.
    let loaded = loaded_member(&session).filter(|loaded| loaded.member.id == member_id);
    let Some(LoadedMember {
        member,
        programs_fingerprint,
    }) = loaded
    else {
        // The member is gone.
        session.purge();
        return Ok(to_login(req));
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    let programs = match current_programs(&state, programs_fingerprint).await {
        Ok(programs) => programs,
        Err(error) => return Ok(refuse(req, error)),
    };
    if member.disabled {
        session.purge();
        return Ok(to_login(req));
    }
    let Some(program) = programs
        .iter()
        .find(|program| Some(program.id) == program_id)
        .or_else(|| programs.first())
        .cloned()
    else {
        return Ok(refuse(req, Error::Internal(anyhow::anyhow!("no program exists"))));
    };
    let refused = (!member.can(needed)).then(|| Error::needs_role(needed, member.role));
    req.extensions_mut().insert(SignedIn {
        member,
        program,
        programs: programs.as_ref().clone(),
    });
    if let Some(error) = refused {
        // Refused with the navigation: the member is signed in, only not for this.
        let page =
            error_pages::signed_in_error(req.request(), &error).unwrap_or_else(|| error.html_response());
        return Ok(req.into_response(page).map_into_right_body());
    }
    let response = next.call(req).await?;
    Ok(error_pages::with_navigation(response))
}

/// The list of programs: the cached one while the fingerprint read with the session still
/// matches, else read again and cached.
async fn current_programs(
    state: &AppState,
    fingerprint: String,
) -> Result<std::sync::Arc<Vec<Program>>, Error> {
    if let Some(programs) = state.programs.get(&fingerprint) {
        return Ok(programs);
    }
    // From the primary, as the fingerprint was: a replica behind it would have the cache
    // keep an old list under the new fingerprint.
    let programs = std::sync::Arc::new(db::run_primary(&state.pool, programs::list).await?);
    state.programs.store(fingerprint, programs.clone());
    Ok(programs)
}

fn refuse<B>(req: ServiceRequest, error: Error) -> ServiceResponse<EitherBody<B>> {
    req.into_response(error.html_response()).map_into_right_body()
}

/// Anonymous visitors go to the login page; after signing in they come back.
fn to_login<B>(req: ServiceRequest) -> ServiceResponse<EitherBody<B>> {
    let location = if req.method() == Method::GET {
        let next = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        format!("/login?next={}", urlencode(next))
    } else {
        "/login".to_string()
    };
    let response = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    req.into_response(response).map_into_right_body()
}

pub fn urlencode(value: &str) -> String {
    serde_urlencoded::to_string([("", value)])
        .map(|encoded| encoded.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{test, web, App};

    use super::enforce;
    use crate::routes::{Access, Routes};

    /// A service registered around [`Routes`] has no rule, so it is refused, while the
    /// router still answers 405 and 404 itself.
    #[actix_web::test]
    async fn a_route_registered_without_a_rule_is_refused() {
        let mut declared = Routes::default();
        declared.get("/open", Access::Public, || async { "open" });
        let table = web::Data::new(declared.table());
        let app = test::init_service(
            App::new()
                .app_data(table)
                .wrap(from_fn(enforce))
                .configure(|cfg| declared.register(cfg))
                .route("/undeclared", web::get().to(|| async { "undeclared" })),
        )
        .await;
        let status = |method: &'static str, path: &'static str| {
            let app = &app;
            async move {
                let request = test::TestRequest::default()
                    .method(method.parse().unwrap())
                    .uri(path)
                    .to_request();
                test::call_service(app, request).await.status().as_u16()
            }
        };
        assert_eq!(status("GET", "/open").await, 200);
        assert_eq!(status("GET", "/undeclared").await, 403);
        assert_eq!(status("POST", "/open").await, 405);
        assert_eq!(status("GET", "/nowhere").await, 404);
    }
}
