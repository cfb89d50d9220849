//! Bad input never reaches a 500: generated junk at every dashboard route (signed in as an
//! admin, with a valid CSRF token) and every `/v1` endpoint (with a valid token).
//!
//! Each property runs against one server. For every case it checks that the answer is
//! below 500, that a 4xx carries a message a person or client can read, that a refused
//! request changed nothing in the database, and that no HTML page (the answer itself, and
//! the pages showing what an accepted request stored) contains one of the injected
//! fragments unescaped.
//!
//! proptest's runner is synchronous: it runs on a blocking thread and drives each case's
//! async requests with the test runtime's handle.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::Text;
use macro_rules_attribute::apply;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use referdesk::db::schema::{customers, invites, mail_outbox, programs, team_members};
use referdesk::domain::team::Role;
use referdesk::routes::{self, Access};

use crate::helpers::{csrf_in, TestApp};
use crate::integration_test;

/// Cases per property; `REFERDESK_FUZZ_CASES` overrides it (e.g. for a longer soak).
const DEFAULT_CASES: u32 = 500;

fn cases() -> u32 {
    std::env::var("REFERDESK_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

// --- what is thrown ----------------------------------------------------------------------

/// Fragments that must never come back unescaped in HTML.
const INJECTIONS: &[&str] = &[
    "<script>alert('rd-xss')</script>",
    "<img src=x onerror=alert('rd-xss')>",
    "\"><svg onload=alert('rd-xss')>",
    "' onmouseover='alert(1)' x='",
    "</textarea><script>alert('rd-xss')</script>",
];

/// What an unescaped injection looks like in a page.
const UNESCAPED: &[&str] = &[
    "<script>alert(",
    "<img src=x onerror",
    "<svg onload",
    "' onmouseover='",
];

const WORDS: &[&str] = &[
    "",
    " ",
    "a",
    "Ada",
    "ada@example.com",
    "ADA@EXAMPLE.COM",
    "alpha",
    "beta",
    "gone",
    "new",
    "admin",
    "viewer",
    "support",
    "credit",
    "debit",
    "USD",
    "EUR",
    "usd",
    "points",
    "on",
    "true",
    "false",
    "1",
    "0",
    "-1",
    "link",
    "set",
    "password",
    "10",
    "0.01",
    "12.345",
    "1000000",
    "1000000.01",
    "-5",
    "1e3",
    "1e309",
    "NaN",
    "Infinity",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "99999999999999999999999999999.99",
    "0x10",
    "+5",
    "1,5",
    "\u{663}",
    "1990-01-01",
    "1990-02-30",
    "2999-01-01",
    "0000-00-00",
    "1899-12-31",
    "{{ 7*7 }}",
    "{% raw %}",
    "${jndi:ldap://x}",
    "' OR '1'='1",
    "'; DROP TABLE customers; --",
    "\\",
    "%",
    "_",
    "%_%",
    "\"",
    "''",
    "\u{202E}gnp.exe\u{200F}",
    "\u{200B}\u{FEFF}",
    "\u{1F469}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{1F389}",
    "e\u{301}\u{308}\u{20DD}",
    "Zalgo\u{335}\u{322}\u{316}",
    "\0",
    "a\0b",
    "\r\nSet-Cookie: x=1",
    "\t",
    "http://example.com/",
    "https://example.com/landing",
    "ftp://x",
    "../../etc/passwd",
    "/customers",
    "//evil.example",
    "%00",
    "%FF",
    "ref",
    "summer-sale",
    "has space",
    "https://example.com/?a=1&b=2",
    "correct horse battery",
];

/// Repeated to make long strings.
const PIECES: &[&str] = &[
    "a",
    "\u{e9}",
    "\u{1F600}",
    "<script>alert('rd-xss')</script>",
    "\0",
];
const LENGTHS: &[usize] = &[201, 1001, 70_000, 300_000, 1 << 20];

fn text_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        8 => select(WORDS).prop_map(|word| word.as_bytes().to_vec()),
        3 => select(INJECTIONS).prop_map(|word| word.as_bytes().to_vec()),
        3 => "[a-z]{1,10}@[a-z]{1,6}\\.example".prop_map(String::into_bytes),
        2 => vec(any::<char>(), 0..16).prop_map(|chars| chars.into_iter().collect::<String>().into_bytes()),
        1 => vec(any::<u8>(), 0..16),
        1 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        1 => any::<f64>().prop_map(|n| n.to_string().into_bytes()),
        1 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string().into_bytes()),
        2 => (select(WORDS), select(INJECTIONS)).prop_map(|(a, b)| format!("{a}{b}").into_bytes()),
        1 => (select(PIECES), select(LENGTHS)).prop_map(|(piece, length)| {
            piece.repeat(length / piece.len().max(1) + 1).into_bytes()
        }),
    ]
    .boxed()
}

