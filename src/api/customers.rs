//! `/v1/customers…`: the refer-a-friend customers API.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use diesel::PgConnection;
use serde_json::{Map, Value};

use crate::api::body::{read_object, Fields};
use crate::api::list::{self, ListQuery};
use crate::api::views::{self, CustomerContext, CustomerJson};
use crate::api::{data, done, ApiCall};
use crate::domain::customers::listing::{
    self, CustomerFilter, ListRequest, PastEnd, ReferStatus, ReferrerSummary,
};
use crate::domain::customers::{self, Customer, CustomerChanges, CustomerInput, NewCustomer};
use crate::domain::programs::Program;
use crate::domain::referral_links::{self, ReferralLink};
use crate::error::{ApiError, Error};
use crate::AppState;

/// Loads what the JSON of `rows` needs (referrers, links) in two queries, not one per row.
pub(crate) fn render_customers(
    conn: &mut PgConnection,
    program: &Program,
    public_url: &str,
    rows: &[Customer],
) -> Result<Vec<CustomerJson>, Error> {
    let referrers: HashMap<_, _> = listing::referrer_summaries(conn, rows)?;
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let links = referral_links::for_customers(conn, &ids)?;
    let context = CustomerContext {
        program,
        public_url,
        referrers: &referrers,
        links: &links,
    };
    Ok(rows.iter().map(|row| views::customer(row, &context)).collect())
}

/// The JSON of a customer just created, from what the signup read and wrote (its referrer,
/// its one link): no further queries.
fn render_created(program: &Program, public_url: &str, created: &customers::Created) -> CustomerJson {
    one_customer_json(
        program,
        public_url,
        &created.customer,
        created.referrer.as_ref(),
        vec![created.link.clone()],
    )
}

/// One customer's JSON. Its referrer and links are read by `=` lookups, whose prepared
/// plans PostgreSQL reuses (the `= ANY` lists of [`render_customers`] are planned on every
/// call, which for one customer costs more than reading).
pub(crate) fn render_one(
    conn: &mut PgConnection,
    program: &Program,
    public_url: &str,
    customer: &Customer,
) -> Result<CustomerJson, Error> {
    let referrer = match customer.referrer_id {
        Some(referrer_id) => match customers::find(conn, program.id, referrer_id) {
            Ok(referrer) => Some(referrer),
            Err(Error::NotFound) => None,
            Err(other) => return Err(other),
        },
        None => None,
    };
    let links = referral_links::for_customer(conn, customer.id)?;
    Ok(one_customer_json(
        program,
        public_url,
        customer,
        referrer.as_ref(),
        links,
    ))
}

/// The JSON of `customer` with the referrer and links the caller holds.
fn one_customer_json(
    program: &Program,
    public_url: &str,
    customer: &Customer,
    referrer: Option<&Customer>,
    links: Vec<ReferralLink>,
) -> CustomerJson {
    let referrers: HashMap<i64, ReferrerSummary> = referrer
        .map(|referrer| (referrer.id, ReferrerSummary::of(referrer)))
        .into_iter()
        .collect();
    let links = HashMap::from([(customer.id, links)]);
    let context = CustomerContext {
        program,
        public_url,
        referrers: &referrers,
        links: &links,
    };
    views::customer(customer, &context)
}

pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    call: ApiCall,
) -> Result<HttpResponse, ApiError> {
    let mut query = ListQuery::parse(&req);
    let refer_status = match query.value("refer_status") {
        None | Some("") => None,
        Some(raw) => match ReferStatus::parse(raw) {
            Some(status) => Some(status),
            None => {
                query.error(
                    "refer_status",
                    "The refer_status field must be referred or non_referred.".into(),
                );
                None
            }
        },
    };
    let paging = query.finish();
    let filter = CustomerFilter {
        refer_status,
        ..CustomerFilter::default()
    };
    let public_url = state.config.public_url.clone();
    let customer_list = state.customer_list.clone();
    let (items, total, paging) = call
        .run(paging, move |conn, client, paging| {
            let request = ListRequest {
                filter,
                page: paging.page,
                per_page: paging.limit,
                cursor: None,
                past_end: PastEnd::Empty,
            };
            // The API's filters are all tallied: the total is exact.
            let found = customer_list.page::<Customer>(conn, client.program.id, &request)?;
            let items = render_customers(conn, &client.program, &public_url, &found.rows)?;
            Ok((items, found.total.value(), paging))
        })
        .await?;
    Ok(list::response(&req, &state, items, &paging, total))
}

