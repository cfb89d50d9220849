//! The balance ledger: append-only credits and debits per customer.
//!
//! Amounts are exact decimals (`NUMERIC(20,4)` in PostgreSQL, [`BigDecimal`] here), never
//! floats. A balance is the sum per (`amount_units`, `is_currency`): credits minus debits,
//! kept in `customer_balances` by triggers on the ledger in the same transaction as each
//! booking (with the credits and the number of entries), so reading it never sums the ledger.
//! [`book`] is the one way money moves, for the dashboard and the API alike: it locks the
//! customer, refuses a debit that would take the balance below zero, writes the row and its
//! audit event in one transaction, and books an idempotency key at most once.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::{api_tokens, balance_transactions, team_members};
use crate::db::text_enum;
use crate::error::Error;

mod balances;
mod batch;
mod booking;
mod entries;

pub use balances::{
    balance_of, balances, balances_and_entries, credits_issued, credits_of, format_amount, grouped, Balance,
};
pub use batch::{book_credits, NewCredit};
pub use booking::{book, parse_for_customer};
pub use entries::{
    is_currency_code, parse_amount, parse_units, NewEntry, CURRENCIES, CURRENCY_DECIMALS, MAX_AMOUNT,
    MAX_IDEMPOTENCY_KEY_CHARS, MAX_NOTE_CHARS, MAX_UNIT_CHARS, UNIT_DECIMALS,
};

text_enum! {
    /// Which way a booking moves the balance (`balance_transactions.kind`).
    pub enum Kind {
        Credit = "credit",
        Debit = "debit",
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

/// One page of a customer's ledger, newest first, and the number of rows in all.
pub fn transactions(
    conn: &mut PgConnection,
    customer_id: i64,
    page: i64,
    per_page: i64,
) -> Result<(Vec<TransactionRow>, i64), Error> {
    // Kept with the balances: counting a long ledger's rows is what a page must not do.
    let total = balances::entry_count(conn, customer_id)?;
    transactions_of(conn, customer_id, total, page, per_page)
}

/// [`transactions`] when the number of entries is known (read with the balances by
/// [`balances_and_entries`]).
pub fn transactions_of(
    conn: &mut PgConnection,
    customer_id: i64,
    total: i64,
    page: i64,
    per_page: i64,
) -> Result<(Vec<TransactionRow>, i64), Error> {
    let per_page = per_page.clamp(1, 250);
    let page = page.max(1);
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
    use std::str::FromStr;

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
