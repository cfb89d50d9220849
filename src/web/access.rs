//! Who may use which route: one table, enforced for every request by one middleware.
//!
//! A route that is registered but missing from [`RULES`] is refused (fail closed), and the
//! authorization-matrix test walks this same table, so a new route cannot slip through
//! without a rule.

use std::net::{IpAddr, SocketAddr};

use actix_session::SessionExt;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use ipnet::IpNet;

use crate::db;
use crate::domain::programs::{self, Program};
use crate::domain::sessions::MEMBER_ID_KEY;
use crate::domain::team::{Member, Role};
use crate::error::Error;
use crate::web::session_store::{loaded_member, LoadedMember};
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
    rule("GET", "/r/{program}/{code}", Public),
    rule("GET", "/customers", VIEWER),
    rule("POST", "/customers", SUPPORT),
    rule("GET", "/customers/new", SUPPORT),
    rule("GET", "/customers/export.csv", VIEWER),
    rule("GET", "/customers/{key}", VIEWER),
    rule("GET", "/customers/{key}/edit", SUPPORT),
    rule("POST", "/customers/{key}/edit", SUPPORT),
    rule("POST", "/customers/{key}/delete", ADMIN),
    rule("POST", "/customers/{key}/restore", ADMIN),
    rule("POST", "/customers/{key}/erase", ADMIN),
    rule("POST", "/customers/{key}/approve", SUPPORT),
    rule("POST", "/customers/{key}/unapprove", SUPPORT),
    rule("POST", "/customers/{key}/referrer", ADMIN),
    rule("POST", "/customers/{key}/links", SUPPORT),
    rule("POST", "/customers/{key}/links/{link_id}/delete", SUPPORT),
    // Debits on the credit form are further limited to admins by the handler.
    rule("GET", "/customers/{key}/credit", SUPPORT),
    rule("POST", "/customers/{key}/credit", SUPPORT),
    rule("GET", "/customers/{key}/invite", SUPPORT),
    rule("POST", "/customers/{key}/invite", SUPPORT),
    rule("GET", "/invites", VIEWER),
    rule("GET", "/invites/new", SUPPORT),
    rule("POST", "/invites/new", SUPPORT),
    rule("POST", "/invites/{id}/retry", SUPPORT),
    rule("GET", "/api", VIEWER),
    rule("GET", "/api-tokens", ADMIN),
    rule("POST", "/api-tokens", ADMIN),
    rule("POST", "/api-tokens/{id}/revoke", ADMIN),
    // The JSON API: a bearer token on every call (checked by `api::ApiCall` before the
    // call does anything else), except the public description of the API itself.
    rule("GET", "/v1/openapi.json", Public),
    rule("GET", "/v1/customers", ApiToken),
    rule("POST", "/v1/customers", ApiToken),
    rule("PUT", "/v1/customers", ApiToken),
    rule("GET", "/v1/customers:search", ApiToken),
    rule("POST", "/v1/customers:invite", ApiToken),
    rule("GET", "/v1/customers/{ident}", ApiToken),
    rule("PUT", "/v1/customers/{ident}", ApiToken),
    rule("DELETE", "/v1/customers/{ident}", ApiToken),
    rule("GET", "/v1/customers/{ident}/referrals", ApiToken),
    rule("GET", "/v1/customers/{ident}/stats", ApiToken),
    rule("GET", "/v1/customers/{ident}/balance", ApiToken),
    rule("POST", "/v1/customers/{ident}/balance/credit", ApiToken),
    rule("GET", "/v1/customers/{ident}/transactions", ApiToken),
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

pub fn rule_for(method: &Method, pattern: &str) -> Option<Access> {
    RULES
        .iter()
        .find(|rule| rule.method == method.as_str() && rule.path == pattern)
        .map(|rule| rule.access)
}

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

/// The address a request comes from, for the audit log and the throttles of both faces:
/// the TCP peer, unless the peer is a trusted reverse proxy (`REFERDESK_TRUSTED_PROXIES`);
/// then the client that proxy names in `X-Forwarded-For`.
pub fn client_address(req: &actix_web::HttpRequest) -> String {
    let Some(peer) = req.peer_addr() else {
        return "unknown".to_string();
    };
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.config.trusted_proxies.as_slice())
        .unwrap_or_default();
    let forwarded: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    forwarded_client(peer.ip(), &forwarded, trusted).to_string()
}

