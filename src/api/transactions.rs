//! `/v1/transactions…` (Partnero's transactions API) and a customer's rewards.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use diesel::PgConnection;

use crate::api::body::{read_object, Fields};
use crate::api::customers::{customer_input, render_customers, render_one};
use crate::api::list::{self, ListQuery};
use crate::api::views::{self, TransactionView};
use crate::api::{data, done, ApiCall};
use crate::domain::customers::{self, Customer};
use crate::domain::programs::Program;
use crate::domain::rewards::lookup;
use crate::domain::transactions::{self, NewTransaction, Transaction, TransactionInput};
use crate::domain::Actor;
use crate::error::{ApiError, Error};
use crate::AppState;

/// A create body as a transaction request, or the 400/413/422 to answer once the caller is
/// known. The amount is read as the digits sent, never through a float.
async fn new_transaction(payload: web::Payload) -> Result<NewTransaction, ApiError> {
    let body = read_object(payload).await?;
    let mut fields = Fields::new(&body);
    let mut input = TransactionInput::default();
    if let Some(customer) = fields.object("customer") {
        let mut nested = Fields::nested(customer, "customer");
        input.customer = customer_input(&mut nested, true);
        input.customer_key = input.customer.key.clone();
        input.customer_id = input.customer.id.clone();
        input.customer_email = input.customer.email.clone();
        fields.merge(nested.errors);
    }
    input.key = fields.identifier("key");
    input.amount = fields.decimal_text("amount");
    input.amount_units = fields.string("amount_units");
    input.action = fields.string("action");
    input.product_id = fields.identifier("product_id");
    input.product_type = fields.string("product_type");
    if let Some(options) = fields.object("options") {
        let mut nested = Fields::nested(options, "options");
        input.create_customer = nested.boolean("create_customer").unwrap_or(false);
        fields.merge(nested.errors);
    }
    fields.finish()?;
    Ok(NewTransaction::parse(input)?)
}

/// The JSON of transactions: their customers loaded once each and rendered together,
/// their rewards in one query.
fn render(
    conn: &mut PgConnection,
    program: &Program,
    public_url: &str,
    rows: &[Transaction],
) -> Result<Vec<TransactionView>, Error> {
    let mut loaded: HashMap<i64, Customer> = HashMap::new();
    for row in rows {
        if let Entry::Vacant(slot) = loaded.entry(row.customer_id) {
            slot.insert(customers::find(conn, program.id, row.customer_id)?);
        }
    }
    // One customer JSON per row (a customer with several rows is rendered for each).
    let owners: Vec<Customer> = rows.iter().map(|row| loaded[&row.customer_id].clone()).collect();
    let rendered = render_customers(conn, program, public_url, &owners)?;
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let mut rewards: HashMap<i64, Vec<_>> = HashMap::new();
    for line in lookup::of_transactions(conn, &ids)? {
        rewards
            .entry(line.reward.transaction_id.unwrap_or_default())
            .or_default()
            .push(line);
    }
    Ok(rows
        .iter()
        .zip(rendered)
        .map(|(row, customer)| views::sale(row, customer, &rewards.remove(&row.id).unwrap_or_default()))
        .collect())
}

pub async fn create(
    state: web::Data<AppState>,
    call: ApiCall,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let new = new_transaction(payload).await;
    let public_url = state.config.public_url.clone();
    let (view, created) = call
        .run(new, move |conn, client, new| {
            let booked = transactions::book(conn, &client.program, &client.actor, new)?;
            let customer = render_one(conn, &client.program, &public_url, &booked.customer)?;
            Ok((
                views::sale(&booked.transaction, customer, &booked.rewards),
                booked.created,
            ))
        })
        .await?;
    Ok(data(super::created_or_replayed(created), &view))
}

pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    call: ApiCall,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(&req);
    let customer_key = query.given("customer");
    let paging = query.finish();
    let public_url = state.config.public_url.clone();
    let (items, total, paging) = call
        .run(paging, move |conn, client, paging| {
            let customer_id = match &customer_key {
                None => None,
                Some(key) => match customers::find_by_key(conn, client.program.id, key) {
                    Ok(customer) => Some(customer.id),
                    // An unknown customer has no transactions.
                    Err(Error::NotFound) => return Ok((Vec::new(), 0, paging)),
                    Err(other) => return Err(other),
                },
            };
            let (rows, total) =
                transactions::list(conn, client.program.id, customer_id, paging.page, paging.limit)?;
            let items = render(conn, &client.program, &public_url, &rows)?;
            Ok((items, total, paging))
        })
        .await?;
    Ok(list::response(&req, &state, items, &paging, total))
}

pub async fn show(
    state: web::Data<AppState>,
    call: ApiCall,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let public_url = state.config.public_url.clone();
    let view = call
        .run(Ok(key.into_inner()), move |conn, client, key| {
            let row = transactions::find_by_key(conn, client.program.id, &key)?;
            one(conn, &client.program, &public_url, row)
        })
        .await?;
    Ok(data(StatusCode::OK, &view))
}

fn one(
    conn: &mut PgConnection,
    program: &Program,
    public_url: &str,
    row: Transaction,
) -> Result<TransactionView, Error> {
    render(conn, program, public_url, std::slice::from_ref(&row))?
        .pop()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no JSON for transaction {}", row.id)))
}

/// `DELETE /v1/transactions/{key}`: a refund.
pub async fn refund(call: ApiCall, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    call.run(Ok(key.into_inner()), move |conn, client, key| {
        transactions::refund(conn, &client.program, &client.actor, &key)
    })
    .await?;
    Ok(done())
}

pub async fn archive(
    state: web::Data<AppState>,
    call: ApiCall,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_status(state, call, key, transactions::archive).await
}

pub async fn revoke_archive(
    state: web::Data<AppState>,
    call: ApiCall,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_status(state, call, key, transactions::revoke_archive).await
}

/// Archiving and its revocation: `change` applied to the transaction named in the path,
/// answered with the transaction as it is now.
async fn change_status(
    state: web::Data<AppState>,
    call: ApiCall,
    key: web::Path<String>,
    change: fn(&mut PgConnection, &Program, &Actor, &str) -> Result<Transaction, Error>,
) -> Result<HttpResponse, ApiError> {
    let public_url = state.config.public_url.clone();
    let view = call
        .run(Ok(key.into_inner()), move |conn, client, key| {
            let row = change(conn, &client.program, &client.actor, &key)?;
            one(conn, &client.program, &public_url, row)
        })
        .await?;
    Ok(data(StatusCode::OK, &view))
}

/// `GET /v1/customers/{ident}/rewards`: rewards the customer earns (as referrer or friend).
pub async fn customer_rewards(
    req: HttpRequest,
    state: web::Data<AppState>,
    call: ApiCall,
    ident: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let paging = ListQuery::parse(&req).finish();
    let ident = ident.into_inner();
    let (items, total, paging) = call
        .run(paging, move |conn, client, paging| {
            let customer = customers::find_by_ident(conn, client.program.id, &ident)?;
            let (lines, total) = lookup::of_beneficiary(conn, customer.id, paging.page, paging.limit)?;
            Ok((
                lines.iter().map(views::reward_line).collect::<Vec<_>>(),
                total,
                paging,
            ))
        })
        .await?;
    Ok(list::response(&req, &state, items, &paging, total))
}
