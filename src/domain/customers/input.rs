//! Customer input, parsed once at the edge (dashboard form or API body) into types that
//! cannot hold an invalid value. Field names in error messages are the API's names, so
//! both faces can show a message next to the field it belongs to.

use chrono::{NaiveDate, Utc};
use serde_json::{Map, Value};

use crate::domain::has_control_chars;
use crate::domain::team::check_email;
use crate::error::{Error, FieldErrors};

/// Raw input as typed in a form or sent as JSON. `None` means "not given" (an update
/// leaves that field alone); `Some("")` means "given empty" (an update clears it).
#[derive(Clone, Debug, Default)]
pub struct CustomerInput {
    /// The integrator's identifier (`id` in the API).
    pub id: Option<String>,
    pub key: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    /// `metadata.date_of_birth`, `YYYY-MM-DD`.
    pub date_of_birth: Option<String>,
    /// Custom field rows in the order typed; rows with neither key nor value are ignored.
    pub custom_fields: Option<Vec<(String, String)>>,
    /// `referring_customer.id`: wins over every other way of naming the referrer.
    pub referrer_id: Option<String>,
    /// `referring_customer.key`.
    pub referrer_key: Option<String>,
    /// The dashboard's single box: a key or an email (`referring_customer`).
    pub referrer: Option<String>,
}

/// How a referrer is named in input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferrerRef {
    /// The integrator's id.
    Id(String),
    Key(String),
    /// A key, or an email when no customer has that key.
    KeyOrEmail(String),
}

impl ReferrerRef {
    /// The field an "unknown referrer" message belongs to.
    pub fn field(&self) -> &'static str {
        match self {
            ReferrerRef::Id(_) => "referring_customer.id",
            ReferrerRef::Key(_) => "referring_customer.key",
            ReferrerRef::KeyOrEmail(_) => "referring_customer",
        }
    }

    /// From the dashboard's box: blank means "no referrer".
    pub fn from_box(raw: &str) -> Option<ReferrerRef> {
        let value = raw.trim();
        (!value.is_empty()).then(|| ReferrerRef::KeyOrEmail(value.to_string()))
    }
}

/// A valid new customer. Blank key and id are generated on create.
#[derive(Clone, Debug, Default)]
pub struct NewCustomer {
    pub external_id: Option<String>,
    pub key: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub custom_fields: Map<String, Value>,
    pub referrer: Option<ReferrerRef>,
}

/// A valid change to a customer: `None` leaves a field alone; `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct CustomerChanges {
    pub key: Option<String>,
    pub email: Option<Option<String>>,
    pub name: Option<Option<String>>,
    pub surname: Option<Option<String>>,
    pub date_of_birth: Option<Option<NaiveDate>>,
    pub custom_fields: Option<Map<String, Value>>,
}

pub const MAX_KEY_LENGTH: usize = 64;
pub const MAX_ID_LENGTH: usize = 255;
pub const MAX_NAME_LENGTH: usize = 200;
pub const MAX_CUSTOM_FIELDS: usize = 50;
pub const MAX_CUSTOM_FIELD_KEY_LENGTH: usize = 64;
pub const MAX_CUSTOM_FIELD_VALUE_LENGTH: usize = 1000;
/// Keys that would collide with dashboard paths (`/customers/new`, `/customers/import`).
const RESERVED_KEYS: &[&str] = &["new", "import"];

/// Collects messages per field while parsing.
#[derive(Default)]
struct Messages(FieldErrors);

impl Messages {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_string()).or_default().push(message.into());
    }

    /// Keeps the value when it parsed, records the message when not.
    fn take<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }

    /// The value as far as it parsed, and the messages (for checks that go on regardless).
    fn partial<T>(self, value: T) -> (T, FieldErrors) {
        (value, self.0)
    }
}

/// A referral-link-safe key or code: 1–64 of `A-Z a-z 0-9 _ -`.
pub fn check_code(value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= MAX_KEY_LENGTH
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "Use 1 to {MAX_KEY_LENGTH} letters, digits, '-' or '_' (no spaces)."
        ))
    }
}

/// A customer key; blank is `None`.
pub fn parse_key(raw: &str) -> Result<Option<String>, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    check_code(value)?;
    if RESERVED_KEYS.contains(&value) {
        return Err(format!("\"{value}\" is reserved; choose another key."));
    }
    Ok(Some(value.to_string()))
}

fn parse_external_id(raw: &str) -> Result<Option<String>, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > MAX_ID_LENGTH || has_control_chars(value) {
        return Err(format!(
            "Use at most {MAX_ID_LENGTH} characters, without control characters."
        ));
    }
    Ok(Some(value.to_string()))
}

