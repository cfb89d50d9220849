//! Balances, credits and the ledger of a customer, and invites, over `/v1`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::api::body::{read_object, Fields};
use crate::api::customers::render_one;
use crate::api::list::{self, ListQuery};
use crate::api::views;
use crate::api::{data, ApiCall};
use crate::domain::customers;
use crate::domain::invites::{self, NewInvite};
use crate::domain::ledger::{self, Kind, NewEntry};
use crate::domain::referral_links;
use crate::domain::rewards::lookup;
use crate::domain::transactions;
use crate::error::{ApiError, Error};
use crate::AppState;

pub async fn balance(
    state: web::Data<AppState>,
    call: ApiCall,
    ident: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let public_url = state.config.public_url.clone();
    let view = call
        .run(Ok(ident.into_inner()), move |conn, client, ident| {
            let customer = customers::find_by_ident(conn, client.program.id, &ident)?;
            let balances = ledger::balances(conn, customer.id)?;
            let customer = render_one(conn, &client.program, &public_url, &customer)?;
            Ok(views::customer_balance(customer, &balances))
        })
        .await?;
    Ok(data(StatusCode::OK, &view))
}

pub async fn stats(call: ApiCall, ident: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = call
        .run(Ok(ident.into_inner()), move |conn, client, ident| {
            let customer = customers::find_by_ident(conn, client.program.id, &ident)?;
            let clicks = referral_links::total_clicks(conn, customer.id)?;
            let credits = ledger::credits_of(conn, customer.id)?;
            let sales = views::sales(&transactions::sales_of(conn, customer.id)?);
            let rewards = views::reward_totals(&lookup::totals_of_beneficiary(conn, customer.id)?);
            Ok(views::stats(
                clicks,
                customer.referrals_count,
                &credits,
                sales,
                rewards,
            ))
        })
        .await?;
    Ok(data(StatusCode::OK, &view))
}

/// The API's field names for the ledger's parse errors.
fn api_field_names(error: Error) -> Error {
    match error {
        Error::Invalid { fields, .. } => Error::invalid_fields(
            fields
                .into_iter()
                .map(|(field, messages)| match field.as_str() {
                    "units" => ("amount_units".to_string(), messages),
                    _ => (field, messages),
                })
                .collect(),
        ),
        other => other,
    }
}

const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// A credit's body and `Idempotency-Key` as a ledger entry, or the 400/413/422 to answer
/// once the caller is known.
async fn credit_entry(req: &HttpRequest, payload: web::Payload) -> Result<NewEntry, ApiError> {
    let body = read_object(payload).await?;
    let mut fields = Fields::new(&body);
    for required in ["amount", "amount_units", "is_currency"] {
        fields.require(required);
    }
    let amount = fields.decimal_text("amount");
    let units = fields.string("amount_units");
    let is_currency = fields.boolean("is_currency");
    let note = fields.string("note");
    let idempotency_key = match req.headers().get("idempotency-key").map(|value| value.to_str()) {
        None => None,
        Some(Ok(key)) if !key.trim().is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_CHARS => {
            Some(key.trim().to_string())
        }
        Some(_) => {
            fields.error(
                "Idempotency-Key",
                format!(
                    "The Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible characters."
                ),
            );
            None
        }
    };
    fields.finish()?;
    // API keys live in their own namespace, apart from the dashboard's form tokens.
    let scoped_key = idempotency_key.map(|key| format!("api:{key}"));
    let entry = NewEntry::parse(
        Kind::Credit.as_str(),
        &amount.unwrap_or_default(),
        &units.unwrap_or_default(),
        is_currency.unwrap_or(false),
        &note.unwrap_or_default(),
        scoped_key.as_deref(),
    )
    .map_err(api_field_names)?;
    Ok(entry)
}

pub async fn credit(
    req: HttpRequest,
    state: web::Data<AppState>,
    call: ApiCall,
    ident: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let credit = credit_entry(&req, payload)
        .await
        .map(|entry| (ident.into_inner(), entry));
    let public_url = state.config.public_url.clone();
    let (view, booked_now) = call
        .run_lookups(credit, move |conn, client, (ident, entry)| {
            let customer = customers::find_by_ident(conn, client.program.id, &ident)?;
            let (transaction, booked_now) =
                ledger::book(conn, client.program.id, customer.id, &client.actor, entry)
                    .map_err(api_field_names)?;
            let balances = ledger::balances(conn, customer.id)?;
            let customer = render_one(conn, &client.program, &public_url, &customer)?;
            Ok((views::credit(customer, &transaction, &balances), booked_now))
        })
        .await?;
    Ok(data(super::created_or_replayed(booked_now), &view))
}

pub async fn transactions(
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
            let (rows, total) = ledger::transactions(conn, customer.id, paging.page, paging.limit)?;
            let items = rows.iter().map(views::transaction).collect::<Vec<_>>();
            Ok((items, total, paging))
        })
        .await?;
    Ok(list::response(&req, &state, items, &paging, total))
}

/// An invite's body, or the 400/413/422 to answer once the caller is known.
async fn new_invite(payload: web::Payload) -> Result<NewInvite, ApiError> {
    let body = read_object(payload).await?;
    let mut fields = Fields::new(&body);
    fields.require("email");
    let email = fields.string("email");
    let name = fields.string("name");
    let mut pairs = Vec::new();
    if let Some(personalization) = fields.object("personalization") {
        for (key, value) in personalization {
            match value {
                Value::String(text) => pairs.push((key.clone(), text.clone())),
                Value::Number(number) => pairs.push((key.clone(), number.to_string())),
                Value::Bool(flag) => pairs.push((key.clone(), flag.to_string())),
                _ => fields.error(
                    "personalization",
                    format!("The personalization.{key} value must be a string."),
                ),
            }
        }
    }
    fields.finish()?;
    Ok(NewInvite::parse(
        &email.unwrap_or_default(),
        &name.unwrap_or_default(),
        &pairs,
    )?)
}

pub async fn invite(
    state: web::Data<AppState>,
    call: ApiCall,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let new = new_invite(payload).await;
    let invite = call
        .run(new, move |conn, client, new| {
            invites::create(conn, &client.program, &client.actor, None, new)
        })
        .await?;
    state.mail.wake();
    Ok(data(StatusCode::CREATED, &views::invite(&invite)))
}
