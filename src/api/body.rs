//! Reading JSON bodies field by field, so that a wrong type is a 422 naming the field
//! (`{"errors": {"email": ["The email field must be a string."]}}`) rather than a generic
//! parse failure, and unknown fields are ignored.

use actix_web::web;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::api::MAX_BODY_BYTES;
use crate::error::{ApiError, Error, FieldErrors};

/// Reads the request body as a JSON object (an empty body is `{}`).
pub async fn read_object(mut payload: web::Payload) -> Result<Map<String, Value>, ApiError> {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError(Error::BadRequest("The request body could not be read.".into())))?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError(Error::PayloadTooLarge));
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError(Error::BadRequest("The request body is not valid UTF-8.".into())))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError(Error::BadRequest(
            "The request body must be a JSON object.".into(),
        ))),
        Err(_) => Err(ApiError(Error::BadRequest(
            "The request body is not valid JSON.".into(),
        ))),
    }
}

/// A JSON object being read; collects one message per bad field.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    /// Prefix for error names of nested objects, e.g. `update.`.
    prefix: String,
    pub errors: FieldErrors,
}

impl<'a> Fields<'a> {
    pub fn new(object: &'a Map<String, Value>) -> Self {
        Fields {
            object,
            prefix: String::new(),
            errors: FieldErrors::new(),
        }
    }

    /// Reads a nested object; errors are named `prefix.field`.
    pub fn nested(object: &'a Map<String, Value>, prefix: &str) -> Self {
        Fields {
            object,
            prefix: format!("{prefix}."),
            errors: FieldErrors::new(),
        }
    }

    fn name(&self, field: &str) -> String {
        format!("{}{}", self.prefix, field)
    }

    pub fn error(&mut self, field: &str, message: String) {
        let name = self.name(field);
        self.errors.entry(name).or_default().push(message);
    }

    pub fn has(&self, field: &str) -> bool {
        !matches!(self.object.get(field), None | Some(Value::Null))
    }

    /// A string field; `null` and absent are `None`. Numbers are accepted as their text for
    /// identifier-like fields when `numbers_ok` (integrators often send numeric ids).
    fn string_inner(&mut self, field: &str, numbers_ok: bool) -> Option<String> {
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) if numbers_ok => Some(number.to_string()),
            Some(_) => {
                let name = self.name(field);
                self.error(field, format!("The {name} field must be a string."));
                None
            }
        }
    }

    pub fn string(&mut self, field: &str) -> Option<String> {
        self.string_inner(field, false)
    }

    pub fn identifier(&mut self, field: &str) -> Option<String> {
        self.string_inner(field, true)
    }

    pub fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(value)) => Some(*value),
            // Form-style clients send 1/0 and "true"/"false".
            Some(Value::Number(number)) if number.as_i64() == Some(1) => Some(true),
            Some(Value::Number(number)) if number.as_i64() == Some(0) => Some(false),
            Some(Value::String(text)) if matches!(text.as_str(), "true" | "1") => Some(true),
            Some(Value::String(text)) if matches!(text.as_str(), "false" | "0") => Some(false),
            Some(_) => {
                let name = self.name(field);
                self.error(field, format!("The {name} field must be true or false."));
                None
            }
        }
    }

    pub fn object(&mut self, field: &str) -> Option<&'a Map<String, Value>> {
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Object(object)) => Some(object),
            Some(_) => {
                let name = self.name(field);
                self.error(field, format!("The {name} field must be an object."));
                None
            }
        }
    }

    /// A decimal number, given as a JSON number or a numeric string, as its exact text.
    pub fn decimal_text(&mut self, field: &str) -> Option<String> {
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(Value::String(text)) => Some(text.trim().to_string()),
            Some(_) => {
                let name = self.name(field);
                self.error(field, format!("The {name} field must be a number."));
                None
            }
        }
    }

    pub fn require(&mut self, field: &str) {
        if !self.has(field) {
            let name = self.name(field);
            self.error(field, format!("The {name} field is required."));
        }
    }

    pub fn merge(&mut self, other: FieldErrors) {
        for (field, messages) in other {
            self.errors.entry(field).or_default().extend(messages);
        }
    }

    /// `Err(422)` when any field was bad.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError(Error::invalid_fields(self.errors)))
        }
    }
}