/// Form field names a route reads, so that generated forms reach its handler's logic.
fn form_fields(pattern: &str) -> &'static [&'static str] {
    match pattern {
        "/login" => &["email", "password", "next"],
        "/setup" => &["token", "email", "name", "password", "password_confirmation"],
        "/program" => &["program", "next"],
        "/customers" | "/customers/{key}/edit" => &[
            "email",
            "name",
            "surname",
            "key",
            "id",
            "metadata.date_of_birth",
            "referring_customer",
            "custom_fields[0][key]",
            "custom_fields[0][value]",
            "custom_fields[1][key]",
            "custom_fields[99999999999999999999][value]",
        ],
        "/customers/{key}/referrer" => &["referring_customer"],
        "/customers/{key}/links" => &["code"],
        "/customers/{key}/credit" => &[
            "kind",
            "amount",
            "is_currency",
            "currency",
            "unit_name",
            "note",
            "form_token",
        ],
        "/customers/{key}/invite" | "/invites/new" => &[
            "email",
            "name",
            "personalization[0][key]",
            "personalization[0][value]",
            "personalization[1][key]",
            "personalization[-1][value]",
        ],
        "/invites/{id}/retry" => &["next"],
        "/api-tokens" => &["name"],
        "/team" => &["email", "name", "role", "password_mode", "password"],
        "/team/{id}/role" => &["role"],
        "/team/{id}/password" => &["mode", "password", "password_confirmation"],
        "/set-password" => &["token", "password", "password_confirmation"],
        "/profile" => &[
            "name",
            "current_password",
            "new_password",
            "password_confirmation",
        ],
        "/programs" | "/programs/{id}/edit" => &[
            "name",
            "slug",
            "referral_base_url",
            "link_param",
            "require_approval",
        ],
        "/customers/{key}/erase" => &["confirm"],
        _ => &["x"],
    }
}

const QUERY_NAMES: &[&str] = &[
    "q",
    "status",
    "approved",
    "refer_status",
    "sort",
    "dir",
    "page",
    "per_page",
    "limit",
    "referrals_page",
    "ledger_page",
    "next",
    "token",
    "actor",
    "member",
    "action",
    "customer",
    "from",
    "to",
    "email",
    "key",
    "id",
    "signed_out",
];

const RAW_QUERIES: &[&str] = &[
    "%",
    "%zz",
    "%FF%FE",
    "a=1&a=2&a=%00",
    "&&&",
    "=",
    "page=-1",
    "page=99999999999999999999",
    "page=1&page=x",
    "limit=0",
    "limit=101",
    "limit=1e2",
    "per_page=-5",
    "sort=;DROP",
    "q=%25%5F",
    "from=2020-13-45&to=x",
    "referrals_page=-9223372036854775808",
    "ledger_page=9223372036854775807",
    "status[]=1",
];

const API_FIELDS: &[&str] = &[
    "id",
    "key",
    "email",
    "name",
    "surname",
    "metadata",
    "custom_fields",
    "referring_customer",
    "update",
    "amount",
    "amount_units",
    "is_currency",
    "note",
    "personalization",
    "date_of_birth",
    "message",
];

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1.5",
    "10",
    "25.50",
    "1e999",
    "-1e999",
    "123456789012345678901234567890",
    "0.0001",
    "1000000",
    "1000000.01",
    "-0",
    "9007199254740993",
    "1E2",
];

fn encode(bytes: &[u8]) -> String {
    url::form_urlencoded::byte_serialize(bytes).collect()
}

