//! A booking's input: amounts, units, notes and idempotency keys, parsed and checked.

use std::str::FromStr;

use bigdecimal::{BigDecimal, Zero};

use crate::error::{Error, FieldErrors};

use super::Kind;

/// The largest amount one booking may move ("a sane ceiling"; also a CHECK in the schema).
pub const MAX_AMOUNT: u32 = 1_000_000;
/// Decimals allowed for currency amounts and for other units.
pub const CURRENCY_DECIMALS: usize = 2;
pub const UNIT_DECIMALS: usize = 4;
pub const MAX_NOTE_CHARS: usize = 1000;
pub const MAX_UNIT_CHARS: usize = 32;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

const CONTROL_CHARS_IN_NOTE: &str = "A note cannot hold control characters (line breaks and tabs are fine).";

/// Active ISO 4217 codes of circulating currencies (funds, precious metals, SDR and test
/// codes such as `XAU`, `XDR`, `XXX` are left out: nobody credits a customer in them).
pub const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD", "BIF",
    "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY", "COP",
    "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD",
    "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK",
    "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP",
    "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP",
    "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD",
    "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG",
    "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

pub fn is_currency_code(code: &str) -> bool {
    CURRENCIES.contains(&code)
}

/// A validated booking. Build it with [`NewEntry::parse`]; [`book`] checks it again, so a
/// caller that fills the fields itself cannot slip an invalid amount through.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub kind: Kind,
    pub amount: BigDecimal,
    pub units: String,
    pub is_currency: bool,
    pub note: Option<String>,
    pub idempotency_key: Option<String>,
}

pub(super) fn push(fields: &mut FieldErrors, field: &str, message: impl Into<String>) {
    fields.entry(field.to_string()).or_default().push(message.into());
}

/// Parses an amount strictly: digits, optionally a point and at most `decimals` digits,
/// more than zero and at most [`MAX_AMOUNT`]. No signs, exponents, separators or spaces
/// inside.
pub fn parse_amount(raw: &str, decimals: usize) -> Result<BigDecimal, String> {
    let raw = raw.trim();
    let example = if decimals == CURRENCY_DECIMALS {
        "10 or 10.50"
    } else {
        "10 or 2.5"
    };
    if raw.is_empty() {
        return Err("Enter an amount.".to_string());
    }
    if raw.starts_with('-') {
        return Err("Enter an amount above zero.".to_string());
    }
    let (whole, fraction) = match raw.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (raw, None),
    };
    let digits_only = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if raw.len() > 32 || !digits_only(whole) || !fraction.is_none_or(digits_only) {
        return Err(format!("Enter a plain number such as {example}."));
    }
    if fraction.is_some_and(|fraction| fraction.len() > decimals) {
        return Err(if decimals == CURRENCY_DECIMALS {
            "Currency amounts have at most 2 decimals.".to_string()
        } else {
            format!("Use at most {decimals} decimals.")
        });
    }
    let amount = BigDecimal::from_str(raw).map_err(|_| format!("Enter a plain number such as {example}."))?;
    check_amount_range(&amount)?;
    Ok(amount)
}

fn check_amount_range(amount: &BigDecimal) -> Result<(), String> {
    if amount <= &BigDecimal::zero() {
        return Err("Enter an amount above zero.".to_string());
    }
    if amount > &BigDecimal::from(MAX_AMOUNT) {
        return Err("One booking may move at most 1,000,000.".to_string());
    }
    Ok(())
}

/// An ISO 4217 code (any case) when `is_currency`, else a free unit name.
pub fn parse_units(raw: &str, is_currency: bool) -> Result<String, String> {
    let raw = raw.trim();
    if is_currency {
        let code = raw.to_ascii_uppercase();
        if raw.is_empty() {
            Err("Choose a currency.".to_string())
        } else if is_currency_code(&code) {
            Ok(code)
        } else {
            Err("Choose a known ISO 4217 currency code, such as USD or EUR.".to_string())
        }
    } else {
        let length = raw.chars().count();
        let allowed = |c: char| c.is_alphanumeric() || c == ' ' || c == '-' || c == '_';
        if length == 0 {
            Err("Enter a unit name, such as points.".to_string())
        } else if length > MAX_UNIT_CHARS || !raw.chars().all(allowed) {
            Err(format!(
                "Use 1 to {MAX_UNIT_CHARS} letters, digits, spaces, dashes or underscores."
            ))
        } else {
            Ok(raw.to_string())
        }
    }
}

impl NewEntry {
    /// Parses raw input (form fields or API values); every problem is reported against its
    /// field: `kind`, `amount`, `units`, `note`, `idempotency_key`.
    pub fn parse(
        kind: &str,
        amount: &str,
        units: &str,
        is_currency: bool,
        note: &str,
        idempotency_key: Option<&str>,
    ) -> Result<NewEntry, Error> {
        let mut fields = FieldErrors::new();
        let kind = Kind::parse(kind.trim());
        if kind.is_none() {
            push(&mut fields, "kind", "Choose credit or debit.");
        }
        let decimals = if is_currency {
            CURRENCY_DECIMALS
        } else {
            UNIT_DECIMALS
        };
        let amount = parse_amount(amount, decimals)
            .map_err(|message| push(&mut fields, "amount", message))
            .ok();
        let units = parse_units(units, is_currency)
            .map_err(|message| push(&mut fields, "units", message))
            .ok();
        let note = note.trim();
        check_note(&mut fields, note);
        let idempotency_key = idempotency_key.map(str::trim);
        check_idempotency_key(&mut fields, idempotency_key);
        match (kind, amount, units) {
            (Some(kind), Some(amount), Some(units)) if fields.is_empty() => Ok(NewEntry {
                kind,
                amount,
                units,
                is_currency,
                note: (!note.is_empty()).then(|| note.to_string()),
                idempotency_key: idempotency_key.map(str::to_string),
            }),
            _ => Err(Error::invalid_fields(fields)),
        }
    }

    /// The same rules as [`NewEntry::parse`], for an entry built field by field.
    pub(super) fn check(&self) -> Result<(), Error> {
        let mut fields = FieldErrors::new();
        let decimals = if self.is_currency {
            CURRENCY_DECIMALS
        } else {
            UNIT_DECIMALS
        };
        if self.amount.with_scale(decimals as i64) != self.amount {
            push(&mut fields, "amount", format!("Use at most {decimals} decimals."));
        } else if let Err(message) = check_amount_range(&self.amount) {
            push(&mut fields, "amount", message);
        }
        match parse_units(&self.units, self.is_currency) {
            Ok(units) if units == self.units => {}
            Ok(_) => push(&mut fields, "units", "Units must be given in their normal form."),
            Err(message) => push(&mut fields, "units", message),
        }
        if let Some(note) = &self.note {
            check_note(&mut fields, note);
        }
        check_idempotency_key(&mut fields, self.idempotency_key.as_deref());
        if fields.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_fields(fields))
        }
    }
}

fn check_note(fields: &mut FieldErrors, note: &str) {
    if note.chars().count() > MAX_NOTE_CHARS {
        push(
            fields,
            "note",
            format!("Keep the note to {MAX_NOTE_CHARS} characters."),
        );
    }
    if crate::domain::has_control_chars_beyond_lines(note) {
        push(fields, "note", CONTROL_CHARS_IN_NOTE);
    }
}

fn check_idempotency_key(fields: &mut FieldErrors, key: Option<&str>) {
    if key.is_some_and(|key| {
        key.is_empty()
            || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS
            || crate::domain::has_control_chars(key)
    }) {
        push(
            fields,
            "idempotency_key",
            format!("An idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, none of them control characters."),
        );
    }
}
