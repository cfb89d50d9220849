//! No error answer leaves the server empty, and none leaves a signed-in member without the
//! dashboard's navigation.
//!
//! A signed-in member's error page (a 403, a 404, a refused request) is drawn inside the
//! dashboard's layout by [`with_navigation`], called by the access check around every
//! signed-in route: the way on is one click away.
//!
//! actix answers some errors itself with an empty or bare-text body — 405 for a wrong
//! method, 400 for an unreadable request, 413 from a body extractor's size limit, an
//! opaque 500 when the session store cannot reach the database.
//! This outermost middleware gives each of them the same face as our own errors: a styled
//! page on the dashboard, a JSON body on `/v1`. An empty 500 while the database is away
//! becomes the 503 it really is.

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use askama::Template;

use crate::db;
use crate::error::{ApiError, Error, ErrorView};
use crate::web::context::Page;
use crate::AppState;

/// An error page inside the dashboard's layout.
#[derive(Template)]
#[template(path = "error_signed_in.html")]
struct SignedInErrorPage<'a> {
    page: Page,
    error: &'a ErrorView,
}

/// The page of `error` for the member signed in on `req` (`None` when nobody is).
pub fn signed_in_error(req: &HttpRequest, error: &Error) -> Option<HttpResponse> {
    let page = Page::from_request(req, &mut Payload::None).into_inner().ok()?;
    let mut response = error.html_response_with(|error| SignedInErrorPage { page, error }.render());
    // It holds the member's name and programs, as every signed-in page does.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Some(response)
}

/// A signed-in route's error answer, drawn again inside the dashboard's layout; any other
/// answer as it is.
pub fn with_navigation<B>(response: ServiceResponse<B>) -> ServiceResponse<EitherBody<B>> {
    let drawn = response
        .response()
        .error()
        .and_then(|error| error.as_error::<Error>())
        .and_then(|error| signed_in_error(response.request(), error));
    match drawn {
        Some(page) => response.into_response(page).map_into_right_body(),
        None => response.map_into_left_body(),
    }
}

pub async fn fill_empty_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let is_api = req.path().starts_with("/v1");
    let state = req.app_data::<Data<AppState>>().cloned();
    let (status, response) = match next.call(req).await {
        Ok(response) => {
            let status = response.status();
            let empty = matches!(
                response.response().body().size(),
                BodySize::None | BodySize::Sized(0)
            );
            // actix's own error answers (an extractor's "payload reached size limit") are
            // bare text; ours are always an HTML page or JSON.
            let bare_text = response
                .headers()
                .get(actix_web::http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with("text/plain"));
            // The probes' plain-text answers are their own (and `/readyz` has asked the
            // database already).
            let probe = response.request().path() == "/readyz";
            if probe || !((empty || bare_text) && (status.is_client_error() || status.is_server_error())) {
                return Ok(response.map_into_left_body());
            }
            (status, Some(response))
        }
        Err(error) => (error.as_response_error().status_code(), None),
    };
    let error = match status {
        StatusCode::NOT_FOUND => Error::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Error::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
        StatusCode::BAD_REQUEST => Error::BadRequest("The request could not be understood.".into()),
        status if status.is_server_error() => match state {
            Some(state) if !db::answers(&state.pool).await => Error::Unavailable,
            _ => Error::Internal(anyhow::anyhow!("an empty {status} answer")),
        },
        _ => Error::BadRequest(status.canonical_reason().unwrap_or("Bad request").to_string() + "."),
    };
    match response {
        Some(original) => {
            let rendered = if is_api {
                error.json_response()
            } else {
                error.html_response()
            };
            Ok(original.into_response(rendered).map_into_right_body())
        }
        // The request is gone with the error; an error whose own rendering is ours will do.
        None if is_api => Err(ApiError(error).into()),
        None => Err(error.into()),
    }
}

/// A handler that panics answers 500 with the usual page (or JSON body under `/v1`)
/// instead of dropping the connection: the panic is caught here, logged, and turned into
/// an internal error. Innermost, so the session and the other middleware finish normally.
pub async fn catch_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use futures_util::FutureExt;
    let is_api = req.path().starts_with("/v1");
    match std::panic::AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(answer) => answer,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|message| message.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            // The request went down with the handler; the error renders its own answer
            // (as the errors handlers return do).
            let error = Error::Internal(anyhow::anyhow!("the handler panicked: {what}"));
            Err(if is_api {
                ApiError(error).into()
            } else {
                error.into()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{test, web, App, HttpResponse};

    use super::catch_panics;

    async fn panics() -> HttpResponse {
        panic!("a bug in a handler")
    }

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_with_our_page_or_json() {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(catch_panics))
                .route("/boom", web::get().to(panics))
                .route("/v1/boom", web::get().to(panics))
                .route(
                    "/fine",
                    web::get().to(|| async { HttpResponse::Ok().body("fine") }),
                ),
        )
        .await;
        // What the server answers for an error from its services (their own rendering).
        let answer = |path: &'static str| {
            let app = &app;
            async move {
                let request = test::TestRequest::get().uri(path).to_request();
                match test::try_call_service(app, request).await {
                    Ok(response) => response.into_parts().1.map_into_boxed_body(),
                    Err(error) => error.error_response(),
                }
            }
        };
        let page = answer("/boom").await;
        assert_eq!(page.status(), 500);
        let body = actix_web::body::to_bytes(page.into_body()).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("Something went wrong on our side"), "{body}");
        let api = answer("/v1/boom").await;
        assert_eq!(api.status(), 500);
        assert_eq!(api.headers().get("content-type").unwrap(), "application/json");
        // The worker carries on.
        assert_eq!(answer("/fine").await.status(), 200);
    }
}
