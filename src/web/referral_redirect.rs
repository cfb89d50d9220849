//! `GET /r/{program}/{code}`: the public referral link. Counts a click and sends the
//! visitor on (302) to the program's landing page with the referrer's key.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db;
use crate::domain::referral_links;
use crate::error::Error;
use crate::web::render_status;
use crate::AppState;

#[derive(Deserialize)]
pub struct LinkPath {
    program: String,
    code: String,
}

/// Shown to visitors (not team members) who follow a link that leads nowhere.
#[derive(Template)]
#[template(path = "customers/link_not_found.html")]
struct LinkNotFound;

pub async fn follow(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<LinkPath>,
) -> Result<HttpResponse, Error> {
    let LinkPath { program, code } = path.into_inner();
    let referer = req
        .headers()
        .get(header::REFERER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    // A GET that writes: on the primary whatever the replicas.
    let target = db::run_write(&state.pool, move |conn| {
        referral_links::record_click(conn, &program, &code, referer.as_deref())
    })
    .await;
    match target {
        Ok(target) => Ok(HttpResponse::Found()
            .insert_header((header::LOCATION, target))
            // Every visit must reach us to be counted.
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish()),
        Err(Error::NotFound) => render_status(StatusCode::NOT_FOUND, &LinkNotFound),
        Err(other) => Err(other),
    }
}