/// Walks `X-Forwarded-For` from the right (each proxy appends the address it saw) while
/// the hops are trusted proxies: the first untrusted hop is the client. Anything left of it
/// was written by the client and may be forged; an unreadable hop ends the walk at the last
/// address a trusted proxy vouched for.
fn forwarded_client(peer: IpAddr, forwarded_for: &[String], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = forwarded_for.iter().flat_map(|value| value.split(',')).collect();
    for hop in hops.into_iter().rev() {
        let Some(address) = parse_hop(hop) else {
            return client;
        };
        client = address;
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`[::1]:443`, `1.2.3.4:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .or_else(|_| {
            hop.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
        })
        .ok()
        .map(|address| address.to_canonical())
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
        // A known path with another method: the router answers 405 itself.
        None if RULES.iter().any(|rule| rule.path == pattern) => {
            return next.call(req).await.map(ServiceResponse::map_into_left_body);
        }
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
    let programs = match state.programs.get(&programs_fingerprint) {
        Some(programs) => programs,
        None => {
            let read = db::run(&state.pool, programs::list).await;
            match read {
                Ok(programs) => {
                    let programs = std::sync::Arc::new(programs);
                    state.programs.store(programs_fingerprint, programs.clone());
                    programs
                }
                Err(error) => return Ok(refuse(req, error)),
            }
        }
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
        programs: programs.as_ref().clone(),
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

/// Every route registration in the given source text: `web::resource("PATH")` followed by
/// `.route(web::METHOD()` calls, and `.route("PATH", web::METHOD()` shortcuts.
#[cfg(test)]
fn registered_routes(source: &str) -> Vec<(String, String)> {
    fn method_after(text: &str) -> Option<String> {
        let method = text.trim_start().strip_prefix("web::")?;
        Some(method.split('(').next()?.to_uppercase())
    }
    fn string_at(text: &str) -> Option<(&str, &str)> {
        let inner = text.trim_start().strip_prefix('"')?;
        let end = inner.find('"')?;
        Some((&inner[..end], &inner[end + 1..]))
    }
    let mut found = Vec::new();
    for (index, piece) in source.split("web::resource(").enumerate() {
        let (resource_path, body) = match (index, string_at(piece)) {
            (0, _) | (_, None) => (None, piece),
            (_, Some((path, rest))) => (Some(path), rest),
        };
        for call in body.split(".route(").skip(1) {
            if let Some((path, rest)) = string_at(call) {
                if let Some(method) = method_after(rest.trim_start().trim_start_matches(',')) {
                    found.push((method, path.to_string()));
                }
            } else if let (Some(path), Some(method)) = (resource_path, method_after(call)) {
                found.push((method, path.to_string()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_client_is_believed_only_from_a_trusted_proxy() {
        let proxies = crate::config::parse_trusted_proxies("127.0.0.1, 10.0.0.0/8").unwrap();
        let at = |peer: &str, forwarded: &[&str], trusted: &[IpNet]| {
            let forwarded: Vec<String> = forwarded.iter().map(|value| value.to_string()).collect();
            forwarded_client(peer.parse().unwrap(), &forwarded, trusted).to_string()
        };
        // No trusted proxies configured: the header is ignored.
        assert_eq!(at("127.0.0.1", &["203.0.113.7"], &[]), "127.0.0.1");
        // A peer that is not a trusted proxy: ignored too.
        assert_eq!(at("198.51.100.1", &["203.0.113.7"], &proxies), "198.51.100.1");
        // From a trusted proxy: the rightmost hop that is not a trusted proxy.
        assert_eq!(at("127.0.0.1", &["203.0.113.7"], &proxies), "203.0.113.7");
        assert_eq!(
            at("127.0.0.1", &["6.6.6.6, 203.0.113.7, 10.1.2.3"], &proxies),
            "203.0.113.7",
            "a forged hop left of the client is never believed"
        );
        assert_eq!(
            at("127.0.0.1", &["6.6.6.6", "203.0.113.7"], &proxies),
            "203.0.113.7"
        );
        assert_eq!(at("127.0.0.1", &["[2001:db8::7]:443"], &proxies), "2001:db8::7");
        assert_eq!(at("127.0.0.1", &["::ffff:203.0.113.7"], &proxies), "203.0.113.7");
        // Garbage where a proxy's hop should be: the last vouched-for address.
        assert_eq!(at("127.0.0.1", &["203.0.113.7, junk"], &proxies), "127.0.0.1");
        assert_eq!(at("127.0.0.1", &["junk, 10.1.2.3"], &proxies), "10.1.2.3");
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(at("127.0.0.1", &[], &proxies), "127.0.0.1");
        assert_eq!(at("::ffff:127.0.0.1", &["203.0.113.7"], &proxies), "203.0.113.7");
    }

    /// Every route the app registers has a rule, and every rule names a real route — so a
    /// new route cannot be added without deciding who may use it.
    #[test]
    fn every_registered_route_has_exactly_one_rule() {
        let sources = [include_str!("mod.rs"), include_str!("../api/mod.rs")];
        let registered: Vec<(String, String)> = sources
            .iter()
            .flat_map(|source| registered_routes(source))
            .collect();
        assert!(
            registered.len() >= 10,
            "found the route registrations: {registered:?}"
        );
        for (method, path) in &registered {
            let rules = RULES
                .iter()
                .filter(|rule| rule.method == method && rule.path == path)
                .count();
            assert_eq!(rules, 1, "{method} {path} needs exactly one rule in RULES");
        }
        for rule in RULES {
            assert!(
                registered
                    .iter()
                    .any(|(method, path)| method == rule.method && path == rule.path),
                "rule {} {} names no registered route",
                rule.method,
                rule.path
            );
        }
    }
}
