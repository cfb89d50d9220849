//! The balance ledger: append-only credits and debits per customer.
//!
//! Amounts are exact decimals (`NUMERIC(20,4)` in PostgreSQL, [`BigDecimal`] here), never
//! floats. A balance is the sum per (`amount_units`, `is_currency`): credits minus debits.
//! [`book`] is the one way money moves, for the dashboard and the API alike: it locks the
//! customer, refuses a debit that would take the balance below zero, writes the row and its
//! audit event in one transaction, and books an idempotency key at most once.

use std::str::FromStr;

use bigdecimal::{BigDecimal, Zero};
use chrono::{DateTime, Utc};
use diesel::dsl::sum;
use diesel::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::db::schema::{api_tokens, balance_transactions, customers, team_members};
use crate::db::text_enum;
use crate::domain::customers::CustomerStatus;
use crate::domain::{audit, Actor};
use crate::error::{is_unique_violation, Error, FieldErrors};

/// The largest amount one booking may move ("a sane ceiling"; also a CHECK in the schema).
pub const MAX_AMOUNT: u32 = 1_000_000;
/// Decimals allowed for currency amounts and for other units.
pub const CURRENCY_DECIMALS: usize = 2;
pub const UNIT_DECIMALS: usize = 4;
pub const MAX_NOTE_CHARS: usize = 1000;
pub const MAX_UNIT_CHARS: usize = 32;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

const CONTROL_CHARS_IN_NOTE: &str = "A note cannot hold control characters (line breaks and tabs are fine).";

const IDEMPOTENCY_CONSTRAINT: &str = "balance_transactions_program_id_idempotency_key_key";

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

text_enum! {
    /// Which way a booking moves the balance (`balance_transactions.kind`).
    pub enum Kind {
        Credit = "credit",
        Debit = "debit",
    }
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

fn push(fields: &mut FieldErrors, field: &str, message: impl Into<String>) {
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
        if note.chars().count() > MAX_NOTE_CHARS {
            push(
                &mut fields,
                "note",
                format!("Keep the note to {MAX_NOTE_CHARS} characters."),
            );
        }
        if super::has_control_chars_beyond_lines(note) {
            push(&mut fields, "note", CONTROL_CHARS_IN_NOTE);
        }
        let idempotency_key = idempotency_key.map(str::trim);
        if idempotency_key.is_some_and(|key| {
            key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS || super::has_control_chars(key)
        }) {
            push(
                &mut fields,
                "idempotency_key",
                format!("An idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, none of them control characters."),
            );
        }
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
    fn check(&self) -> Result<(), Error> {
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
        if self
            .note
            .as_ref()
            .is_some_and(|note| note.chars().count() > MAX_NOTE_CHARS)
        {
            push(
                &mut fields,
                "note",
                format!("Keep the note to {MAX_NOTE_CHARS} characters."),
            );
        }
        if self
            .note
            .as_deref()
            .is_some_and(super::has_control_chars_beyond_lines)
        {
            push(&mut fields, "note", CONTROL_CHARS_IN_NOTE);
        }
        if self.idempotency_key.as_ref().is_some_and(|key| {
            key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS || super::has_control_chars(key)
        }) {
            push(
                &mut fields,
                "idempotency_key",
                format!("An idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, none of them control characters."),
            );
        }
        if fields.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_fields(fields))
        }
    }
}

/// One booked row.
#[derive(Clone, Debug, Queryable, Selectable, Serialize)]
#[diesel(table_name = balance_transactions)]
pub struct Transaction {
    pub id: i64,
    pub program_id: i64,
    pub customer_id: i64,
    pub kind: Kind,
    pub amount: BigDecimal,
    pub amount_units: String,
    pub is_currency: bool,
    pub note: Option<String>,
    pub actor_member_id: Option<i64>,
    pub actor_token_id: Option<i64>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Transaction {
    pub fn amount_display(&self) -> String {
        format_amount(&self.amount, self.is_currency)
    }
}

/// A balance (or a total) in one unit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Balance {
    pub amount: BigDecimal,
    pub amount_units: String,
    pub is_currency: bool,
}

impl Balance {
    /// `12.50` for currencies; `12.5` for other units (no trailing zeros).
    pub fn amount_display(&self) -> String {
        format_amount(&self.amount, self.is_currency)
    }
}