fn parse_email(raw: &str) -> Result<Option<String>, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    check_email(value)?;
    Ok(Some(value.to_string()))
}

fn parse_name(raw: &str) -> Result<Option<String>, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > MAX_NAME_LENGTH || has_control_chars(value) {
        return Err(format!(
            "Use at most {MAX_NAME_LENGTH} characters, without control characters."
        ));
    }
    Ok(Some(value.to_string()))
}

/// `YYYY-MM-DD`, a real calendar date, in the past (and not before 1900).
pub fn parse_date_of_birth(raw: &str) -> Result<Option<NaiveDate>, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let message = "Enter a real date in the past as YYYY-MM-DD.";
    let shaped = value.len() == 10
        && value.bytes().enumerate().all(|(at, byte)| match at {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    if !shaped {
        return Err(message.to_string());
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| message.to_string())?;
    let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN);
    if date >= Utc::now().date_naive() || date < earliest {
        return Err(message.to_string());
    }
    Ok(Some(date))
}

/// Custom field rows → an object of string values. Empty rows are skipped.
pub fn parse_custom_fields(rows: &[(String, String)]) -> Result<Map<String, Value>, String> {
    let mut fields = Map::new();
    for (key, value) in rows {
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() && value.is_empty() {
            continue;
        }
        if key.is_empty() {
            return Err(format!("Give the value \"{value}\" a field name."));
        }
        if key.chars().count() > MAX_CUSTOM_FIELD_KEY_LENGTH || has_control_chars(key) {
            return Err(format!(
                "Field names have at most {MAX_CUSTOM_FIELD_KEY_LENGTH} characters, without control characters."
            ));
        }
        if value.chars().count() > MAX_CUSTOM_FIELD_VALUE_LENGTH
            || crate::domain::has_control_chars_beyond_lines(value)
        {
            return Err(format!(
                "Values have at most {MAX_CUSTOM_FIELD_VALUE_LENGTH} characters, without control characters."
            ));
        }
        if fields
            .insert(key.to_string(), Value::String(value.to_string()))
            .is_some()
        {
            return Err(format!("The field name \"{key}\" appears twice."));
        }
    }
    if fields.len() > MAX_CUSTOM_FIELDS {
        return Err(format!("Use at most {MAX_CUSTOM_FIELDS} custom fields."));
    }
    Ok(fields)
}

/// The referrer named in input: `referring_customer.id` wins over `.key`, which wins over
/// the dashboard's box.
fn referrer_of(input: &CustomerInput) -> Option<ReferrerRef> {
    let given = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    };
    given(&input.referrer_id)
        .map(ReferrerRef::Id)
        .or_else(|| given(&input.referrer_key).map(ReferrerRef::Key))
        .or_else(|| given(&input.referrer).map(ReferrerRef::KeyOrEmail))
}

impl NewCustomer {
    pub fn parse(input: CustomerInput) -> Result<NewCustomer, Error> {
        let (new, messages) = NewCustomer::parse_partial(input);
        if messages.is_empty() {
            Ok(new)
        } else {
            Err(Error::invalid_fields(messages))
        }
    }

    /// The fields that parsed (a field that did not is left out, as if not given) and the
    /// messages for those that did not: the checks against other customers can then run
    /// on the rest, so that one round reports every problem.
    pub fn parse_partial(input: CustomerInput) -> (NewCustomer, FieldErrors) {
        let mut messages = Messages::default();
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        let external_id = messages.take("id", parse_external_id(&text(&input.id)));
        let key = messages.take("key", parse_key(&text(&input.key)));
        let email = messages.take("email", parse_email(&text(&input.email)));
        let name = messages.take("name", parse_name(&text(&input.name)));
        let surname = messages.take("surname", parse_name(&text(&input.surname)));
        let date_of_birth = messages.take(
            "metadata.date_of_birth",
            parse_date_of_birth(&text(&input.date_of_birth)),
        );
        let custom_fields = messages.take(
            "custom_fields",
            parse_custom_fields(input.custom_fields.as_deref().unwrap_or_default()),
        );
        let referrer = referrer_of(&input);
        messages.partial(NewCustomer {
            external_id: external_id.flatten(),
            key: key.flatten(),
            email: email.flatten(),
            name: name.flatten(),
            surname: surname.flatten(),
            date_of_birth: date_of_birth.flatten(),
            custom_fields: custom_fields.unwrap_or_default(),
            referrer,
        })
    }
}

impl CustomerChanges {
    /// Only the fields given in `input` change; `id` and referrer fields are ignored here
    /// (the id never changes; the referrer changes through `change_referrer`).
    pub fn parse(input: CustomerInput) -> Result<CustomerChanges, Error> {
        let (changes, messages) = CustomerChanges::parse_partial(input);
        if messages.is_empty() {
            Ok(changes)
        } else {
            Err(Error::invalid_fields(messages))
        }
    }

