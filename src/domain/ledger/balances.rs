//! Balances and credit totals per unit, for a customer or a whole program.

use bigdecimal::{BigDecimal, ToPrimitive};
use diesel::dsl::sum;
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::{balance_transactions, customer_balances};
use crate::error::Error;

use super::{Kind, UNIT_DECIMALS};

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

/// A plain decimal (`-1234567.50`, as `BigDecimal::to_plain_string` writes it) with its
/// integer digits grouped by thousands: `-1,234,567.50`.
pub fn grouped(plain: &str) -> String {
    let (sign, unsigned) = match plain.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", plain),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    if !whole.bytes().all(|byte| byte.is_ascii_digit()) {
        return plain.to_string();
    }
    let mut out = String::with_capacity(plain.len() + whole.len() / 3);
    out.push_str(sign);
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

/// (units, is_currency, amount) rows as balances: currencies first, then by unit name.
fn in_order(rows: impl IntoIterator<Item = (String, bool, BigDecimal)>) -> Vec<Balance> {
    let mut balances: Vec<Balance> = rows
        .into_iter()
        .map(|(amount_units, is_currency, amount)| Balance {
            amount,
            amount_units,
            is_currency,
        })
        .collect();
    balances.sort_by(|a, b| (!a.is_currency, &a.amount_units).cmp(&(!b.is_currency, &b.amount_units)));
    balances
}

/// The customer's balance per unit: credits minus debits (units never used are absent).
/// Read from the kept balances (one row per unit, kept with every booking by the triggers
/// on the ledger), so a long ledger costs nothing here.
pub fn balances(conn: &mut PgConnection, customer_id: i64) -> Result<Vec<Balance>, Error> {
    let rows: Vec<(String, bool, BigDecimal)> = customer_balances::table
        .filter(customer_balances::customer_id.eq(customer_id))
        .select((
            customer_balances::amount_units,
            customer_balances::is_currency,
            customer_balances::balance,
        ))
        .load(conn)?;
    Ok(in_order(rows))
}

/// [`balances`] and the number of entries in all units, read together (the customer page
/// shows both).
pub fn balances_and_entries(conn: &mut PgConnection, customer_id: i64) -> Result<(Vec<Balance>, i64), Error> {
    let rows: Vec<(String, bool, BigDecimal, i64)> = customer_balances::table
        .filter(customer_balances::customer_id.eq(customer_id))
        .select((
            customer_balances::amount_units,
            customer_balances::is_currency,
            customer_balances::balance,
            customer_balances::entries,
        ))
        .load(conn)?;
    let entries = rows.iter().map(|row| row.3).sum();
    Ok((
        in_order(
            rows.into_iter()
                .map(|(units, is_currency, balance, _)| (units, is_currency, balance)),
        ),
        entries,
    ))
}

/// The balance in one unit (zero when never used). A debit's check reads it with the
/// customer locked (see `book`), so no booking of theirs lands in between.
pub fn balance_of(
    conn: &mut PgConnection,
    customer_id: i64,
    units: &str,
    is_currency: bool,
) -> Result<BigDecimal, Error> {
    Ok(customer_balances::table
        .filter(customer_balances::customer_id.eq(customer_id))
        .filter(customer_balances::amount_units.eq(units))
        .filter(customer_balances::is_currency.eq(is_currency))
        .select(customer_balances::balance)
        .first(conn)
        .optional()?
        .unwrap_or_default())
}

/// How many entries the customer's ledger holds, in all units.
pub fn entry_count(conn: &mut PgConnection, customer_id: i64) -> Result<i64, Error> {
    let total: Option<BigDecimal> = customer_balances::table
        .filter(customer_balances::customer_id.eq(customer_id))
        .select(sum(customer_balances::entries))
        .get_result(conn)?;
    Ok(total.and_then(|total| total.to_i64()).unwrap_or(0))
}

/// Everything ever credited in a program, per unit (debits not subtracted): the
/// dashboard's "credits issued". Filtering on `kind` in SQL lets the partial index on
/// credits answer it without touching the table.
pub fn credits_issued(conn: &mut PgConnection, program_id: i64) -> Result<Vec<Balance>, Error> {
    let totals: Vec<(String, bool, Option<BigDecimal>)> = balance_transactions::table
        .filter(balance_transactions::program_id.eq(program_id))
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
        .load(conn)?;
    Ok(in_order(totals.into_iter().map(|(units, is_currency, total)| {
        (units, is_currency, total.unwrap_or_default())
    })))
}

/// Everything ever credited to one customer, per unit (the API's stats), from the kept
/// balances.
pub fn credits_of(conn: &mut PgConnection, customer_id: i64) -> Result<Vec<Balance>, Error> {
    let rows: Vec<(String, bool, BigDecimal)> = customer_balances::table
        .filter(customer_balances::customer_id.eq(customer_id))
        .filter(customer_balances::credited.gt(BigDecimal::from(0)))
        .select((
            customer_balances::amount_units,
            customer_balances::is_currency,
            customer_balances::credited,
        ))
        .load(conn)?;
    Ok(in_order(rows))
}