/// Currencies with exactly two decimals; other units without trailing zeros.
pub fn format_amount(amount: &BigDecimal, is_currency: bool) -> String {
    if is_currency {
        return amount
            .with_scale_round(2, bigdecimal::RoundingMode::HalfEven)
            .to_plain_string();
    }
    let text = amount
        .with_scale_round(UNIT_DECIMALS as i64, bigdecimal::RoundingMode::HalfEven)
        .to_plain_string();
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A ledger line for display: the row plus who booked it.
#[derive(Clone, Debug, Serialize)]
pub struct TransactionRow {
    pub id: i64,
    pub kind: Kind,
    pub amount: BigDecimal,
    pub amount_units: String,
    pub is_currency: bool,
    pub note: Option<String>,
    /// The member's email or the API token's name; `system` when neither.
    pub actor: String,
    pub created_at: DateTime<Utc>,
}

impl TransactionRow {
    pub fn amount_display(&self) -> String {
        format_amount(&self.amount, self.is_currency)
    }

    pub fn is_debit(&self) -> bool {
        self.kind == Kind::Debit
    }
}

/// Books a credit or debit for a customer of `program_id`.
///
/// Returns the transaction and whether it was booked now (`false`: the idempotency key was
/// used before, and the earlier transaction is returned; nothing is booked).
pub fn book(
    conn: &mut PgConnection,
    program_id: i64,
    customer_id: i64,
    actor: &Actor,
    entry: NewEntry,
) -> Result<(Transaction, bool), Error> {
    entry.check()?;
    let attempt =
        conn.transaction::<_, Failure, _>(|conn| book_locked(conn, program_id, customer_id, actor, &entry));
    match attempt {
        Ok(outcome) => Ok(outcome),
        Err(Failure::Error(error)) => Err(error),
        // Another request booked the same key between our check and our insert.
        Err(Failure::KeyTaken) => {
            let key = entry.idempotency_key.as_deref().unwrap_or_default();
            match find_by_idempotency_key(conn, program_id, key)? {
                Some(existing) => replay(existing, customer_id),
                None => Err(Error::Internal(anyhow::anyhow!(
                    "idempotency key conflict without a stored transaction"
                ))),
            }
        }
    }
}

/// Why a booking transaction rolled back.
enum Failure {
    Error(Error),
    KeyTaken,
}

impl From<diesel::result::Error> for Failure {
    fn from(error: diesel::result::Error) -> Self {
        if is_unique_violation(&error, IDEMPOTENCY_CONSTRAINT) {
            Failure::KeyTaken
        } else {
            Failure::Error(error.into())
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Error(error)
    }
}

/// A replayed key returns the earlier booking, but only for the same customer: reusing a
/// key for someone else is a client bug that must not pass silently.
fn replay(existing: Transaction, customer_id: i64) -> Result<(Transaction, bool), Error> {
    if existing.customer_id == customer_id {
        Ok((existing, false))
    } else {
        Err(Error::invalid(
            "idempotency_key",
            "This idempotency key was already used for another customer.",
        ))
    }
}

fn find_by_idempotency_key(
    conn: &mut PgConnection,
    program_id: i64,
    key: &str,
) -> Result<Option<Transaction>, Error> {
    Ok(balance_transactions::table
        .filter(balance_transactions::program_id.eq(program_id))
        .filter(balance_transactions::idempotency_key.eq(key))
        .select(Transaction::as_select())
        .first(conn)
        .optional()?)
}

fn book_locked(
    conn: &mut PgConnection,
    program_id: i64,
    customer_id: i64,
    actor: &Actor,
    entry: &NewEntry,
) -> Result<(Transaction, bool), Failure> {
    // The lock serialises bookings per customer: a debit sees every earlier booking, and
    // a replayed key sees the booking made by the request it waited for.
    let status: CustomerStatus = customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::id.eq(customer_id))
        .select(customers::status)
        .for_update()
        .first(conn)?;
    if let Some(key) = &entry.idempotency_key {
        if let Some(existing) = find_by_idempotency_key(conn, program_id, key)? {
            return Ok(replay(existing, customer_id)?);
        }
    }
    if status == CustomerStatus::Deleted {
        return Err(Error::invalid(
            "customer",
            "This customer is deleted; restore them before booking credits or debits.",
        )
        .into());
    }
    if entry.kind == Kind::Debit {
        let current = balance_of(conn, customer_id, &entry.units, entry.is_currency)?;
        if current < entry.amount {
            return Err(Error::invalid(
                "amount",
                format!(
                    "A debit may not take the balance below zero: the {} balance is only {}.",
                    entry.units,
                    format_amount(&current, entry.is_currency)
                ),
            )
            .into());
        }
    }
    let booked: Transaction = diesel::insert_into(balance_transactions::table)
        .values((
            balance_transactions::program_id.eq(program_id),
            balance_transactions::customer_id.eq(customer_id),
            balance_transactions::kind.eq(entry.kind),
            balance_transactions::amount.eq(&entry.amount),
            balance_transactions::amount_units.eq(&entry.units),
            balance_transactions::is_currency.eq(entry.is_currency),
            balance_transactions::note.eq(&entry.note),
            balance_transactions::actor_member_id.eq(actor.member_id),
            balance_transactions::actor_token_id.eq(actor.token_id),
            balance_transactions::idempotency_key.eq(&entry.idempotency_key),
        ))
        .returning(Transaction::as_returning())
        .get_result(conn)?;
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(program_id),
            action: match entry.kind {
                Kind::Credit => "ledger.credit",
                Kind::Debit => "ledger.debit",
            },
            subject_type: "balance_transaction",
            subject_id: Some(booked.id.to_string()),
            customer_id: Some(customer_id),
            before: None,
            after: Some(json!({
                "kind": booked.kind,
                "amount": booked.amount_display(),
                "amount_units": booked.amount_units,
                "is_currency": booked.is_currency,
                "note": booked.note,
            })),
        },
    )?;
    Ok((booked, true))
}

