//! A transaction's input, parsed once at the edge into a type that cannot hold an invalid
//! value. Field names in messages are the API's (`customer.key`, `amount`, …).

use std::str::FromStr;

use bigdecimal::{BigDecimal, Zero};

use crate::domain::customers::{CustomerInput, NewCustomer};
use crate::domain::ledger::is_currency_code;
use crate::domain::{has_control_chars, sha256_hex};
use crate::error::{Error, FieldErrors};

use super::Action;

/// The largest amount one transaction may carry (also a CHECK in the schema).
pub const MAX_AMOUNT: u32 = 100_000_000;
/// Sales are currency amounts: at most this many decimals.
pub const DECIMALS: i64 = 2;
/// The units of a transaction that names none.
pub const DEFAULT_UNITS: &str = "USD";
pub const MAX_TEXT_CHARS: usize = 255;

/// Raw input as sent: `None` means "not given".
#[derive(Clone, Debug, Default)]
pub struct TransactionInput {
    /// `customer.key`, `customer.id`, `customer.email`: the first given names the customer.
    pub customer_key: Option<String>,
    pub customer_id: Option<String>,
    pub customer_email: Option<String>,
    /// The `customer` object's fields, used when `create_customer` creates them.
    pub customer: CustomerInput,
    /// `options.create_customer`.
    pub create_customer: bool,
    pub key: Option<String>,
    /// The amount's exact text (a JSON number's digits as sent, or a numeric string).
    pub amount: Option<String>,
    pub amount_units: Option<String>,
    pub action: Option<String>,
    pub product_id: Option<String>,
    pub product_type: Option<String>,
}

/// How the request names its customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomerRef {
    Key(String),
    Id(String),
    Email(String),
}

impl CustomerRef {
    /// The field an "unknown customer" message belongs to.
    pub fn field(&self) -> &'static str {
        match self {
            CustomerRef::Key(_) => "customer.key",
            CustomerRef::Id(_) => "customer.id",
            CustomerRef::Email(_) => "customer.email",
        }
    }
}

/// A valid transaction request.
#[derive(Clone, Debug)]
pub struct NewTransaction {
    pub customer: CustomerRef,
    /// The customer to create when none matches (`options.create_customer`).
    pub create: Option<NewCustomer>,
    pub key: String,
    pub amount: BigDecimal,
    pub amount_units: String,
    pub action: Action,
    pub product_id: Option<String>,
    pub product_type: Option<String>,
    /// Tells a retry of this request from another body under the same key.
    pub request_hash: String,
}

fn push(errors: &mut FieldErrors, field: &str, message: impl Into<String>) {
    errors.entry(field.to_string()).or_default().push(message.into());
}

/// Parses an amount strictly: plain digits with an optional point, more than zero, at
/// most [`MAX_AMOUNT`], at most [`DECIMALS`] decimals (trailing zeros aside).
pub fn parse_amount(raw: &str) -> Result<BigDecimal, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("The amount field is required.".into());
    }
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if raw.starts_with('-') {
        return Err("The amount must be more than zero.".into());
    }
    if raw.len() > 40 || whole.is_empty() || !digits(whole) || !digits(fraction) || raw.ends_with('.') {
        return Err("The amount must be a plain number such as 99.99.".into());
    }
    let amount = BigDecimal::from_str(raw).map_err(|_| "The amount must be a plain number such as 99.99.")?;
    if amount <= BigDecimal::zero() {
        return Err("The amount must be more than zero.".into());
    }
    if amount > MAX_AMOUNT {
        return Err("The amount may be at most 100000000.".into());
    }
    if amount != amount.round(DECIMALS) {
        return Err("The amount may have at most 2 decimals.".into());
    }
    Ok(amount.with_scale(DECIMALS))
}

/// Optional one-line text of 1 to 255 characters; blank is "not given".
fn optional_text(raw: &Option<String>, label: &str) -> Result<Option<String>, String> {
    let Some(value) = raw.as_deref().map(str::trim).filter(|value| !value.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_TEXT_CHARS || has_control_chars(value) {
        return Err(format!(
            "The {label} must be 1 to {MAX_TEXT_CHARS} characters without control characters."
        ));
    }
    Ok(Some(value.to_string()))
}

fn customer_ref(input: &TransactionInput, errors: &mut FieldErrors) -> Option<CustomerRef> {
    let given = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    };
    let named = given(&input.customer_key)
        .map(CustomerRef::Key)
        .or_else(|| given(&input.customer_id).map(CustomerRef::Id))
        .or_else(|| given(&input.customer_email).map(CustomerRef::Email));
    if named.is_none() {
        push(errors, "customer", "The customer field needs a key, id or email.");
    }
    named
}

