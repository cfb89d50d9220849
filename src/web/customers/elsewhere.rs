//! A customer's address opened while another program is selected (a link from a colleague,
//! a bookmark): rather than a bare 404, the page says which program holds the customer and
//! offers to switch to it.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use askama::Template;

use crate::db;
use crate::domain::customers;
use crate::domain::programs::Program;
use crate::error::Error;
use crate::web::context::Page;
use crate::web::render_status;
use crate::AppState;

#[derive(Template)]
#[template(path = "customers/elsewhere.html")]
struct ElsewherePage {
    page: Page,
    key: String,
    /// The programs the member may switch to that hold a customer with this key.
    holders: Vec<Program>,
}

/// 404 naming the programs that hold a customer with `key`; the plain 404 when none does.
pub(super) async fn show(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    key: &str,
) -> Result<HttpResponse, Error> {
    // The handler's own `Page` went into the page it could not draw.
    let page = Page::from_request(req, &mut Payload::None).into_inner()?;
    let others: Vec<i64> = page
        .programs
        .iter()
        .map(|program| program.id)
        .filter(|id| *id != page.program.id)
        .collect();
    if others.is_empty() {
        return Err(Error::NotFound);
    }
    let lookup = key.to_string();
    let held = db::run(&state.pool, move |conn| {
        customers::programs_holding_key(conn, &others, &lookup)
    })
    .await?;
    if held.is_empty() {
        return Err(Error::NotFound);
    }
    let holders = page
        .programs
        .iter()
        .filter(|program| held.contains(&program.id))
        .cloned()
        .collect();
    render_status(
        StatusCode::NOT_FOUND,
        &ElsewherePage {
            page,
            key: key.to_string(),
            holders,
        },
    )
}
