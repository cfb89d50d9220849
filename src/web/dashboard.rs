//! `GET /`: the program at a glance.

use actix_web::{web, HttpResponse};
use askama::Template;

use crate::db;
use crate::domain::dashboard::{self, Totals};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::render;
use crate::AppState;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    page: Page,
    totals: Totals,
}

pub async fn show(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let totals = db::run(&state.pool, move |conn| dashboard::totals(conn, program_id)).await?;
    render(&DashboardPage { page, totals })
}
