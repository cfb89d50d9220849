//! The one error type of Referdesk. Domain code returns it; this file alone decides what
//! each kind means over HTTP: a styled HTML page for the dashboard, a JSON body for `/v1`.

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Messages per input field, in the shape the API returns them: `{"email": ["..."]}`.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Adds messages to a field, leaving out any it already has.
pub fn add_messages(fields: &mut FieldErrors, field: &str, messages: impl IntoIterator<Item = String>) {
    let known = fields.entry(field.to_string()).or_default();
    for message in messages {
        if !known.contains(&message) {
            known.push(message);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Not found.")]
    NotFound,
    #[error("Unauthenticated.")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    /// Input that failed validation, with a message per field.
    #[error("{message}")]
    Invalid { message: String, fields: FieldErrors },
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    #[error("The request body is too large.")]
    PayloadTooLarge,
    #[error("The method is not supported for this route.")]
    MethodNotAllowed,
    #[error("The database is unavailable. Please try again in a moment.")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn forbidden() -> Self {
        Error::Forbidden("Your role does not allow this.".to_string())
    }

    /// A member whose role is below the one a page or action needs: the message names
    /// both, so they know whom to ask.
    pub fn needs_role(needed: crate::domain::team::Role, has: crate::domain::team::Role) -> Self {
        use crate::domain::team::Role;
        let needed_text = match needed {
            Role::Admin => "the admin role".to_string(),
            other => format!("the {other} role or higher"),
        };
        Error::Forbidden(format!(
            "This needs {needed_text}; you are signed in with the {has} role. An admin can change roles on the Team page."
        ))
    }

    /// One invalid field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut fields = FieldErrors::new();
        fields.insert(field.to_string(), vec![message.clone()]);
        Error::Invalid { message, fields }
    }

    /// Several invalid fields; the first message becomes the summary.
    pub fn invalid_fields(fields: FieldErrors) -> Self {
        let message = fields
            .values()
            .flat_map(|messages| messages.first())
            .next()
            .cloned()
            .unwrap_or_else(|| "The given data was invalid.".to_string());
        Error::Invalid { message, fields }
    }

    /// Folds a refusal's messages into `fields` (each message once) and gives back what a
    /// success gave; any other error passes on. For forms whose checks all report in one
    /// round: collect every check's messages, then [`Error::refuse_any`].
    pub fn collect<T>(fields: &mut FieldErrors, result: Result<T, Error>) -> Result<Option<T>, Error> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(Error::Invalid { fields: found, .. }) => {
                for (field, messages) in found {
                    add_messages(fields, &field, messages);
                }
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// `Err` with every collected message, `Ok` when there is none.
    pub fn refuse_any(fields: FieldErrors) -> Result<(), Error> {
        if fields.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_fields(fields))
        }
    }

    /// The value that passed its checks, or every collected message: `value` is `None`
    /// only when a check refused it, and then `fields` holds why.
    pub fn checked<T>(value: Option<T>, fields: FieldErrors) -> Result<T, Error> {
        Error::refuse_any(fields)?;
        value.ok_or_else(|| Error::Internal(anyhow::anyhow!("a check refused without a message")))
    }

    pub fn field_errors(&self) -> Option<&FieldErrors> {
        match self {
            Error::Invalid { fields, .. } => Some(fields),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What a person or client may read: internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "Something went wrong on our side. It has been logged.".to_string(),
            other => other.to_string(),
        }
    }

    fn log(&self) {
        match self {
            Error::Internal(error) => tracing::error!("internal error: {error:#}"),
            Error::Unavailable => tracing::warn!("database unavailable"),
            _ => {}
        }
    }

    /// The JSON body used on `/v1`: `{"message": ..., "errors": {...}}`.
    pub fn json_response(&self) -> HttpResponse {
        self.log();
        let body = ErrorBody {
            errors: self.field_errors(),
            message: self.public_message(),
        };
        let mut response = HttpResponse::build(self.status());
        if let Error::TooManyRequests { retry_after_secs, .. } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        response
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(serde_json::to_string(&body).unwrap_or_default())
    }

    /// What an error page shows.
    pub fn view(&self) -> ErrorView {
        let status = self.status();
        ErrorView {
            code: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message: self.public_message(),
            fields: self.field_errors().cloned().unwrap_or_default(),
        }
    }

    /// The styled HTML page used by the dashboard, on its own (no navigation: who is
    /// asking is unknown here; `web::error_pages` puts it in the dashboard's layout for a
    /// signed-in member).
    pub fn html_response(&self) -> HttpResponse {
        self.html_response_with(|error| ErrorPage { error }.render())
    }

    /// The HTML page of this error as `render` draws its view, with the error's status and
    /// headers; plain text should the template fail.
    pub fn html_response_with(
        &self,
        render: impl FnOnce(&ErrorView) -> askama::Result<String>,
    ) -> HttpResponse {
        self.log();
        let view = self.view();
        let mut response = HttpResponse::build(self.status());
        if let Error::TooManyRequests { retry_after_secs, .. } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        match render(&view) {
            Ok(html) => response.content_type("text/html; charset=utf-8").body(html),
            Err(_) => response
                .content_type("text/plain; charset=utf-8")
                .body(view.message),
        }
    }
}

