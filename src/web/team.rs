//! Team management pages (admins only).

use actix_web::{web, HttpResponse};
use askama::Template;

use crate::db;
use crate::domain::team::{self, Member};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::render;
use crate::AppState;

#[derive(Template)]
#[template(path = "team/index.html")]
struct TeamPage {
    page: Page,
    members: Vec<Member>,
}

pub async fn index(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    let members = db::run(&state.pool, team::list_members).await?;
    render(&TeamPage { page, members })
}
