//! The customer pages of the dashboard: list and export, detail, create and edit, and the
//! actions on a customer. Handlers are thin: they parse the request, call
//! `domain::customers` / `domain::referral_links`, and render.

mod actions;
pub mod bulk;
mod detail;
mod elsewhere;
pub mod export;
mod form;
mod list;

pub use actions::{add_link, approve, change_referrer, delete, delete_link, erase, restore, unapprove};
pub use detail::show;
pub use export::export_csv;
pub use form::{create, edit_form, new_form, update};
pub use list::index;

use actix_web::web;

use crate::db;
use crate::domain::customers::{self, Customer};
use crate::error::Error;
use crate::AppState;

/// `/customers/{key}` and the routes below it.
#[derive(serde::Deserialize)]
pub struct KeyPath {
    key: String,
}

/// The customer of the current program with this key.
async fn load(state: &web::Data<AppState>, program_id: i64, key: &str) -> Result<Customer, Error> {
    let key = key.to_string();
    db::run(&state.pool, move |conn| {
        customers::find_by_key(conn, program_id, &key)
    })
    .await
}

/// Where a customer's page is.
fn detail_path(key: &str) -> String {
    format!("/customers/{key}")
}