fn query() -> BoxedStrategy<String> {
    let pairs = vec(
        (
            prop_oneof![4 => select(QUERY_NAMES).prop_map(|name| name.as_bytes().to_vec()), 1 => text_bytes()],
            text_bytes(),
        ),
        1..5,
    )
    .prop_map(|pairs| {
        pairs
            .iter()
            // Keep generated query strings below the HTTP layer's header limit; the
            // huge ones are a case of their own below.
            .map(|(name, value)| {
                format!(
                    "{}={}",
                    encode(&name[..name.len().min(200)]),
                    encode(&value[..value.len().min(2000)])
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    prop_oneof![
        3 => Just(String::new()),
        4 => pairs,
        2 => select(RAW_QUERIES).prop_map(str::to_string),
        1 => Just(format!("q={}", "a".repeat(6000))),
    ]
    .boxed()
}

/// A path segment: a known value (so handlers find something) or junk.
fn segment(known: Vec<String>) -> BoxedStrategy<String> {
    let junk = prop_oneof![
        2 => select(vec![
            "0", "-1", "999999", "9223372036854775807", "9223372036854775808", "1.5", "abc", "%00", "%FF",
            "%2e%2e%2fCargo.toml", "..%2F..%2FCargo.toml", "%E2%80%AE", "a%20b", "new",
        ])
        .prop_map(str::to_string),
        1 => text_bytes().prop_map(|bytes| encode(&bytes[..bytes.len().min(3000)])),
    ];
    if known.is_empty() {
        junk.boxed()
    } else {
        prop_oneof![3 => select(known), 1 => junk].boxed()
    }
}

/// Values for each path parameter, by name.
#[derive(Clone, Default)]
struct Known {
    params: BTreeMap<&'static str, Vec<String>>,
}

impl Known {
    fn path(&self, pattern: &'static str) -> BoxedStrategy<String> {
        let mut parts: Vec<BoxedStrategy<String>> = Vec::new();
        for piece in pattern.split('/').skip(1) {
            if let Some(name) = piece.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')) {
                let known = self.params.get(name).cloned().unwrap_or_default();
                parts.push(segment(known));
            } else {
                parts.push(Just(piece.to_string()).boxed());
            }
        }
        parts.prop_map(|pieces| format!("/{}", pieces.join("/"))).boxed()
    }
}

// --- one case ----------------------------------------------------------------------------

#[derive(Clone)]
enum Body {
    Empty,
    Form(Vec<(Vec<u8>, Vec<u8>)>),
    Raw(Vec<u8>),
    Json(String),
}

#[derive(Clone, Copy, Debug)]
enum CsrfMode {
    InBody,
    InHeader,
    Missing,
}

#[derive(Clone)]
struct Case {
    method: &'static str,
    pattern: &'static str,
    path: String,
    query: String,
    body: Body,
    csrf: CsrfMode,
    content_type: Option<&'static str>,
    idempotency_key: Option<Vec<u8>>,
}

fn short(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).to_string();
    if bytes.len() > 120 {
        format!("{text:?}… ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => write!(f, "no body"),
            Body::Form(pairs) => {
                write!(f, "form [")?;
                for (name, value) in pairs {
                    write!(f, "{}={}, ", short(name), short(value))?;
                }
                write!(f, "]")
            }
            Body::Raw(bytes) => write!(f, "raw {}", short(bytes)),
            Body::Json(text) => write!(f, "json {}", short(text.as_bytes())),
        }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (route {}) query={} csrf={:?} content-type={:?}",
            self.method,
            short(self.path.as_bytes()),
            self.pattern,
            short(self.query.as_bytes()),
            self.csrf,
            self.content_type
        )?;
        write!(f, " {:?}", self.body)?;
        if let Some(key) = &self.idempotency_key {
            write!(f, " idempotency-key={}", short(key))?;
        }
        Ok(())
    }
}

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/x-www-form-urlencoded"),
    Some("application/json"),
    Some("text/plain; charset=latin1"),
    Some("multipart/form-data; boundary=x"),
    Some("application/x-www-form-urlencoded; charset=utf-16"),
];

fn dashboard_body(pattern: &'static str) -> BoxedStrategy<(Body, CsrfMode, Option<&'static str>)> {
    let names = form_fields(pattern);
    let name = prop_oneof![
        6 => select(names).prop_map(|name| name.as_bytes().to_vec()),
        1 => Just(b"csrf_token".to_vec()),
        1 => text_bytes(),
    ];
    let form = (vec((name, text_bytes()), 0..8), any::<bool>()).prop_map(|(mut pairs, duplicate)| {
        if duplicate {
            if let Some(first) = pairs.first().cloned() {
                pairs.push(first);
            }
        }
        Body::Form(pairs)
    });
    prop_oneof![
        12 => (form, Just(CsrfMode::InBody), Just(None)),
        2 => (
            text_bytes().prop_map(Body::Raw),
            Just(CsrfMode::InHeader),
            select(CONTENT_TYPES)
        ),
        1 => (
            json_object(1).prop_map(Body::Json),
            Just(CsrfMode::InHeader),
            Just(Some("application/json"))
        ),
        1 => (Just(Body::Empty), Just(CsrfMode::InHeader), Just(None)),
        1 => (Just(Body::Form(vec![])), Just(CsrfMode::Missing), Just(None)),
    ]
    .boxed()
}

fn json_leaf() -> BoxedStrategy<String> {
    prop_oneof![
        1 => Just("null".to_string()),
        1 => Just("true".to_string()),
        1 => Just("false".to_string()),
        1 => Just("[]".to_string()),
        1 => Just("{}".to_string()),
        1 => Just("[1,\"a\",null]".to_string()),
        3 => select(NUMBERS).prop_map(str::to_string),
        3 => text_bytes().prop_map(|bytes| {
            serde_json::to_string(&String::from_utf8_lossy(&bytes)).unwrap_or_default()
        }),
    ]
    .boxed()
}

fn json_value(depth: u32) -> BoxedStrategy<String> {
    if depth == 0 {
        json_leaf()
    } else {
        prop_oneof![4 => json_leaf(), 1 => json_object(depth - 1)].boxed()
    }
}

/// A JSON object as text, so that duplicated keys and numbers beyond f64 can be sent.
fn json_object(depth: u32) -> BoxedStrategy<String> {
    let key = prop_oneof![
        6 => select(API_FIELDS).prop_map(str::to_string),
        1 => text_bytes().prop_map(|bytes| String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string()),
    ];
    vec((key, json_value(depth)), 0..8)
        .prop_map(|pairs| {
            let members: Vec<String> = pairs
                .iter()
                .map(|(key, value)| format!("{}:{value}", serde_json::to_string(key).unwrap_or_default()))
                .collect();
            format!("{{{}}}", members.join(","))
        })
        .boxed()
}

fn api_body() -> BoxedStrategy<Body> {
    prop_oneof![
        10 => json_object(2).prop_map(Body::Json),
        1 => text_bytes().prop_map(Body::Raw),
        1 => Just(Body::Empty),
        1 => select(vec!["[]", "1", "\"x\"", "null", "{\"email\":", "{\"a\":1}}", "\u{feff}{}"])
            .prop_map(|text| Body::Json(text.to_string())),
        1 => select(LENGTHS).prop_map(|length| {
            Body::Json(format!("{{\"name\":\"{}\"}}", "x".repeat(length)))
        }),
    ]
    .boxed()
}

fn idempotency_key() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        3 => Just(None),
        2 => any::<u128>().prop_map(|n| Some(uuid::Uuid::from_u128(n).to_string().into_bytes())),
        // Headers beyond the HTTP layer's limit get its bare 431 before the app
        // sees them (checked in `reliability::oversized_requests_are_refused`).
        1 => text_bytes().prop_map(|bytes| Some(bytes[..bytes.len().min(4000)].to_vec())),
        1 => Just(Some(vec![b'k'; 300])),
    ]
    .boxed()
}

