//! CSRF protection for every state-changing request.
//!
//! Every form includes a token as `csrf_token` (or a script sends it as `X-CSRF-Token`; a
//! file upload has it in its action's query string).
//! This middleware checks it before any handler runs, so a new form cannot forget the
//! check. A request whose `Origin` names another site is refused outright. `/v1` is
//! token-authenticated, carries no cookies, and is exempt.
//!
//! Which token is expected depends on who asks:
//! - a signed-in member's session carries a random token (stored with the session);
//! - anyone else (the login, setup and set-password forms) gets a signed double-submit
//!   token: a random value in its own `HttpOnly` cookie, and in the form an HMAC of that
//!   value under the server's secret. Nothing is stored, so an anonymous visitor never
//!   costs a session row, and a token only works with the cookie of the browser it was
//!   issued to.

use actix_session::{Session, SessionExt};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, Key, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut, Data};
use actix_web::{HttpMessage, HttpRequest};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::sessions::MEMBER_ID_KEY;
use crate::error::Error;
use crate::random::random_token;

pub const SESSION_KEY: &str = "csrf";
pub const FIELD: &str = "csrf_token";
const HEADER: &str = "x-csrf-token";
/// Forms are small; anything larger is refused before it is buffered.
pub const MAX_FORM_BYTES: usize = 256 * 1024;
/// The cookie holding the random value that public forms' tokens are bound to.
pub const FORM_COOKIE: &str = "referdesk_form";
const FORM_COOKIE_LENGTH: usize = 43;

/// Makes and checks the tokens of public forms (see the module docs).
#[derive(Clone)]
pub struct FormTokens {
    mac: Hmac<Sha256>,
    secure: bool,
}

impl FormTokens {
    /// `secure` marks the cookie `Secure` (when served over HTTPS).
    pub fn new(key: &Key, secure: bool) -> FormTokens {
        // Its own label, so a form token is never the signature of anything else.
        let mut mac = Hmac::<Sha256>::new_from_slice(key.signing()).expect("HMAC takes any key length");
        mac.update(b"referdesk public form token\0");
        FormTokens { mac, secure }
    }

    fn token_for(&self, cookie_value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(cookie_value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn cookie(&self, value: String) -> Cookie<'static> {
        Cookie::build(FORM_COOKIE, value)
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .finish()
    }
}

/// A form cookie value made during this request, to be set on its response.
#[derive(Clone)]
struct IssuedFormCookie(String);

fn form_cookie_value(req: &HttpRequest) -> Option<String> {
    if let Some(IssuedFormCookie(value)) = req.extensions().get::<IssuedFormCookie>() {
        return Some(value.clone());
    }
    req.cookie(FORM_COOKIE)
        .map(|cookie| cookie.value().to_string())
        .filter(|value| {
            value.len() == FORM_COOKIE_LENGTH && value.bytes().all(|byte| byte.is_ascii_alphanumeric())
        })
}

fn form_tokens(req: &HttpRequest) -> &FormTokens {
    req.app_data::<Data<FormTokens>>()
        .expect("FormTokens are registered")
}

fn is_signed_in(session: &Session) -> bool {
    session.contains_key(MEMBER_ID_KEY)
}

/// The token for a form on a page anyone may see: the session's for a signed-in member,
/// otherwise one bound to this browser's form cookie (set with the response when missing).
/// Never writes the session of a visitor who is not signed in.
pub fn public_token(req: &HttpRequest) -> String {
    let session = req.get_session();
    if is_signed_in(&session) {
        return token(&session);
    }
    let value = form_cookie_value(req).unwrap_or_else(|| {
        let fresh = random_token(FORM_COOKIE_LENGTH);
        req.extensions_mut().insert(IssuedFormCookie(fresh.clone()));
        fresh
    });
    form_tokens(req).token_for(&value)
}

/// The token this request must carry: the session's for a signed-in member, else the one
/// bound to the form cookie it sent.
fn expected_token(req: &HttpRequest) -> Option<String> {
    let session = req.get_session();
    if is_signed_in(&session) {
        return session.get::<String>(SESSION_KEY).ok().flatten();
    }
    form_cookie_value(req).map(|value| form_tokens(req).token_for(&value))
}

/// The session's CSRF token, created on first use. For signed-in sessions only: an
/// anonymous visitor's token comes from [`public_token`].
pub fn token(session: &Session) -> String {
    if let Ok(Some(existing)) = session.get::<String>(SESSION_KEY) {
        return existing;
    }
    let fresh = random_token(43);
    // An insert only fails to serialise, which a String cannot.
    let _ = session.insert(SESSION_KEY, &fresh);
    fresh
}

/// A new token after sign-in, so a token seen before login is useless after it.
pub fn rotate(session: &Session) {
    let _ = session.insert(SESSION_KEY, random_token(43));
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_cross_origin(req: &ServiceRequest) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let host = req.connection_info().host().to_string();
    let origin_host = origin.split("://").nth(1).unwrap_or(origin);
    origin == "null" || !origin_host.eq_ignore_ascii_case(&host)
}

pub async fn protect(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let mut response = check(req, next).await?;
    let issued = response.request().extensions().get::<IssuedFormCookie>().cloned();
    if let Some(IssuedFormCookie(value)) = issued {
        let cookie = form_tokens(response.request()).cookie(value);
        response.response_mut().add_cookie(&cookie)?;
    }
    Ok(response)
}

async fn check(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || req.path().starts_with("/v1/") || req.path() == "/v1" {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    }
    if is_cross_origin(&req) {
        return Ok(refuse(
            req,
            Error::Forbidden("Cross-site requests are not allowed.".into()),
        ));
    }
    let expected = expected_token(req.request());

    let from_header = req
        .headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    // A file upload (`multipart/form-data`) is not read here: its form carries the token
    // in its action's query string instead (`?csrf_token=…`), checked the same way.
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().starts_with("multipart/form-data"));
    let (sent, body) = match from_header {
        Some(sent) => (Some(sent), None),
        None if multipart => (form_field(req.query_string().as_bytes(), FIELD), None),
        None => {
            let body = match read_body(&mut req).await {
                Ok(body) => body,
                Err(error) => return Ok(refuse(req, error)),
            };
            let sent = form_field(&body, FIELD);
            (sent, Some(body))
        }
    };
    let valid = matches!((&expected, &sent), (Some(expected), Some(sent))
        if constant_time_eq(expected.as_bytes(), sent.as_bytes()));
    if !valid {
        tracing::warn!(path = %req.path(), "CSRF check failed");
        return Ok(refuse(
            req,
            Error::Forbidden(
                "This form has expired or was not sent by Referdesk. Go back, reload the page and try again."
                    .into(),
            ),
        ));
    }
    if let Some(body) = body {
        req.set_payload(bytes_payload(body));
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

async fn read_body(req: &mut ServiceRequest) -> Result<Bytes, Error> {
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Error::BadRequest("The request body could not be read.".into()))?;
        if body.len() + chunk.len() > MAX_FORM_BYTES {
            return Err(Error::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded_pairs(body)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn form_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
}

fn bytes_payload(body: Bytes) -> actix_web::dev::Payload {
    let (_, mut payload) = actix_http::h1::Payload::create(true);
    payload.unread_data(body);
    payload.into()
}

fn refuse<B>(req: ServiceRequest, error: Error) -> ServiceResponse<EitherBody<B>> {
    req.into_response(error.html_response()).map_into_right_body()
}
