//! CSRF protection for every state-changing dashboard request.
//!
//! Each session carries a random token; every form includes it as `csrf_token` (or a
//! script sends it as `X-CSRF-Token`). This middleware checks it before any handler runs,
//! so a new form cannot forget the check. A request whose `Origin` names another site is
//! refused outright. `/v1` is token-authenticated, carries no cookies, and is exempt.

use actix_session::{Session, SessionExt};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::HttpMessage;
use futures_util::StreamExt;

use crate::domain::random_token;
use crate::error::Error;

pub const SESSION_KEY: &str = "csrf";
pub const FIELD: &str = "csrf_token";
const HEADER: &str = "x-csrf-token";
/// Forms are small; anything larger is refused before it is buffered.
pub const MAX_FORM_BYTES: usize = 256 * 1024;

/// The session's CSRF token, created on first use.
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
    let expected = req.get_session().get::<String>(SESSION_KEY).ok().flatten();

    let from_header = req
        .headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let (sent, body) = match from_header {
        Some(sent) => (Some(sent), None),
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