type Route = (&'static str, &'static str);

fn dashboard_routes() -> Vec<Route> {
    routes::rules()
        .iter()
        .filter(|rule| !matches!(rule.access, Access::ApiToken) && !rule.path.starts_with("/v1"))
        // Sign-out takes no input; it would only end the session the other cases use.
        .filter(|rule| rule.path != "/logout")
        .map(|rule| (rule.method.as_str(), rule.path))
        .collect()
}

fn api_routes() -> Vec<Route> {
    routes::rules()
        .iter()
        .filter(|rule| rule.path.starts_with("/v1"))
        .map(|rule| (rule.method.as_str(), rule.path))
        .collect()
}

fn dashboard_case(known: Known) -> BoxedStrategy<Case> {
    select(dashboard_routes())
        .prop_flat_map(move |(method, pattern)| {
            let body = if method == "GET" {
                Just((Body::Empty, CsrfMode::Missing, None)).boxed()
            } else {
                dashboard_body(pattern)
            };
            (known.path(pattern), query(), body).prop_map(move |(path, query, (body, csrf, content_type))| {
                Case {
                    method,
                    pattern,
                    path,
                    query,
                    body,
                    csrf,
                    content_type,
                    idempotency_key: None,
                }
            })
        })
        .boxed()
}

fn api_case(known: Known) -> BoxedStrategy<Case> {
    select(api_routes())
        .prop_flat_map(move |(method, pattern)| {
            let body = if method == "GET" || method == "DELETE" {
                prop_oneof![4 => Just(Body::Empty), 1 => api_body()].boxed()
            } else {
                api_body()
            };
            (
                known.path(pattern),
                query(),
                body,
                select(CONTENT_TYPES),
                idempotency_key(),
            )
                .prop_map(move |(path, query, body, content_type, idempotency_key)| Case {
                    method,
                    pattern,
                    path,
                    query,
                    content_type: match body {
                        Body::Json(_) => content_type.or(Some("application/json")),
                        _ => content_type,
                    },
                    body,
                    csrf: CsrfMode::Missing,
                    idempotency_key,
                })
        })
        .boxed()
}

