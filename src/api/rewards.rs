//! The review queue over `/v1`: list rewards, approve, deny.
//!
//! An API token acts for the program's backend: it decides rewards like an admin (the
//! support threshold does not apply).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::auth::ApiClient;
use crate::api::body::{read_object, Fields};
use crate::api::list::{self, ListQuery};
use crate::api::{data, views, ApiCall};
use crate::domain::rewards::queue::{self, QueueFilter, RawFilter};
use crate::domain::rewards::review::{self, Decision, Reviewer};
use crate::error::{ApiError, Error};
use crate::AppState;

/// `GET /v1/rewards`: `status`, `rule` (id), `limit`, `page`; oldest first.
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    call: ApiCall,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(&req);
    let raw = RawFilter {
        status: query.given("status").unwrap_or_default(),
        rule: query.given("rule").unwrap_or_default(),
        ..RawFilter::default()
    };
    let paging = query.finish();
    let (items, total, paging) = call
        .run(paging, move |conn, client, paging| {
            let filter = QueueFilter::parse(conn, client.program.id, &raw)?;
            let (rows, total) = queue::list(conn, client.program.id, &filter, paging.page, paging.limit)?;
            let items = rows
                .iter()
                .map(|row| views::reward(&row.reward, &row.beneficiary_key, row.transaction_key.as_deref()))
                .collect::<Vec<_>>();
            Ok((items, total, paging))
        })
        .await?;
    Ok(list::response(&req, &state, items, &paging, total))
}

fn reviewer(client: &ApiClient) -> Reviewer {
    Reviewer {
        actor: client.actor.clone(),
        is_admin: true,
    }
}

fn reward_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(ApiError(Error::NotFound))
}

async fn decide(call: ApiCall, id: Result<(i64, Decision), ApiError>) -> Result<HttpResponse, ApiError> {
    let view = call
        .run(id, move |conn, client, (id, decision)| {
            let program_id = client.program.id;
            review::decide(
                conn,
                program_id,
                &reviewer(&client),
                id,
                &decision,
                chrono::Utc::now(),
            )?;
            let row = queue::row(conn, program_id, id)?;
            Ok(views::reward(
                &row.reward,
                &row.beneficiary_key,
                row.transaction_key.as_deref(),
            ))
        })
        .await?;
    Ok(data(StatusCode::OK, &view))
}

/// `POST /v1/rewards/{id}/approve`: a reward whose hold is over is credited at once.
pub async fn approve(call: ApiCall, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let input = reward_id(&id).map(|id| (id, Decision::Approve));
    decide(call, input).await
}

/// `POST /v1/rewards/{id}/deny` with `{"reason": "..."}` (required).
pub async fn deny(
    call: ApiCall,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let input = async {
        let body = read_object(payload).await?;
        let mut fields = Fields::new(&body);
        fields.require("reason");
        let reason = fields.string("reason");
        fields.finish()?;
        let reason = review::parse_reason(&reason.unwrap_or_default())?;
        Ok((reward_id(&id)?, Decision::Deny(reason)))
    }
    .await;
    decide(call, input).await
}