/// One group of [`sums`]: units, is_currency, kind and the total amount.
type Sum = (String, bool, Kind, Option<BigDecimal>);

/// Sums per (units, is_currency, kind), optionally for one customer or a whole program.
fn sums(
    conn: &mut PgConnection,
    customer_id: Option<i64>,
    program_id: Option<i64>,
) -> Result<Vec<Sum>, Error> {
    let mut query = balance_transactions::table
        .group_by((
            balance_transactions::amount_units,
            balance_transactions::is_currency,
            balance_transactions::kind,
        ))
        .select((
            balance_transactions::amount_units,
            balance_transactions::is_currency,
            balance_transactions::kind,
            sum(balance_transactions::amount),
        ))
        .into_boxed();
    if let Some(customer_id) = customer_id {
        query = query.filter(balance_transactions::customer_id.eq(customer_id));
    }
    if let Some(program_id) = program_id {
        query = query.filter(balance_transactions::program_id.eq(program_id));
    }
    Ok(query.load(conn)?)
}

/// Currencies first, then by unit name.
fn sorted(mut balances: Vec<Balance>) -> Vec<Balance> {
    balances.sort_by(|a, b| (!a.is_currency, &a.amount_units).cmp(&(!b.is_currency, &b.amount_units)));
    balances
}

/// The customer's balance per unit: credits minus debits (units never used are absent).
pub fn balances(conn: &mut PgConnection, customer_id: i64) -> Result<Vec<Balance>, Error> {
    let mut balances: Vec<Balance> = Vec::new();
    for (units, is_currency, kind, total) in sums(conn, Some(customer_id), None)? {
        let total = total.unwrap_or_default();
        let signed = if kind == Kind::Debit { -total } else { total };
        match balances
            .iter_mut()
            .find(|balance| balance.amount_units == units && balance.is_currency == is_currency)
        {
            Some(balance) => balance.amount += signed,
            None => balances.push(Balance {
                amount: signed,
                amount_units: units,
                is_currency,
            }),
        }
    }
    Ok(sorted(balances))
}

/// The balance in one unit (zero when never used).
pub fn balance_of(
    conn: &mut PgConnection,
    customer_id: i64,
    units: &str,
    is_currency: bool,
) -> Result<BigDecimal, Error> {
    Ok(balances(conn, customer_id)?
        .into_iter()
        .find(|balance| balance.amount_units == units && balance.is_currency == is_currency)
        .map(|balance| balance.amount)
        .unwrap_or_default())
}

/// Everything ever credited in a program, per unit (debits not subtracted): the
/// dashboard's "credits issued".
pub fn credits_issued(conn: &mut PgConnection, program_id: i64) -> Result<Vec<Balance>, Error> {
    credited(conn, None, Some(program_id))
}

/// Everything ever credited to one customer, per unit (the API's stats).
pub fn credits_of(conn: &mut PgConnection, customer_id: i64) -> Result<Vec<Balance>, Error> {
    credited(conn, Some(customer_id), None)
}

/// Credits summed per unit, for a customer or a program. Filtering on `kind` in SQL lets
/// the partial index on credits answer it without touching the table.
fn credited(
    conn: &mut PgConnection,
    customer_id: Option<i64>,
    program_id: Option<i64>,
) -> Result<Vec<Balance>, Error> {
    let mut query = balance_transactions::table
        .filter(balance_transactions::kind.eq(Kind::Credit))
        .group_by((
            balance_transactions::amount_units,
            balance_transactions::is_currency,
        ))
        .select((
            balance_transactions::amount_units,
            balance_transactions::is_currency,
            sum(balance_transactions::amount),
        ))
        .into_boxed();
    if let Some(customer_id) = customer_id {
        query = query.filter(balance_transactions::customer_id.eq(customer_id));
    }
    if let Some(program_id) = program_id {
        query = query.filter(balance_transactions::program_id.eq(program_id));
    }
    let totals: Vec<(String, bool, Option<BigDecimal>)> = query.load(conn)?;
    Ok(sorted(
        totals
            .into_iter()
            .map(|(amount_units, is_currency, total)| Balance {
                amount: total.unwrap_or_default(),
                amount_units,
                is_currency,
            })
            .collect(),
    ))
}