// --- running a case ----------------------------------------------------------------------

/// What must not change when a request is refused. Columns that change by themselves are
/// left out: the mail worker's delivery state, a token's `last_used_at`. Failed sign-ins
/// are recorded on purpose (throttling, audit), so `login_failures`, `sessions` and the
/// `auth.sign_in_failed` events are not compared.
const SNAPSHOT_SQL: &str = "
SELECT 'customers' AS name, md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) AS sum FROM customers t
UNION ALL SELECT 'retired_keys', md5(coalesce(string_agg(t::text, '|' ORDER BY t.program_id, t.key), '')) FROM retired_keys t
UNION ALL SELECT 'referral_links', md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM referral_links t
UNION ALL SELECT 'referral_clicks', md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM referral_clicks t
UNION ALL SELECT 'balance_transactions', md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM balance_transactions t
UNION ALL SELECT 'invites', md5(coalesce(string_agg((t.id, t.program_id, t.customer_id, t.email, t.name, t.personalization, t.created_at)::text, '|' ORDER BY t.id), '')) FROM invites t
UNION ALL SELECT 'mail_outbox', md5(coalesce(string_agg((t.id, t.invite_id, t.recipient, t.subject, t.body_text, t.body_html, t.created_at)::text, '|' ORDER BY t.id), '')) FROM mail_outbox t
UNION ALL SELECT 'team_members', md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM team_members t
UNION ALL SELECT 'programs', md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM programs t
UNION ALL SELECT 'api_tokens', md5(coalesce(string_agg((t.id, t.program_id, t.name, t.token_hash, t.token_prefix, t.created_by, t.revoked_at, t.created_at)::text, '|' ORDER BY t.id), '')) FROM api_tokens t
UNION ALL SELECT 'one_time_tokens', md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM one_time_tokens t
UNION ALL SELECT 'audit_events', md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM audit_events t WHERE t.action <> 'auth.sign_in_failed'
";

#[derive(QueryableByName, PartialEq, Eq, Debug)]
struct TableSum {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    sum: String,
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    location: String,
}

#[derive(Default)]
struct Stats {
    statuses: BTreeMap<u16, usize>,
    by_route: BTreeMap<(u16, &'static str, &'static str), usize>,
    pages_checked: usize,
    accepted_changes: usize,
}

struct Fuzz {
    app: TestApp,
    face: Face,
    token: String,
    csrf: String,
    client: reqwest::Client,
    cases: AtomicUsize,
    stats: Mutex<Stats>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Face {
    Dashboard,
    Api,
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

fn is_html(content_type: &str) -> bool {
    content_type.starts_with("text/html")
}

/// The injected fragment a page shows unescaped, if any.
fn unescaped(body: &str) -> Option<&'static str> {
    UNESCAPED.iter().copied().find(|needle| body.contains(needle))
}

/// A refusal a person can act on: the error page, a message next to a field, or a flash.
fn html_has_message(body: &str) -> bool {
    [
        "class=\"error",
        "flash-error",
        "error-code",
        "class=\"small error",
    ]
    .iter()
    .any(|marker| body.contains(marker))
}

impl Fuzz {
    fn snapshot(&self) -> Vec<TableSum> {
        diesel::sql_query(SNAPSHOT_SQL)
            .load(&mut self.app.conn())
            .expect("database snapshot")
    }