/// The JSON body of a `/v1` error; `errors` only when input was refused field by field.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a FieldErrors>,
    message: String,
}

/// What an error page shows (`templates/_error.html`).
pub struct ErrorView {
    pub code: u16,
    pub title: &'static str,
    pub message: String,
    pub fields: FieldErrors,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    error: &'a ErrorView,
}

/// Dashboard handlers return this error; it renders as an HTML page.
impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.html_response()
    }
}

/// `/v1` handlers return this wrapper; it renders as JSON.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub Error);

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.json_response()
    }
}

impl From<DieselError> for Error {
    fn from(error: DieselError) -> Self {
        match error {
            DieselError::NotFound => Error::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => Error::Unavailable,
            DieselError::DatabaseError(_, ref info) if is_connection_loss(info.message()) => {
                Error::Unavailable
            }
            // The server gave up waiting (`statement_timeout`, `lock_timeout`): nothing was
            // changed, and a retry in a moment may well succeed.
            DieselError::DatabaseError(_, ref info)
                if info.message().starts_with("canceling statement due to") =>
            {
                Error::Unavailable
            }
            // Input checks refuse control characters field by field; should a NUL still
            // reach PostgreSQL (whose text cannot hold one), the statement fails before
            // changing anything, and the client gets a clear 400 rather than a 500.
            DieselError::DatabaseError(_, ref info)
                if info.message().starts_with("invalid byte sequence for encoding") =>
            {
                Error::BadRequest("Text cannot hold the NUL character (\\0); remove it and try again.".into())
            }
            other => Error::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<DieselError> for ApiError {
    fn from(error: DieselError) -> Self {
        ApiError(error.into())
    }
}

/// Whether a query failed because the connection to the server is gone.
pub fn is_connection_lost(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => true,
        DieselError::DatabaseError(_, info) => is_connection_loss(info.message()),
        _ => false,
    }
}

/// libpq reports a dropped server as an "unknown" error with one of these messages.
fn is_connection_loss(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "server closed the connection",
        "terminating connection",
        "connection refused",
        "no connection to the server",
        "could not receive data",
        "could not send data",
        "the database system is shutting down",
        "the database system is starting up",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// True when `error` is a unique violation on the named constraint or index.
pub fn is_unique_violation(error: &DieselError, constraint: &str) -> bool {
    matches!(error, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
        if info.constraint_name() == Some(constraint))
}

/// A unique violation on `constraint` as `message` next to `field` (a clash the checks
/// before the write could not see); any other database error as it is.
pub fn unique_violation_as_field(error: DieselError, constraint: &str, field: &str, message: &str) -> Error {
    if is_unique_violation(&error, constraint) {
        Error::invalid(field, message)
    } else {
        error.into()
    }
}
