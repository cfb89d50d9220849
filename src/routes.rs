//! Every route of the application with who may use it, declared together.
//!
//! A route is added only through [`Routes`], whose methods take the path, its [`Access`]
//! and the handler in one call: the same declaration registers the actix resource and
//! gives the access check (`web::access::enforce`) its rule, so a route cannot exist
//! without one. A path the router matches but the table does not know (a service
//! registered some other way) is refused, so the check fails closed.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Responder};

use crate::domain::team::Role;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with the session if there is one (login, setup, assets, the public redirect).
    Public,
    /// Anyone, and never with a session: the request's cookies are dropped before the
    /// session middleware reads the sessions table (`web::sessionless`). For answers that
    /// must not wait on the database (health probes, the API's description).
    Sessionless,
    /// A signed-in member with at least this role.
    Member(Role),
    /// Token-authenticated JSON API; checked by the API's own extractor (`api::ApiCall`).
    ApiToken,
}

impl Access {
    /// Whether requests to the route read the session; API calls never do.
    pub fn uses_session(self) -> bool {
        matches!(self, Access::Public | Access::Member(_))
    }
}

/// Any signed-in member.
pub const VIEWER: Access = Access::Member(Role::Viewer);
/// Support staff and admins.
pub const SUPPORT: Access = Access::Member(Role::Support);
pub const ADMIN: Access = Access::Member(Role::Admin);

/// One route and who may use it. Paths are actix resource patterns, in full (no scopes),
/// as `HttpRequest::match_pattern` reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// The routes being declared: their rules, and their actix routes grouped by path.
#[derive(Default)]
pub struct Routes {
    rules: Vec<Rule>,
    /// One resource per path (in order of first declaration), so a wrong method is a 405
    /// rather than a 404.
    resources: Vec<(&'static str, Vec<actix_web::Route>)>,
}

impl Routes {
    pub fn get<F, Args>(&mut self, path: &'static str, access: Access, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::GET, path, access, web::get().to(handler))
    }

    pub fn post<F, Args>(&mut self, path: &'static str, access: Access, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::POST, path, access, web::post().to(handler))
    }

    pub fn put<F, Args>(&mut self, path: &'static str, access: Access, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::PUT, path, access, web::put().to(handler))
    }

    pub fn delete<F, Args>(&mut self, path: &'static str, access: Access, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::DELETE, path, access, web::delete().to(handler))
    }

    /// Panics on a route declared twice: the second could never be reached, and its rule
    /// would be a lie.
    fn add(
        &mut self,
        method: Method,
        path: &'static str,
        access: Access,
        route: actix_web::Route,
    ) -> &mut Self {
        assert!(
            !self
                .rules
                .iter()
                .any(|rule| rule.method == method && rule.path == path),
            "{method} {path} is declared twice"
        );
        self.rules.push(Rule { method, path, access });
        match self.resources.iter_mut().find(|(known, _)| *known == path) {
            Some((_, routes)) => routes.push(route),
            None => self.resources.push((path, vec![route])),
        }
        self
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The lookup the access check and `web::sessionless` use.
    pub fn table(&self) -> RouteTable {
        let mut by_path: HashMap<&'static str, Vec<(Method, Access)>> = HashMap::new();
        for rule in &self.rules {
            by_path
                .entry(rule.path)
                .or_default()
                .push((rule.method.clone(), rule.access));
        }
        let token_prefixes = self
            .rules
            .iter()
            .filter(|rule| rule.access == Access::ApiToken)
            .filter_map(|rule| rule.path.split('/').nth(1))
            .map(|segment| format!("/{segment}"))
            .collect();
        RouteTable {
            by_path,
            token_prefixes,
        }
    }

    /// Registers every declared route with actix, in the order declared (it matters where
    /// a fixed path and a pattern could both match: the first declared wins).
    pub fn register(self, cfg: &mut web::ServiceConfig) {
        for (path, routes) in self.resources {
            let resource = routes
                .into_iter()
                .fold(web::resource(path), |resource, route| resource.route(route));
            cfg.service(resource);
        }
    }
}

/// What the access check knows of a matched route pattern.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Rule(Access),
    /// The path is declared, but not with this method: the router answers 405.
    OtherMethod,
    /// Nothing declared this path.
    Undeclared,
}

/// The declared rules, by route pattern.
pub struct RouteTable {
    by_path: HashMap<&'static str, Vec<(Method, Access)>>,
    /// The first segment of every token route's path (`/v1`).
    token_prefixes: HashSet<String>,
}

impl RouteTable {
    pub fn lookup(&self, method: &Method, pattern: &str) -> Lookup {
        let Some(rules) = self.by_path.get(pattern) else {
            return Lookup::Undeclared;
        };
        rules
            .iter()
            .find(|(declared, _)| declared == method)
            .map_or(Lookup::OtherMethod, |(_, access)| Lookup::Rule(*access))
    }