    async fn send(&self, case: &Case) -> Result<Answer, String> {
        let mut url = format!("{}{}", self.app.address, case.path);
        if !case.query.is_empty() {
            url.push('?');
            url.push_str(&case.query);
        }
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
        let client = match self.face {
            Face::Dashboard => &self.app.browser.client,
            Face::Api => &self.client,
        };
        let mut request = client.request(method, &url);
        if self.face == Face::Api {
            request = request.bearer_auth(&self.token);
        }
        if matches!(case.csrf, CsrfMode::InHeader) {
            request = request.header("x-csrf-token", &self.csrf);
        }
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(key) = &case.idempotency_key {
            if let Ok(value) = reqwest::header::HeaderValue::from_bytes(key) {
                request = request.header("idempotency-key", value);
            }
        }
        request = match &case.body {
            Body::Empty => request,
            Body::Form(pairs) => {
                let mut encoded: Vec<String> = pairs
                    .iter()
                    .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
                    .collect();
                if matches!(case.csrf, CsrfMode::InBody) {
                    encoded.push(format!("csrf_token={}", encode(self.csrf.as_bytes())));
                }
                if case.content_type.is_none() {
                    request = request.header("content-type", "application/x-www-form-urlencoded");
                }
                request.body(encoded.join("&"))
            }
            Body::Raw(bytes) => request.body(bytes.clone()),
            Body::Json(text) => request.body(text.clone()),
        };
        let response = request.send().await.map_err(|error| {
            let error = format!("{error:?}");
            format!("no answer: {}", &error[..error.len().min(400)])
        })?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let content_type = header("content-type");
        let location = header("location");
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("body: {error}"))?
            .to_vec();
        Ok(Answer {
            status,
            content_type,
            body,
            location,
        })
    }

    async fn run_case(&self, case: Case) -> Result<(), TestCaseError> {
        self.cases.fetch_add(1, Ordering::Relaxed);
        let before = self.snapshot();
        let answer = self.send(&case).await.map_err(fail)?;
        self.stats
            .lock()
            .unwrap()
            .statuses
            .entry(answer.status)
            .and_modify(|n| *n += 1)
            .or_insert(1);
        *self
            .stats
            .lock()
            .unwrap()
            .by_route
            .entry((answer.status, case.method, case.pattern))
            .or_default() += 1;
        let text = String::from_utf8_lossy(&answer.body);
        if answer.status >= 500 {
            return Err(fail(format!(
                "{} answered {}: {}",
                case.pattern,
                answer.status,
                &text[..text.len().min(500)]
            )));
        }
        if self.face == Face::Api && answer.content_type != "application/json" {
            return Err(fail(format!(
                "an API answer {} with content type {:?}",
                answer.status, answer.content_type
            )));
        }
        if is_html(&answer.content_type) {
            if let Some(needle) = unescaped(&text) {
                return Err(fail(format!("the answer shows {needle:?} unescaped")));
            }
        }
        if (400..500).contains(&answer.status) {
            self.check_message(&answer, &text)?;
            let after = self.snapshot();
            if before != after {
                let changed: Vec<&str> = before
                    .iter()
                    .zip(&after)
                    .filter(|(a, b)| a != b)
                    .map(|(a, _)| a.name.as_str())
                    .collect();
                return Err(fail(format!(
                    "refused with {} but changed {changed:?}",
                    answer.status
                )));
            }
        } else if self.snapshot() != before {
            self.stats.lock().unwrap().accepted_changes += 1;
            self.check_pages(&case, &answer).await?;
        }
        Ok(())
    }

