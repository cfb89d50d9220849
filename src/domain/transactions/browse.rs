//! The transactions a dashboard member browses: a program's, filtered by status, date range
//! and customer, newest first, each with the customer it belongs to and the rewards it
//! triggered; and the latest of one customer for the customer page.

use std::collections::HashMap;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::{Transaction, TransactionStatus};
use crate::db::schema::{customers, rewards, transactions};
use crate::domain::ledger::format_amount;
use crate::domain::rewards::{BeneficiaryRole, RewardStatus};
use crate::error::Error;

/// What the transactions page filters on; every part optional.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub status: Option<TransactionStatus>,
    /// From this instant on (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Before this instant (exclusive).
    pub until: Option<DateTime<Utc>>,
    pub customer_id: Option<i64>,
}

/// A reward a transaction triggered, in brief.
#[derive(Clone, Debug)]
pub struct RewardBrief {
    pub id: i64,
    pub role: BeneficiaryRole,
    pub status: RewardStatus,
    pub amount: BigDecimal,
    pub amount_units: String,
    pub is_currency: bool,
    pub beneficiary_key: String,
}

impl RewardBrief {
    pub fn amount_display(&self) -> String {
        format!(
            "{} {}",
            format_amount(&self.amount, self.is_currency),
            self.amount_units
        )
    }
}

/// One transaction with its customer and rewards.
#[derive(Clone, Debug)]
pub struct Row {
    pub transaction: Transaction,
    pub customer_key: String,
    pub customer_name: Option<String>,
    pub rewards: Vec<RewardBrief>,
}

impl Row {
    pub fn amount_display(&self) -> String {
        format!(
            "{} {}",
            format_amount(&self.transaction.amount, true),
            self.transaction.amount_units
        )
    }