    /// As [`NewCustomer::parse_partial`]: the changes that parsed and the messages for the
    /// rest.
    pub fn parse_partial(input: CustomerInput) -> (CustomerChanges, FieldErrors) {
        let mut messages = Messages::default();
        let key = match input.key.as_deref() {
            None => None,
            Some(raw) => match parse_key(raw) {
                Ok(Some(key)) => Some(key),
                Ok(None) => {
                    messages.add("key", "Enter a key: it appears in every referral link.");
                    None
                }
                Err(message) => {
                    messages.add("key", message);
                    None
                }
            },
        };
        let mut optional = |field: &str, value: &Option<String>, parse: fn(&str) -> Result<_, String>| {
            value.as_deref().and_then(|raw| messages.take(field, parse(raw)))
        };
        let email = optional("email", &input.email, parse_email);
        let name = optional("name", &input.name, parse_name);
        let surname = optional("surname", &input.surname, parse_name);
        let date_of_birth = input
            .date_of_birth
            .as_deref()
            .and_then(|raw| messages.take("metadata.date_of_birth", parse_date_of_birth(raw)));
        let custom_fields = input
            .custom_fields
            .as_deref()
            .and_then(|rows| messages.take("custom_fields", parse_custom_fields(rows)));
        messages.partial(CustomerChanges {
            key,
            email,
            name,
            surname,
            date_of_birth,
            custom_fields,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(value: &str) -> Option<String> {
        Some(value.to_string())
    }

    #[test]
    fn keys_are_url_safe_and_not_reserved() {
        assert_eq!(parse_key("  abc-DEF_9 "), Ok(some("abc-DEF_9")));
        assert_eq!(parse_key(""), Ok(None));
        assert!(parse_key("a b").is_err());
        assert!(parse_key("é").is_err());
        assert!(parse_key(&"a".repeat(65)).is_err());
        assert!(parse_key("new").is_err());
    }

    #[test]
    fn date_of_birth_must_be_a_real_past_date() {
        assert_eq!(
            parse_date_of_birth("1990-02-28"),
            Ok(NaiveDate::from_ymd_opt(1990, 2, 28))
        );
        assert!(parse_date_of_birth("1990-02-30").is_err());
        assert!(parse_date_of_birth("1990-2-3").is_err());
        assert!(parse_date_of_birth("2999-01-01").is_err());
        assert!(parse_date_of_birth("1850-01-01").is_err());
        assert!(parse_date_of_birth("+1990-01-01").is_err());
    }

    #[test]
    fn custom_fields_skip_empty_rows_and_refuse_duplicates() {
        let rows = vec![
            ("plan".to_string(), "pro".to_string()),
            (String::new(), String::new()),
        ];
        let parsed = parse_custom_fields(&rows).unwrap();
        assert_eq!(parsed.get("plan"), Some(&Value::String("pro".into())));
        assert_eq!(parsed.len(), 1);
        let twice = vec![
            ("a".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
        ];
        assert!(parse_custom_fields(&twice).is_err());
        let nameless = vec![(String::new(), "1".to_string())];
        assert!(parse_custom_fields(&nameless).is_err());
    }

    #[test]
    fn referrer_id_wins_over_key() {
        let input = CustomerInput {
            referrer_id: some("ext-1"),
            referrer_key: some("key-1"),
            ..Default::default()
        };
        let parsed = NewCustomer::parse(input).unwrap();
        assert_eq!(parsed.referrer, Some(ReferrerRef::Id("ext-1".into())));
    }

    #[test]
    fn every_invalid_field_gets_its_own_message() {
        let input = CustomerInput {
            email: some("nope"),
            key: some("bad key"),
            date_of_birth: some("yesterday"),
            ..Default::default()
        };
        let error = NewCustomer::parse(input).unwrap_err();
        let fields = error.field_errors().unwrap();
        assert!(fields.contains_key("email"));
        assert!(fields.contains_key("key"));
        assert!(fields.contains_key("metadata.date_of_birth"));
    }

    #[test]
    fn changes_leave_missing_fields_alone_and_clear_empty_ones() {
        let input = CustomerInput {
            email: some(""),
            name: some("Ada"),
            ..Default::default()
        };
        let changes = CustomerChanges::parse(input).unwrap();
        assert_eq!(changes.email, Some(None));
        assert_eq!(changes.name, Some(some("Ada")));
        assert_eq!(changes.surname, None);
        assert!(changes.key.is_none());
        let blank_key = CustomerInput {
            key: some(" "),
            ..Default::default()
        };
        assert!(CustomerChanges::parse(blank_key).is_err());
    }
}