    fn check_message(&self, answer: &Answer, text: &str) -> Result<(), TestCaseError> {
        let clear = if self.face == Face::Api {
            serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|body| body["message"].as_str().map(|message| !message.trim().is_empty()))
                .unwrap_or(false)
        } else {
            is_html(&answer.content_type) && html_has_message(text)
        };
        if clear {
            Ok(())
        } else {
            Err(fail(format!(
                "a {} without a clear message ({}): {}",
                answer.status,
                answer.content_type,
                &text[..text.len().min(300)]
            )))
        }
    }

    /// Pages that show what a request of this kind stores.
    fn pages_for(&self, case: &Case, answer: &Answer) -> Vec<String> {
        let mut pages = vec!["/".to_string(), "/audit".to_string()];
        let recent: Vec<String> = customers::table
            .order((customers::updated_at.desc(), customers::id.desc()))
            .select(customers::key)
            .limit(2)
            .load(&mut self.app.conn())
            .unwrap_or_default();
        let family = case.pattern.split('/').nth(1).unwrap_or("");
        match family {
            "customers" | "v1" | "r" => {
                pages.push("/customers".into());
                for key in &recent {
                    pages.push(format!("/customers/{key}"));
                    pages.push(format!("/customers/{key}/edit"));
                    pages.push(format!("/customers/{key}/credit"));
                    pages.push(format!("/customers/{key}/invite"));
                }
                pages.push("/invites".into());
            }
            "invites" => pages.push("/invites".into()),
            "team" | "set-password" | "setup" => pages.push("/team".into()),
            "programs" | "program" => pages.push("/programs".into()),
            "api-tokens" => pages.push("/api-tokens".into()),
            "profile" => pages.push("/profile".into()),
            _ => {}
        }
        if answer.location.starts_with('/') && !answer.location.starts_with("//") {
            pages.push(answer.location.clone());
        }
        pages
    }

    async fn check_pages(&self, case: &Case, answer: &Answer) -> Result<(), TestCaseError> {
        for page in self.pages_for(case, answer) {
            self.check_page(&page).await?;
        }
        Ok(())
    }

    async fn check_page(&self, page: &str) -> Result<(), TestCaseError> {
        let response = self
            .app
            .browser
            .client
            .get(self.app.browser.url(page))
            .send()
            .await
            .map_err(|error| fail(format!("GET {page}: {error}")))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.text().await.unwrap_or_default();
        self.stats.lock().unwrap().pages_checked += 1;
        if status >= 500 {
            return Err(fail(format!("GET {page} answered {status}")));
        }
        if is_html(&content_type) {
            if let Some(needle) = unescaped(&body) {
                return Err(fail(format!("GET {page} shows {needle:?} unescaped")));
            }
        }
        Ok(())
    }

    /// Every page showing stored text, for every customer.
    async fn crawl_everything(&self) -> Result<usize, TestCaseError> {
        let mut pages: Vec<String> = [
            "/",
            "/customers",
            "/customers?status=all",
            "/customers?status=deleted",
            "/invites",
            "/team",
            "/programs",
            "/api-tokens",
            "/audit",
            "/profile",
            "/api",
        ]
        .iter()
        .map(|page| page.to_string())
        .collect();
        let mut conn = self.app.conn();
        let keys: Vec<String> = customers::table
            .select(customers::key)
            .load(&mut conn)
            .unwrap_or_default();
        for key in keys {
            for suffix in ["", "/edit", "/credit", "/invite"] {
                pages.push(format!("/customers/{key}{suffix}"));
            }
        }
        let program_ids: Vec<i64> = programs::table
            .select(programs::id)
            .load(&mut conn)
            .unwrap_or_default();
        for id in program_ids {
            pages.push(format!("/programs/{id}/edit"));
        }
        let member_ids: Vec<i64> = team_members::table
            .select(team_members::id)
            .load(&mut conn)
            .unwrap_or_default();
        for id in member_ids {
            pages.push(format!("/team/{id}/password"));
        }
        // The invite emails are HTML too.
        let bodies: Vec<String> = mail_outbox::table
            .select(mail_outbox::body_html)
            .load(&mut conn)
            .unwrap_or_default();
        for body in &bodies {
            if let Some(needle) = unescaped(body) {
                return Err(fail(format!("an invite email shows {needle:?} unescaped")));
            }
        }
        for page in &pages {
            self.check_page(page).await?;
        }
        Ok(pages.len())
    }
}