    /// Why rules that looked at it created no reward, one line each.
    pub fn notes(&self) -> Vec<String> {
        self.transaction
            .reward_notes
            .as_array()
            .map(|notes| {
                notes
                    .iter()
                    .map(|note| {
                        let rule = note.get("rule").and_then(|v| v.as_str()).unwrap_or("A rule");
                        let reason = note.get("reason").and_then(|v| v.as_str()).unwrap_or("");
                        format!("{rule}: {reason}")
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

type Filtered<'a> = transactions::BoxedQuery<'a, diesel::pg::Pg>;

fn filtered(program_id: i64, filter: &Filter) -> Filtered<'static> {
    let mut query = transactions::table
        .filter(transactions::program_id.eq(program_id))
        .into_boxed();
    if let Some(status) = filter.status {
        query = query.filter(transactions::status.eq(status));
    }
    if let Some(from) = filter.from {
        query = query.filter(transactions::created_at.ge(from));
    }
    if let Some(until) = filter.until {
        query = query.filter(transactions::created_at.lt(until));
    }
    if let Some(customer_id) = filter.customer_id {
        query = query.filter(transactions::customer_id.eq(customer_id));
    }
    query
}

/// Matching transactions are counted exactly up to this many; beyond, the page says "more
/// than" this. (Counting every one of millions of rows on each view costs as much as
/// reading them all.)
pub const COUNT_LIMIT: i64 = 1000;

/// One page of transactions and how many match.
pub struct Listing {
    pub rows: Vec<Row>,
    /// Exact when `total_is_exact`, else [`COUNT_LIMIT`] ("more than").
    pub total: i64,
    pub total_is_exact: bool,
    /// More transactions follow this page.
    pub has_next: bool,
}

/// One page of the program's transactions matching `filter`, newest first, and how many
/// match, counted up to [`COUNT_LIMIT`].
pub fn list(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &Filter,
    page: i64,
    per_page: i64,
) -> Result<Listing, Error> {
    let per_page = per_page.clamp(1, 250);
    let counted = filtered(program_id, filter)
        .select(transactions::id)
        .limit(COUNT_LIMIT + 1)
        .load::<i64>(conn)?
        .len() as i64;
    let total_is_exact = counted <= COUNT_LIMIT;
    let total = counted.min(COUNT_LIMIT);
    // Most customers have no transactions: their page then needs no second query.
    if counted == 0 {
        return Ok(Listing {
            rows: Vec::new(),
            total,
            total_is_exact,
            has_next: false,
        });
    }
    let mut rows: Vec<Transaction> = filtered(program_id, filter)
        .order((transactions::created_at.desc(), transactions::id.desc()))
        .limit(per_page + 1)
        .offset((page.max(1) - 1).saturating_mul(per_page))
        .select(Transaction::as_select())
        .load(conn)?;
    let has_next = rows.len() as i64 > per_page;
    rows.truncate(usize::try_from(per_page).unwrap_or(0));
    Ok(Listing {
        rows: with_details(conn, rows)?,
        total,
        total_is_exact,
        has_next,
    })
}

/// The customer's latest `limit` transactions, newest first, and how many they have.
pub fn for_customer(
    conn: &mut PgConnection,
    program_id: i64,
    customer_id: i64,
    limit: i64,
) -> Result<Listing, Error> {
    let filter = Filter {
        customer_id: Some(customer_id),
        ..Filter::default()
    };
    list(conn, program_id, &filter, 1, limit)
}

/// Adds each transaction's customer and rewards, in two queries for the whole page.
fn with_details(conn: &mut PgConnection, rows: Vec<Transaction>) -> Result<Vec<Row>, Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let customer_ids: Vec<i64> = rows.iter().map(|row| row.customer_id).collect();
    let names: HashMap<i64, (String, Option<String>)> = customers::table
        .filter(customers::id.eq_any(&customer_ids))
        .select((customers::id, customers::key, customers::name))
        .load::<(i64, String, Option<String>)>(conn)?
        .into_iter()
        .map(|(id, key, name)| (id, (key, name)))
        .collect();
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let mut rewards_of: HashMap<i64, Vec<RewardBrief>> = HashMap::new();
    let found = rewards::table
        .inner_join(customers::table.on(customers::id.eq(rewards::beneficiary_id)))
        .filter(rewards::transaction_id.eq_any(&ids))
        .order(rewards::id)
        .select((
            rewards::transaction_id,
            rewards::id,
            rewards::role,
            rewards::status,
            rewards::amount,
            rewards::amount_units,
            rewards::is_currency,
            customers::key,
        ))
        .load::<(
            Option<i64>,
            i64,
            BeneficiaryRole,
            RewardStatus,
            BigDecimal,
            String,
            bool,
            String,
        )>(conn)?;
    for (transaction_id, id, role, status, amount, amount_units, is_currency, beneficiary_key) in found {
        if let Some(transaction_id) = transaction_id {
            rewards_of.entry(transaction_id).or_default().push(RewardBrief {
                id,
                role,
                status,
                amount,
                amount_units,
                is_currency,
                beneficiary_key,
            });
        }
    }
    Ok(rows
        .into_iter()
        .map(|transaction| {
            let (customer_key, customer_name) =
                names.get(&transaction.customer_id).cloned().unwrap_or_default();
            Row {
                rewards: rewards_of.remove(&transaction.id).unwrap_or_default(),
                customer_key,
                customer_name,
                transaction,
            }
        })
        .collect())
}

/// `[from, until)`, either end open.
pub type DayRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A first and last day typed as `YYYY-MM-DD` (both optional, inclusive, UTC), as the
/// instants `[from, until)`; each problem is reported against `from` or `to`.
pub fn parse_days(from: &str, to: &str) -> Result<DayRange, Error> {
    let mut fields = crate::error::FieldErrors::new();
    let mut day = |field: &str, raw: &str| {
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        match chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
            Ok(day) => Some(day),
            Err(_) => {
                fields.insert(field.into(), vec!["Enter a date as YYYY-MM-DD.".into()]);
                None
            }
        }
    };
    let first = day("from", from);
    let last = day("to", to);
    if let (Some(first), Some(last)) = (first, last) {
        if last < first {
            fields.insert("to".into(), vec!["The end date is before the start date.".into()]);
        }
    }
    if !fields.is_empty() {
        return Err(Error::invalid_fields(fields));
    }
    let start = |day: chrono::NaiveDate| day.and_time(chrono::NaiveTime::MIN).and_utc();
    Ok((first.map(start), last.and_then(|day| day.succ_opt()).map(start)))
}
