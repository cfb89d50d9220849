//! What every dashboard page needs besides its own data: the signed-in member, the current
//! program and the switcher's list, the CSRF token for forms, and flash messages.

use std::future::{ready, Ready};

use actix_session::{Session, SessionExt};
use actix_web::{dev::Payload, FromRequest, HttpMessage, HttpRequest};
use serde::{Deserialize, Serialize};

use crate::client_address::client_address;
use crate::domain::programs::Program;
use crate::domain::team::{Member, Role};
use crate::domain::Actor;
use crate::error::Error;
use crate::web::access::SignedIn;
use crate::web::csrf;

const FLASH_KEY: &str = "flash";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flash {
    /// `success`, `error` or `info`; used as a CSS modifier.
    pub kind: String,
    pub message: String,
}

/// Queues a message for the next page this session sees (after a redirect).
pub fn flash(session: &Session, kind: &str, message: impl Into<String>) {
    let mut queued: Vec<Flash> = session.get(FLASH_KEY).ok().flatten().unwrap_or_default();
    queued.push(Flash {
        kind: kind.to_string(),
        message: message.into(),
    });
    let _ = session.insert(FLASH_KEY, queued);
}

/// The pending flash messages, removed from the session. A session without any is left
/// untouched: removing a missing key would still mark it changed, and every page view
/// would then rewrite the session row (a write per request, and 8 tabs queueing on it).
fn take_flashes(session: &Session) -> Vec<Flash> {
    if !session.contains_key(FLASH_KEY) {
        return Vec::new();
    }
    session
        .remove_as::<Vec<Flash>>(FLASH_KEY)
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// The context of a signed-in page. Extracting it consumes pending flash messages.
pub struct Page {
    pub member: Member,
    pub program: Program,
    pub programs: Vec<Program>,
    pub csrf: String,
    pub flashes: Vec<Flash>,
    pub path: String,
    /// Drawn as the answer to a POST (a refused form, a confirmation step): app.js then
    /// makes its history entry the form's address, so Back never asks to resubmit it.
    pub posted: bool,
    pub address: String,
    pub session: Session,
}

impl Page {
    pub fn actor(&self) -> Actor {
        self.member.actor(Some(self.address.clone()))
    }

    pub fn can(&self, role: Role) -> bool {
        self.member.can(role)
    }

    pub fn is_admin(&self) -> bool {
        self.can(Role::Admin)
    }

    pub fn is_support(&self) -> bool {
        self.can(Role::Support)
    }

    pub fn flash(&self, kind: &str, message: impl Into<String>) {
        flash(&self.session, kind, message);
    }

    /// For the navigation: is this section the current one?
    pub fn in_section(&self, prefix: &str) -> bool {
        if prefix == "/" {
            self.path == "/"
        } else {
            self.path.starts_with(prefix)
        }
    }
}

impl FromRequest for Page {
    type Error = Error;
    type Future = Ready<Result<Page, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let signed_in = req.extensions().get::<SignedIn>().cloned();
        ready(match signed_in {
            None => Err(Error::Unauthenticated),
            Some(SignedIn {
                member,
                program,
                programs,
            }) => {
                let session = req.get_session();
                // Only a page that is shown takes the queued messages; a POST handler that
                // redirects leaves them for the page it redirects to.
                let flashes = if req.method() == actix_web::http::Method::GET {
                    take_flashes(&session)
                } else {
                    Vec::new()
                };
                Ok(Page {
                    member,
                    program,
                    programs,
                    csrf: csrf::token(&session),
                    flashes,
                    path: req.path().to_string(),
                    posted: req.method() == actix_web::http::Method::POST,
                    address: client_address(req),
                    session,
                })
            }
        })
    }
}

/// The context of a page anyone may see (login, setup, set-password links). Its CSRF token
/// needs no session row for a visitor who is not signed in (`csrf::public_token`).
pub struct PublicPage {
    pub csrf: String,
    pub address: String,
    pub session: Session,
}

impl FromRequest for PublicPage {
    type Error = Error;
    type Future = Ready<Result<PublicPage, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req.get_session();
        ready(Ok(PublicPage {
            csrf: csrf::public_token(req),
            address: client_address(req),
            session,
        }))
    }
}
