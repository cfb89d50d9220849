//! What every dashboard form shares: the messages of a refused submission, read by the
//! templates next to each field, and the 422 answer that shows the form again with them.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use askama::Template;

use crate::error::{Error, FieldErrors};
use crate::web::render_status;

/// The messages of a refused submission, by field (empty on a fresh form).
#[derive(Debug, Default)]
pub struct FormErrors {
    /// The one-line summary of `Error::Invalid`, for pages that show no field by field.
    summary: Option<String>,
    fields: FieldErrors,
}

impl FormErrors {
    /// A refusal's messages; any other error passes on unchanged.
    pub fn from_error(error: Error) -> Result<FormErrors, Error> {
        match error {
            Error::Invalid { message, fields } => Ok(FormErrors {
                summary: Some(message),
                fields,
            }),
            other => Err(other),
        }
    }

    /// One message for one field, decided by the handler rather than the domain.
    pub fn one(field: &str, message: &str) -> FormErrors {
        let mut fields = FieldErrors::new();
        fields.insert(field.to_string(), vec![message.to_string()]);
        FormErrors {
            summary: Some(message.to_string()),
            fields,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.summary.is_none() && self.fields.is_empty()
    }

    /// 422 when the form comes back with messages, 200 for a fresh one.
    pub fn status(&self) -> StatusCode {
        if self.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }

    /// The first message for `field`.
    pub fn first(&self, field: &str) -> Option<&String> {
        self.fields.get(field).and_then(|messages| messages.first())
    }

    /// Every message for `field`, one by one (e.g. a list of the rows a bulk action refused).
    pub fn messages(&self, field: &str) -> &[String] {
        self.fields.get(field).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every message for `field`, joined by a space.
    pub fn joined(&self, field: &str) -> Option<String> {
        self.fields.get(field).map(|messages| messages.join(" "))
    }

    /// The first message among `fields`, for one control that answers for several.
    pub fn first_of(&self, fields: &[&str]) -> Option<&String> {
        fields.iter().find_map(|field| self.first(field))
    }

    /// The messages of `fields` (each joined), for problems that belong to no input.
    pub fn general(&self, fields: &[&str]) -> Vec<String> {
        fields.iter().filter_map(|field| self.joined(field)).collect()
    }

    /// The refusal's one-line summary.
    pub fn summary(&self) -> Option<&str> {
        self.summary.as_deref()
    }
}

/// The ARIA attributes of one form control, as `field_box` in `_macros.html` hands them to
/// the control it frames: `aria-describedby` names the help text and the message shown
/// with the field, and `aria-invalid` marks a field in error (app.js moves the focus to the
/// first such field). Renders as attributes with a leading space, for `{{ aria|safe }}`.
pub struct FieldAria {
    id: String,
    help: bool,
    invalid: bool,
}

impl FieldAria {
    pub fn new(id: impl std::fmt::Display, help: bool, invalid: bool) -> FieldAria {
        FieldAria {
            id: id.to_string(),
            help,
            invalid,
        }
    }
}

impl std::fmt::Display for FieldAria {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.help && !self.invalid {
            return Ok(());
        }
        // Ids come from templates; escaped all the same, as this is written unescaped.
        let id = self
            .id
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let described: Vec<String> = [(self.help, "help"), (self.invalid, "error")]
            .into_iter()
            .filter(|(shown, _)| *shown)
            .map(|(_, part)| format!("{id}-{part}"))
            .collect();
        write!(out, " aria-describedby=\"{}\"", described.join(" "))?;
        if self.invalid {
            write!(out, " aria-invalid=\"true\"")?;
        }
        Ok(())
    }
}

/// Answers a refused submission with the form again: `Error::Invalid` renders the page
/// that `form` builds from its messages, with 422; any other error passes on.
pub fn rerender<T: Template>(
    error: Error,
    form: impl FnOnce(FormErrors) -> T,
) -> Result<HttpResponse, Error> {
    let errors = FormErrors::from_error(error)?;
    render_status(StatusCode::UNPROCESSABLE_ENTITY, &form(errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_becomes_messages_and_anything_else_passes_on() {
        let mut fields = FieldErrors::new();
        fields.insert("email".into(), vec!["Taken.".into(), "Too long.".into()]);
        let errors = FormErrors::from_error(Error::invalid_fields(fields)).unwrap();
        assert_eq!(errors.first("email").unwrap(), "Taken.");
        assert_eq!(errors.joined("email").unwrap(), "Taken. Too long.");
        assert_eq!(errors.general(&["name", "email"]), vec!["Taken. Too long."]);
        assert_eq!(errors.summary(), Some("Taken."));
        assert_eq!(errors.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(FormErrors::from_error(Error::NotFound).is_err());
        assert_eq!(FormErrors::default().status(), StatusCode::OK);
    }

    #[test]
    fn a_field_is_described_by_its_help_and_its_message() {
        assert_eq!(FieldAria::new("note", false, false).to_string(), "");
        assert_eq!(
            FieldAria::new("note", true, false).to_string(),
            r#" aria-describedby="note-help""#
        );
        assert_eq!(
            FieldAria::new("field-email", true, true).to_string(),
            r#" aria-describedby="field-email-help field-email-error" aria-invalid="true""#
        );
        assert_eq!(
            FieldAria::new("a\"b", false, true).to_string(),
            r#" aria-describedby="a&quot;b-error" aria-invalid="true""#
        );
    }
}
