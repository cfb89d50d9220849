//! `/v1/webhooks`: subscriptions in Partnero's shapes (`key`, `name`, `url`, `events`,
//! `is_active`; the create answer carries `signature`, the signing secret).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use crate::api::body::{read_object, Fields};
use crate::api::list::{self, ListQuery};
use crate::api::views;
use crate::api::{data, done, ApiCall};
use crate::domain::webhooks::subscriptions;
use crate::domain::webhooks::SubscriptionInput;
use crate::error::ApiError;
use crate::AppState;

/// The subscription fields of a body; `required` on a create.
fn input(body: &Map<String, Value>, required: bool) -> Result<SubscriptionInput, ApiError> {
    let mut fields = Fields::new(body);
    if required {
        fields.require("name");
        fields.require("url");
        fields.require("events");
    }
    let name = fields.string("name");
    let url = fields.string("url");
    let is_active = fields.boolean("is_active");
    let events = match body.get("events") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        ),
        Some(_) => {
            fields.error("events", "The events field must be a list of event names.".into());
            None
        }
    };
    fields.finish()?;
    Ok(SubscriptionInput {
        name,
        url,
        // The API names events one by one (all of them for every event).
        all_events: events.as_ref().map(|_| false),
        events,
        is_active,
    })
}

pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    call: ApiCall,
) -> Result<HttpResponse, ApiError> {
    let paging = ListQuery::parse(&req).finish();
    let (items, total, paging) = call
        .run(paging, move |conn, client, paging| {
            let all = subscriptions::list(conn, client.program.id)?;
            let total = all.len() as i64;
            let start = usize::try_from((paging.page - 1).saturating_mul(paging.limit)).unwrap_or(usize::MAX);
            let items: Vec<_> = all
                .iter()
                .skip(start)
                .take(paging.limit as usize)
                .map(views::webhook)
                .collect();
            Ok((items, total, paging))
        })
        .await?;
    Ok(list::response(&req, &state, items, &paging, total))
}

pub async fn create(
    state: web::Data<AppState>,
    call: ApiCall,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_object(payload).await;
    let policy = state.config.webhooks.policy;
    let input = body.and_then(|body| input(&body, true));
    let view = call
        .run(input, move |conn, client, input| {
            let created = subscriptions::create(conn, client.program.id, &client.actor, input, policy)?;
            Ok(views::created_webhook(&created))
        })
        .await?;
    Ok(data(StatusCode::CREATED, &view))
}

pub async fn show(call: ApiCall, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = call
        .run(Ok(key.into_inner()), move |conn, client, key| {
            Ok(views::webhook(&subscriptions::find(
                conn,
                client.program.id,
                &key,
            )?))
        })
        .await?;
    Ok(data(StatusCode::OK, &view))
}

pub async fn update(
    state: web::Data<AppState>,
    call: ApiCall,
    key: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_object(payload).await;
    let policy = state.config.webhooks.policy;
    let input = body.and_then(|body| Ok((key.into_inner(), input(&body, false)?)));
    let view = call
        .run(input, move |conn, client, (key, input)| {
            let updated = subscriptions::update(conn, client.program.id, &key, &client.actor, input, policy)?;
            Ok(views::webhook(&updated))
        })
        .await?;
    Ok(data(StatusCode::OK, &view))
}

pub async fn delete(call: ApiCall, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    call.run(Ok(key.into_inner()), move |conn, client, key| {
        subscriptions::delete(conn, client.program.id, &key, &client.actor)
    })
    .await?;
    Ok(done())
}
