//! Who may use which route: one table, enforced for every request by one middleware.
//!
//! A route that is registered but missing from [`RULES`] is refused (fail closed), and the
//! authorization-matrix test walks this same table, so a new route cannot slip through
//! without a rule.

use actix_session::SessionExt;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

use crate::db;
use crate::domain::programs::{self, Program};
use crate::domain::sessions::MEMBER_ID_KEY;
use crate::domain::team::{self, Member, Role};
use crate::error::Error;
use crate::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No session needed (login, setup, health, assets, the public redirect).
    Public,
    /// A signed-in member with at least this role.
    Member(Role),
    /// Token-authenticated JSON API; checked by the API's own extractor.
    ApiToken,
}

pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn rule(method: &'static str, path: &'static str, access: Access) -> Rule {
    Rule { method, path, access }
}

use Access::{ApiToken, Member as M, Public};
const VIEWER: Access = M(Role::Viewer);
#[allow(dead_code)] // used as soon as a support-only route exists
const SUPPORT: Access = M(Role::Support);
const ADMIN: Access = M(Role::Admin);

/// Every route of the application. Paths are actix resource patterns.
pub const RULES: &[Rule] = &[
    rule("GET", "/healthz", Public),
    rule("GET", "/readyz", Public),
    rule("GET", "/static/{file}", Public),
    rule("GET", "/login", Public),
    rule("POST", "/login", Public),
    rule("GET", "/setup", Public),
    rule("POST", "/setup", Public),
    rule("POST", "/logout", VIEWER),
    rule("GET", "/", VIEWER),
    rule("POST", "/program", VIEWER),
    rule("GET", "/team", ADMIN),
    rule("POST", "/team", ADMIN),
    rule("GET", "/team/new", ADMIN),
    rule("POST", "/team/{id}/role", ADMIN),
    rule("POST", "/team/{id}/disable", ADMIN),
    rule("POST", "/team/{id}/enable", ADMIN),
    rule("GET", "/team/{id}/password", ADMIN),
    rule("POST", "/team/{id}/password", ADMIN),
    rule("GET", "/set-password", Public),
    rule("POST", "/set-password", Public),
    rule("GET", "/profile", VIEWER),
    rule("POST", "/profile", VIEWER),
    rule("GET", "/programs", ADMIN),
    rule("POST", "/programs", ADMIN),
    rule("GET", "/programs/new", ADMIN),
    rule("GET", "/programs/{id}/edit", ADMIN),
    rule("POST", "/programs/{id}/edit", ADMIN),
    rule("GET", "/audit", ADMIN),
    rule("GET", "/audit/export", ADMIN),
];

// Keep the compiler from flagging the API marker before the API routes exist.
const _: Access = ApiToken;

pub fn rule_for(method: &Method, pattern: &str) -> Option<Access> {
    RULES
        .iter()
        .find(|rule| rule.method == method.as_str() && rule.path == pattern)
        .map(|rule| rule.access)
}

/// The signed-in member and the program they are working in, for this request.
#[derive(Clone)]
pub struct SignedIn {
    pub member: Member,
    pub program: Program,
    pub programs: Vec<Program>,
}

/// Session key holding the id of the program the member last switched to.
pub const PROGRAM_ID_KEY: &str = "program_id";

pub fn client_address(req: &actix_web::HttpRequest) -> String {
    req.peer_addr()
        .map(|addr| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

pub async fn enforce(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(pattern) = req.match_pattern() else {
        // Nothing matched: the default service answers 404.
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let access = match rule_for(req.method(), &pattern) {
        Some(access) => access,
        None if pattern.starts_with("/v1") => ApiToken,
        None => {
            tracing::error!(method = %req.method(), %pattern, "route has no access rule; refused");
            return Ok(refuse(req, Error::forbidden()));
        }
    };
    let needed = match access {
        Public | ApiToken => return next.call(req).await.map(ServiceResponse::map_into_left_body),
        M(role) => role,
    };

    let session = req.get_session();
    let member_id = session.get::<i64>(MEMBER_ID_KEY).ok().flatten();
    let Some(member_id) = member_id else {
        return Ok(to_login(req));
    };
    let program_id = session.get::<i64>(PROGRAM_ID_KEY).ok().flatten();
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    let loaded = db::run(&state.pool, move |conn| {
        let member = team::find(conn, member_id)?;
        let programs = programs::list(conn)?;
        Ok((member, programs))
    })
    .await;
    let (member, programs) = match loaded {
        Ok(found) => found,
        Err(Error::NotFound) => {
            session.purge();
            return Ok(to_login(req));
        }
        Err(error) => return Ok(refuse(req, error)),
    };
    if member.disabled {
        session.purge();
        return Ok(to_login(req));
    }
    if !member.can(needed) {
        return Ok(refuse(req, Error::forbidden()));
    }
    let Some(program) = programs
        .iter()
        .find(|program| Some(program.id) == program_id)
        .or_else(|| programs.first())
        .cloned()
    else {
        return Ok(refuse(req, Error::Internal(anyhow::anyhow!("no program exists"))));
    };
    req.extensions_mut().insert(SignedIn {
        member,
        program,
        programs,
    });
    next.call(req).await.map(ServiceResponse::map_into_left_body)
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