/// The customer fields of a create or update body, as raw input for the domain parser.
pub(crate) fn customer_input(fields: &mut Fields<'_>, with_referrer: bool) -> CustomerInput {
    let mut input = CustomerInput {
        id: fields.identifier("id"),
        key: fields.identifier("key"),
        email: fields.string("email"),
        name: fields.string("name"),
        surname: fields.string("surname"),
        ..CustomerInput::default()
    };
    if let Some(metadata) = fields.object("metadata") {
        let mut nested = Fields::nested(metadata, "metadata");
        input.date_of_birth = nested.string("date_of_birth");
        fields.merge(nested.errors);
    }
    if let Some(custom) = fields.object("custom_fields") {
        let mut rows = Vec::new();
        for (key, value) in custom {
            match value {
                Value::String(text) => rows.push((key.clone(), text.clone())),
                Value::Number(number) => rows.push((key.clone(), number.to_string())),
                Value::Bool(flag) => rows.push((key.clone(), flag.to_string())),
                Value::Null => {}
                _ => fields.error(
                    "custom_fields",
                    format!("The custom_fields.{key} value must be a string."),
                ),
            }
        }
        input.custom_fields = Some(rows);
    }
    if with_referrer {
        if let Some(referrer) = fields.object("referring_customer") {
            let mut nested = Fields::nested(referrer, "referring_customer");
            input.referrer_id = nested.identifier("id");
            input.referrer_key = nested.identifier("key");
            fields.merge(nested.errors);
        }
    }
    input
}

/// A create body as a new customer, or the 400/413/422 to answer once the caller is known.
async fn new_customer(payload: web::Payload) -> Result<NewCustomer, ApiError> {
    let body = read_object(payload).await?;
    let mut fields = Fields::new(&body);
    let input = customer_input(&mut fields, true);
    fields.finish()?;
    Ok(NewCustomer::parse(input)?)
}

pub async fn create(
    state: web::Data<AppState>,
    call: ApiCall,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let new = new_customer(payload).await;
    let public_url = state.config.public_url.clone();
    // Not `run_lookups`: that opens a transaction, and a signup needs none (its writes are
    // one statement); `BEGIN` and `COMMIT` would be two more round trips.
    let view = call
        .run(new, move |conn, client, new| {
            let created = customers::sign_up(conn, &client.program, &client.actor, new)?;
            Ok(render_created(&client.program, &public_url, &created))
        })
        .await?;
    Ok(data(StatusCode::CREATED, &view))
}

pub async fn show(
    state: web::Data<AppState>,
    call: ApiCall,
    ident: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let public_url = state.config.public_url.clone();
    let view = call
        .run_lookups(Ok(ident.into_inner()), move |conn, client, ident| {
            let customer = customers::find_by_ident(conn, client.program.id, &ident)?;
            render_one(conn, &client.program, &public_url, &customer)
        })
        .await?;
    Ok(data(StatusCode::OK, &view))
}

/// Reads an update body: `{"update": {...}}`, or the fields flat at the top level.
fn customer_changes(body: &Map<String, Value>) -> Result<CustomerChanges, ApiError> {
    let mut outer = Fields::new(body);
    let changes_source = match outer.object("update") {
        Some(update) => update,
        None => body,
    };
    outer.finish()?;
    let mut fields = if std::ptr::eq(changes_source, body) {
        Fields::new(changes_source)
    } else {
        Fields::nested(changes_source, "update")
    };
    let mut input = customer_input(&mut fields, false);
    // The identifier of `PUT /v1/customers` is not a change of id.
    input.id = None;
    fields.finish()?;
    Ok(CustomerChanges::parse(input)?)
}