/// The customer `options.create_customer` would create, its messages named `customer.*`.
fn customer_to_create(input: &TransactionInput, errors: &mut FieldErrors) -> Option<NewCustomer> {
    if !input.create_customer {
        return None;
    }
    match NewCustomer::parse(input.customer.clone()) {
        Ok(new) => Some(new),
        Err(error) => {
            for (field, messages) in error.field_errors().cloned().unwrap_or_default() {
                errors
                    .entry(format!("customer.{field}"))
                    .or_default()
                    .extend(messages);
            }
            None
        }
    }
}

impl NewTransaction {
    pub fn parse(input: TransactionInput) -> Result<NewTransaction, Error> {
        let mut errors = FieldErrors::new();
        let customer = customer_ref(&input, &mut errors);
        let key = match optional_text(&input.key, "key") {
            Ok(Some(key)) => Some(key),
            Ok(None) => {
                push(&mut errors, "key", "The key field is required.");
                None
            }
            Err(message) => {
                push(&mut errors, "key", message);
                None
            }
        };
        let amount = parse_amount(input.amount.as_deref().unwrap_or_default())
            .map_err(|message| push(&mut errors, "amount", message))
            .ok();
        let units = input
            .amount_units
            .as_deref()
            .map(str::trim)
            .filter(|units| !units.is_empty())
            .unwrap_or(DEFAULT_UNITS)
            .to_ascii_uppercase();
        if !is_currency_code(&units) {
            push(
                &mut errors,
                "amount_units",
                "The amount_units must be an ISO 4217 currency code, such as USD or EUR.",
            );
        }
        let action = match input.action.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            None => Some(Action::Sale),
            Some(raw) => Action::parse(raw).or_else(|| {
                push(
                    &mut errors,
                    "action",
                    "The action must be one of sale, subscription, renewal, upgrade.",
                );
                None
            }),
        };
        let product_id = optional_text(&input.product_id, "product_id")
            .map_err(|message| push(&mut errors, "product_id", message))
            .ok()
            .flatten();
        let product_type = optional_text(&input.product_type, "product_type")
            .map_err(|message| push(&mut errors, "product_type", message))
            .ok()
            .flatten();
        let create = customer_to_create(&input, &mut errors);
        let (Some(customer), Some(key), Some(amount), Some(action), true) =
            (customer, key, amount, action, errors.is_empty())
        else {
            return Err(Error::invalid_fields(errors));
        };
        // What makes two requests "the same": every parsed field, the customer to create
        // included; amounts compare by value (99.9 and 99.90 are one request).
        let request_hash = sha256_hex(&format!(
            "{customer:?}|{create:?}|{key}|{amount}|{units}|{action}|{product_id:?}|{product_type:?}"
        ));
        Ok(NewTransaction {
            customer,
            create,
            key,
            amount,
            amount_units: units,
            action,
            product_id,
            product_type,
            request_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_and_bounded() {
        assert_eq!(parse_amount("99.99").unwrap().to_string(), "99.99");
        assert_eq!(parse_amount("99.990").unwrap().to_string(), "99.99");
        assert_eq!(parse_amount("100000000").unwrap().to_string(), "100000000.00");
        assert!(parse_amount("100000000.01").is_err());
        assert!(parse_amount("0").is_err());
        assert!(parse_amount("-5").is_err());
        assert!(parse_amount("1e3").is_err());
        assert!(parse_amount("1.005").is_err());
        assert!(parse_amount("0.1000000000000000055511151231257827").is_err());
        assert!(parse_amount(".5").is_err());
    }

    fn input() -> TransactionInput {
        TransactionInput {
            customer_key: Some("ada".into()),
            key: Some("txn_1".into()),
            amount: Some("10".into()),
            ..TransactionInput::default()
        }
    }

    #[test]
    fn the_hash_tells_bodies_apart_but_not_equal_amounts() {
        let one = NewTransaction::parse(input()).unwrap();
        let same = NewTransaction::parse(TransactionInput {
            amount: Some("10.00".into()),
            ..input()
        })
        .unwrap();
        let other = NewTransaction::parse(TransactionInput {
            amount: Some("11".into()),
            ..input()
        })
        .unwrap();
        assert_eq!(one.request_hash, same.request_hash);
        assert_ne!(one.request_hash, other.request_hash);
        assert_eq!(one.action, Action::Sale);
        assert_eq!(one.amount_units, "USD");
    }

    #[test]
    fn every_bad_field_is_named() {
        let error = NewTransaction::parse(TransactionInput {
            action: Some("gift".into()),
            amount_units: Some("points".into()),
            ..TransactionInput::default()
        })
        .unwrap_err();
        let fields = error.field_errors().unwrap();
        for field in ["customer", "key", "amount", "amount_units", "action"] {
            assert!(fields.contains_key(field), "{field}: {fields:?}");
        }
    }
}
