//! Balances and credit totals per unit, for a customer or a whole program.

use bigdecimal::BigDecimal;
use diesel::dsl::sum;
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::balance_transactions;
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