/// Applies the changes to the customer named by `ident`.
async fn apply_update(
    state: &AppState,
    call: ApiCall,
    update: Result<(String, CustomerChanges), ApiError>,
) -> Result<HttpResponse, ApiError> {
    let public_url = state.config.public_url.clone();
    let view = call
        .run_lookups(update, move |conn, client, (ident, changes)| {
            let customer = customers::find_by_ident(conn, client.program.id, &ident)?;
            let updated = customers::update(conn, &client.program, &client.actor, customer.id, changes)?;
            render_one(conn, &client.program, &public_url, &updated)
        })
        .await?;
    Ok(data(StatusCode::OK, &view))
}

pub async fn update(
    state: web::Data<AppState>,
    call: ApiCall,
    ident: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_object(payload).await;
    let update = body.and_then(|body| Ok((ident.into_inner(), customer_changes(&body)?)));
    apply_update(&state, call, update).await
}

pub async fn update_by_body(
    state: web::Data<AppState>,
    call: ApiCall,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_object(payload).await;
    let update = body.and_then(|mut body| {
        let mut fields = Fields::new(&body);
        fields.require("id");
        let ident = fields.identifier("id");
        fields.finish()?;
        body.remove("id");
        Ok((ident.unwrap_or_default(), customer_changes(&body)?))
    });
    apply_update(&state, call, update).await
}

pub async fn delete(call: ApiCall, ident: web::Path<String>) -> Result<HttpResponse, ApiError> {
    call.run(Ok(ident.into_inner()), move |conn, client, ident| {
        let customer = customers::find_by_ident(conn, client.program.id, &ident)?;
        customers::delete(conn, &client.program, &client.actor, customer.id)
    })
    .await?;
    Ok(done())
}

pub async fn search(
    req: HttpRequest,
    state: web::Data<AppState>,
    call: ApiCall,
) -> Result<HttpResponse, ApiError> {
    let mut query = ListQuery::parse(&req);
    let criteria = listing::ExactMatch {
        key: query.given("key"),
        external_id: query.given("id"),
        email: query.given("email"),
    };
    if criteria.key.is_none() && criteria.external_id.is_none() && criteria.email.is_none() {
        query.error("key", "Give at least one of key, id or email.".into());
    }
    let paging = query.finish();
    let public_url = state.config.public_url.clone();
    let (items, total, paging) = call
        .run(paging, move |conn, client, paging| {
            let (rows, total) =
                listing::exact_matches(conn, client.program.id, &criteria, paging.page, paging.limit)?;
            let items = render_customers(conn, &client.program, &public_url, &rows)?;
            Ok((items, total, paging))
        })
        .await?;
    Ok(list::response(&req, &state, items, &paging, total))
}

pub async fn referrals(
    req: HttpRequest,
    state: web::Data<AppState>,
    call: ApiCall,
    ident: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let paging = ListQuery::parse(&req).finish();
    let ident = ident.into_inner();
    let public_url = state.config.public_url.clone();
    let (items, total, paging) = call
        .run(paging, move |conn, client, paging| {
            let referrer = customers::find_by_ident(conn, client.program.id, &ident)?;
            let rows = listing::referrals(conn, client.program.id, referrer.id, paging.page, paging.limit)?;
            // Exact by invariant: kept in step with the rows in the same transactions.
            let total = i64::from(referrer.referrals_count);
            let items = render_customers(conn, &client.program, &public_url, &rows)?;
            Ok((items, total, paging))
        })
        .await?;
    Ok(list::response(&req, &state, items, &paging, total))
}