/// Fixtures both properties aim at: customers with links, referrals, a deleted one, a
/// failed invite, a second program, other members, a token.
async fn fixtures(app: &TestApp) -> Known {
    use referdesk::domain::customers::{self as domain, CustomerInput, NewCustomer};
    use referdesk::domain::invites::{self as invite_domain, NewInvite};
    use referdesk::domain::programs::{self, ProgramInput};
    use referdesk::domain::{referral_links, tokens, Actor};

    let mut conn = app.conn();
    let actor = Actor::system();
    let program = programs::find_by_slug(&mut conn, "default").unwrap();
    let mut made = Vec::new();
    for (key, referrer) in [("alpha", None), ("beta", Some("alpha")), ("gone", Some("alpha"))] {
        let new = NewCustomer::parse(CustomerInput {
            id: Some(format!("ext-{key}")),
            key: Some(key.into()),
            email: Some(format!("{key}@example.com")),
            name: Some(key.to_uppercase()),
            referrer_key: referrer.map(str::to_string),
            ..Default::default()
        })
        .unwrap();
        made.push(domain::create(&mut conn, &program, &actor, new).unwrap());
    }
    domain::delete(&mut conn, &program, &actor, made[2].id).unwrap();
    let link = referral_links::create(&mut conn, &program, &actor, made[0].id, "alpha-extra").unwrap();
    let invite = invite_domain::create(
        &mut conn,
        &program,
        &actor,
        Some(&made[0]),
        NewInvite::parse("friend@example.com", "Friend", &[]).unwrap(),
    )
    .unwrap();
    diesel::update(invites::table.find(invite.id))
        .set(invites::status.eq("failed"))
        .execute(&mut conn)
        .unwrap();
    let second = programs::create(
        &mut conn,
        &actor,
        ProgramInput::parse("Second", "second", "https://example.com/second", "ref", false).unwrap(),
    )
    .unwrap();
    let victim = app.create_member("victim@example.com", Role::Viewer, crate::helpers::PASSWORD);
    let other_admin = app.create_member("other-admin@example.com", Role::Admin, crate::helpers::PASSWORD);
    let (token, _) = tokens::create(&mut conn, program.id, "fuzz fixture", &actor).unwrap();

    let mut known = Known::default();
    let keys: Vec<String> = made.iter().map(|customer| customer.key.clone()).collect();
    known.params.insert("key", keys.clone());
    known.params.insert("link_id", vec![link.id.to_string()]);
    known.params.insert(
        "ident",
        made.iter()
            .flat_map(|customer| {
                [
                    customer.external_id.clone(),
                    customer.key.clone(),
                    customer.email.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    known
        .params
        .insert("file", vec!["style.css".into(), "app.js".into()]);
    known
        .params
        .insert("program", vec!["default".into(), "second".into()]);
    known
        .params
        .insert("code", vec!["alpha".into(), "alpha-extra".into(), "gone".into()]);
    known.params.insert(
        "id",
        vec![
            invite.id.to_string(),
            second.id.to_string(),
            program.id.to_string(),
            victim.to_string(),
            other_admin.to_string(),
            token.id.to_string(),
        ],
    );
    known
}

async fn run_property(face: Face) {
    let started = Instant::now();
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let known = fixtures(&app).await;
    let token = app.create_token("default");
    let (_, page) = app.browser.get_html("/customers").await;
    let csrf = csrf_in(&page).expect("a CSRF token on the customer list");
    let fuzz = Arc::new(Fuzz {
        app,
        face,
        token,
        csrf,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        cases: AtomicUsize::new(0),
        stats: Mutex::new(Stats::default()),
    });
    let cases = cases();
    let handle = tokio::runtime::Handle::current();
    let runner_fuzz = fuzz.clone();
    let result = tokio::task::spawn_blocking(move || {
        let strategy = match face {
            Face::Dashboard => dashboard_case(known),
            Face::Api => api_case(known),
        };
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 200,
            ..Config::default()
        });
        // Described here: the error holds the whole (large) case.
        runner
            .run(&strategy, |case| handle.block_on(runner_fuzz.run_case(case)))
            .map_err(|error| match error {
                TestError::Fail(reason, case) => {
                    let reason = reason.to_string();
                    format!(
                        "failed: {}\nminimal case: {case:?}",
                        &reason[..reason.len().min(1500)]
                    )
                }
                TestError::Abort(reason) => format!("aborted: {reason}"),
            })
    })
    .await
    .expect("the property's thread");
    if let Err(description) = result {
        panic!("{face:?} fuzz {description}");
    }
    let crawled = fuzz.crawl_everything().await;
    if let Err(error) = crawled {
        panic!("{face:?} fuzz, final crawl: {error}");
    }
    // The admin's session survived every case, so every case reached the handlers.
    let (status, _) = fuzz.app.browser.get_html("/customers").await;
    assert_eq!(status, 200, "the admin is still signed in");
    let stats = fuzz.stats.lock().unwrap();
    if std::env::var("REFERDESK_FUZZ_DEBUG").is_ok() {
        for (key, n) in &stats.by_route {
            println!("  {key:?}: {n}");
        }
    }
    let ran = fuzz.cases.load(Ordering::Relaxed);
    println!(
        "fuzz {face:?}: {cases} cases ({ran} requests with shrinking), answers {:?}, {} accepted changes, {} pages checked, {:.1?}",
        stats.statuses,
        stats.accepted_changes,
        stats.pages_checked,
        started.elapsed()
    );
    // The junk reached the handlers' logic, not only the gates in front of them.
    let count = |range: std::ops::Range<u16>| {
        stats
            .statuses
            .iter()
            .filter(|(status, _)| range.contains(status))
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    assert!(
        count(200..400) * 10 >= cases as usize,
        "too few accepted cases: {:?}",
        stats.statuses
    );
    assert!(
        stats.statuses.get(&422).copied().unwrap_or(0) * 50 >= cases as usize,
        "too few validation refusals: {:?}",
        stats.statuses
    );
}

#[apply(integration_test!)]
async fn junk_at_every_dashboard_route_never_gets_a_500() {
    run_property(Face::Dashboard).await;
}

#[apply(integration_test!)]
async fn junk_at_every_api_endpoint_never_gets_a_500() {
    run_property(Face::Api).await;
}