    /// Whether a request needs no session: its route pattern (`None` when no route
    /// matched) is declared only with accesses that read none, whatever the method, or
    /// nothing matched under a token route's prefix (the API's own 404).
    pub fn is_sessionless(&self, path: &str, pattern: Option<&str>) -> bool {
        match pattern.and_then(|pattern| self.by_path.get(pattern)) {
            Some(rules) => rules.iter().all(|(_, access)| !access.uses_session()),
            None => self.token_prefixes.iter().any(|prefix| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }),
        }
    }
}

/// The application's routes: the dashboard's, then the API's.
pub fn all() -> Routes {
    let mut routes = Routes::default();
    crate::web::routes(&mut routes);
    crate::api::routes(&mut routes);
    routes
}

/// Every route's rule, for whoever needs the list without a server (the tests walk it).
pub fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| all().rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_answers_for_every_declared_route() {
        let routes = all();
        let table = routes.table();
        assert!(
            routes.rules().len() >= 10,
            "found the routes: {:?}",
            routes.rules()
        );
        for rule in routes.rules() {
            assert_eq!(table.lookup(&rule.method, rule.path), Lookup::Rule(rule.access));
        }
        assert_eq!(table.lookup(&Method::DELETE, "/login"), Lookup::OtherMethod);
        assert_eq!(table.lookup(&Method::GET, "/nowhere"), Lookup::Undeclared);
    }

    /// The token check lives in the API's extractor, which only `/v1` handlers take; and
    /// the API never reads a session (`web::sessionless`).
    #[test]
    fn token_access_is_for_the_api_only() {
        for rule in rules() {
            let api = rule.path.starts_with("/v1/");
            assert!(
                api == (rule.access == Access::ApiToken) || (api && rule.access == Access::Sessionless),
                "{} {} has {:?}",
                rule.method,
                rule.path,
                rule.access
            );
        }
    }

    #[test]
    fn probes_and_the_api_are_sessionless() {
        let table = all().table();
        for path in ["/healthz", "/readyz", "/v1/openapi.json", "/v1/customers/{ident}"] {
            assert!(table.is_sessionless(path, Some(path)), "{path}");
        }
        for path in ["/login", "/", "/static/{file}", "/customers/{key}"] {
            assert!(!table.is_sessionless(path, Some(path)), "{path}");
        }
        // Nothing matched: the API's 404 needs no session, the dashboard's may.
        for path in ["/v1", "/v1/", "/v1/nowhere"] {
            assert!(table.is_sessionless(path, None), "{path}");
        }
        for path in ["/v1x", "/nowhere", "/"] {
            assert!(!table.is_sessionless(path, None), "{path}");
        }
    }

    #[test]
    #[should_panic(expected = "declared twice")]
    fn a_route_cannot_be_declared_twice() {
        async fn handler() -> &'static str {
            ""
        }
        Routes::default()
            .get("/x", VIEWER, handler)
            .post("/x", ADMIN, handler)
            .get("/x", Access::Public, handler);
    }
}