/// One page of a customer's ledger, newest first, and the number of rows in all.
pub fn transactions(
    conn: &mut PgConnection,
    customer_id: i64,
    page: i64,
    per_page: i64,
) -> Result<(Vec<TransactionRow>, i64), Error> {
    let per_page = per_page.clamp(1, 250);
    let page = page.max(1);
    let total: i64 = balance_transactions::table
        .filter(balance_transactions::customer_id.eq(customer_id))
        .count()
        .get_result(conn)?;
    let rows: Vec<(Transaction, Option<String>, Option<String>)> = balance_transactions::table
        .left_join(
            team_members::table.on(team_members::id
                .nullable()
                .eq(balance_transactions::actor_member_id)),
        )
        .left_join(api_tokens::table.on(api_tokens::id.nullable().eq(balance_transactions::actor_token_id)))
        .filter(balance_transactions::customer_id.eq(customer_id))
        .order((
            balance_transactions::created_at.desc(),
            balance_transactions::id.desc(),
        ))
        .limit(per_page)
        .offset((page - 1).saturating_mul(per_page))
        .select((
            Transaction::as_select(),
            team_members::email.nullable(),
            api_tokens::name.nullable(),
        ))
        .load(conn)?;
    let rows = rows
        .into_iter()
        .map(|(row, member, token)| TransactionRow {
            id: row.id,
            kind: row.kind,
            amount: row.amount,
            amount_units: row.amount_units,
            is_currency: row.is_currency,
            note: row.note,
            actor: member
                .or_else(|| token.map(|name| format!("API token {name}")))
                .unwrap_or_else(|| "system".to_string()),
            created_at: row.created_at,
        })
        .collect();
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_formatted_exactly() {
        let amount = |text: &str| BigDecimal::from_str(text).unwrap();
        assert_eq!(format_amount(&amount("12.5000"), true), "12.50");
        assert_eq!(format_amount(&amount("1000000"), true), "1000000.00");
        assert_eq!(format_amount(&amount("150.0000"), false), "150");
        assert_eq!(format_amount(&amount("12.2500"), false), "12.25");
        assert_eq!(format_amount(&amount("0.1"), true), "0.10");
    }

    #[test]
    fn amounts_are_parsed_strictly() {
        assert_eq!(parse_amount("10", 2).unwrap(), BigDecimal::from(10));
        assert_eq!(
            parse_amount(" 10.50 ", 2).unwrap(),
            BigDecimal::from_str("10.5").unwrap()
        );
        assert_eq!(parse_amount("1000000", 2).unwrap(), BigDecimal::from(1_000_000));
        assert!(parse_amount("0.0001", 4).is_ok());
        for bad in [
            "",
            "0",
            "0.00",
            "-1",
            "1.001",
            "1e9",
            "abc",
            "1,5",
            "+1",
            ".5",
            "5.",
            "1 000",
            "1000000.01",
            "NaN",
        ] {
            assert!(parse_amount(bad, 2).is_err(), "{bad:?} must be refused");
        }
        assert!(parse_amount("1.00001", 4).is_err());
    }

    #[test]
    fn units_are_codes_or_plain_names() {
        assert_eq!(parse_units("usd", true).unwrap(), "USD");
        assert!(parse_units("XYZ", true).is_err());
        assert!(parse_units("", true).is_err());
        assert_eq!(parse_units(" loyalty points ", false).unwrap(), "loyalty points");
        assert!(parse_units("<b>", false).is_err());
        assert!(parse_units(&"x".repeat(33), false).is_err());
    }

    #[test]
    fn amounts_are_shown_per_kind_of_unit() {
        let amount = BigDecimal::from_str("12.5000").unwrap();
        assert_eq!(format_amount(&amount, true), "12.50");
        assert_eq!(format_amount(&amount, false), "12.5");
        assert_eq!(
            format_amount(&BigDecimal::from_str("100.0000").unwrap(), false),
            "100"
        );
    }

    #[test]
    fn currency_list_is_sorted_iso_codes() {
        assert!(CURRENCIES.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(CURRENCIES
            .iter()
            .all(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())));
    }

    #[test]
    fn an_entry_built_by_hand_is_checked_too() {
        let mut entry = NewEntry::parse("credit", "10.5", "USD", true, "", None).unwrap();
        assert!(entry.check().is_ok());
        entry.amount = BigDecimal::from_str("10.5000").unwrap();
        assert!(entry.check().is_ok());
        entry.amount = BigDecimal::from_str("10.555").unwrap();
        assert!(entry.check().is_err());
        entry.amount = BigDecimal::from(0);
        assert!(entry.check().is_err());
    }
}
