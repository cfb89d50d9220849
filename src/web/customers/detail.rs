//! `GET /customers/{key}`: everything about one customer.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;

use super::{first, KeyPath};
use crate::db;
use crate::domain::audit::{self, CustomerEvent};
use crate::domain::customers::{self, Customer, ReferrerSummary};
use crate::domain::referral_links::{self, ReferralLink};
use crate::error::{Error, FieldErrors};
use crate::web::context::Page;
use crate::web::paging::{ListUrl, Pager};
use crate::web::render_status;
use crate::AppState;

const REFERRALS_PER_PAGE: i64 = 15;
const ACTIVITY_LIMIT: i64 = 50;

/// What the small forms on the page (change referrer, add link) hold when they come back
/// with a message.
#[derive(Default)]
pub(super) struct InlineForms {
    pub referrer: String,
    pub code: String,
    pub errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "customers/show.html")]
struct DetailPage {
    page: Page,
    customer: Customer,
    referrer: Option<ReferrerSummary>,
    links: Vec<ReferralLink>,
    referrals: Vec<Customer>,
    referrals_pager: Pager,
    events: Vec<CustomerEvent>,
    erased_at: Option<chrono::DateTime<chrono::Utc>>,
    custom_fields: Vec<(String, String)>,
    landing_url: String,
    public_url: String,
    forms: InlineForms,
}

impl DetailPage {
    fn error(&self, field: &str) -> Option<&String> {
        first(&self.forms.errors, field)
    }

    fn share_url(&self, link: &ReferralLink) -> String {
        link.share_url(&self.public_url, &self.page.program)
    }
}

#[derive(serde::Deserialize)]
pub struct DetailQuery {
    referrals_page: Option<String>,
}

pub async fn show(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
    query: web::Query<DetailQuery>,
) -> Result<HttpResponse, Error> {
    let referrals_page = query
        .referrals_page
        .as_deref()
        .and_then(|value| value.trim().parse::<i64>().ok())
        .unwrap_or(1);
    render_detail(
        &state,
        page,
        &path.key,
        referrals_page,
        InlineForms::default(),
        StatusCode::OK,
    )
    .await
}

/// Renders the page; the action handlers use it to show a form's message in place.
pub(super) async fn render_detail(
    state: &web::Data<AppState>,
    page: Page,
    key: &str,
    referrals_page: i64,
    forms: InlineForms,
    status: StatusCode,
) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let key = key.to_string();
    let (customer, referrer, links, referrals, events, erased_at, shown) =
        db::run(&state.pool, move |conn| {
            let customer = customers::find_by_key(conn, program_id, &key)?;
            let referrer = customers::with_referrers(conn, vec![customer.clone()])?
                .pop()
                .and_then(|row| row.referrer);
            let links = referral_links::for_customer(conn, customer.id)?;
            let total = i64::from(customer.referrals_count);
            let last = ((total + REFERRALS_PER_PAGE - 1) / REFERRALS_PER_PAGE).max(1);
            let shown = referrals_page.clamp(1, last);
            let referrals = customers::referrals(conn, program_id, customer.id, shown, REFERRALS_PER_PAGE)?;
            let events = audit::for_customer(conn, program_id, customer.id, ACTIVITY_LIMIT)?;
            let erased_at = customers::erased_at(conn, customer.id)?;
            Ok((customer, referrer, links, referrals, events, erased_at, shown))
        })
        .await?;
    let referrals_pager = Pager::new(
        ListUrl::new(&format!("/customers/{}", customer.key)),
        "referrals_page",
        shown,
        REFERRALS_PER_PAGE,
        i64::from(customer.referrals_count),
    );
    render_status(
        status,
        &DetailPage {
            landing_url: page.program.referral_url(&customer.key),
            public_url: state.config.public_url.clone(),
            custom_fields: customer.custom_field_rows(),
            referrals_pager,
            customer,
            referrer,
            links,
            referrals,
            events,
            erased_at,
            forms,
            page,
        },
    )
}
