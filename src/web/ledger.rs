//! `GET|POST /customers/{key}/credit`: credit (support, admin) or debit (admin) a customer.
//!
//! The form carries a one-time `form_token` (a random UUID made when the form is shown); it
//! becomes the booking's idempotency key `form:<uuid>`, so a double-click or a re-sent
//! form books once.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use crate::db;
use crate::domain::customers::{self, Customer};
use crate::domain::ledger::{self, Balance, Kind, Transaction, TransactionRow, CURRENCIES};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::FormErrors;
use crate::web::paging::{ListUrl, Pager};
use crate::web::{redirect, render_status};
use crate::AppState;

/// Ledger lines per page on the credit page (and the customer page's balance panel).
pub const LEDGER_PER_PAGE: i64 = 20;
const DEFAULT_CURRENCY: &str = "USD";

/// What the form shows: the user's input as typed (or the defaults).
pub struct CreditValues {
    pub kind: String,
    pub amount: String,
    pub is_currency: bool,
    pub currency: String,
    pub unit_name: String,
    pub note: String,
    pub form_token: String,
}

impl CreditValues {
    /// The values as submitted, to show again with the form's messages.
    fn typed(kind: &str, form: &CreditForm) -> CreditValues {
        CreditValues {
            kind: kind.to_string(),
            amount: form.amount.clone(),
            is_currency: form.is_currency.is_some(),
            currency: form.currency.clone(),
            unit_name: form.unit_name.clone(),
            note: form.note.clone(),
            form_token: form.form_token.trim().to_string(),
        }
    }

    fn fresh() -> CreditValues {
        CreditValues {
            kind: Kind::Credit.as_str().to_string(),
            amount: String::new(),
            is_currency: true,
            currency: DEFAULT_CURRENCY.to_string(),
            unit_name: String::new(),
            note: String::new(),
            form_token: Uuid::new_v4().to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "ledger/credit.html")]
struct CreditPage {
    page: Page,
    customer: Customer,
    balances: Vec<Balance>,
    transactions: Vec<TransactionRow>,
    ledger_page: i64,
    ledger_pager: Pager,
    form: CreditValues,
    errors: FormErrors,
    currencies: &'static [&'static str],
}

impl CreditPage {
    /// The units message, next to the currency box or the unit name box, whichever is in
    /// use (`currency` says which one asks).
    fn units_error(&self, currency: bool) -> Option<String> {
        self.errors
            .joined("units")
            .filter(|_| self.form.is_currency == currency)
    }
}

/// Problems that belong to no input of the form (deleted customer, expired form).
const GENERAL_FIELDS: &[&str] = &["customer", "form_token", "idempotency_key", "kind"];

#[derive(Deserialize)]
pub struct LedgerQuery {
    ledger_page: Option<i64>,
}

/// The customer, their balances and one page of their ledger.
async fn load(
    state: &AppState,
    program_id: i64,
    key: String,
    ledger_page: i64,
) -> Result<(Customer, Vec<Balance>, Vec<TransactionRow>, i64), Error> {
    db::run(&state.pool, move |conn| {
        let customer = customers::find_by_key(conn, program_id, &key)?;
        let balances = ledger::balances(conn, customer.id)?;
        let (transactions, total) = ledger::transactions(conn, customer.id, ledger_page, LEDGER_PER_PAGE)?;
        Ok((customer, balances, transactions, total))
    })
    .await
}

/// The pages of a customer's ledger, for the balance panel on `path`.
pub fn ledger_pager(path: &str, ledger_page: i64, total: i64) -> Pager {
    let url = ListUrl::new(path).anchor("balance");
    Pager::new(url, "ledger_page", ledger_page, LEDGER_PER_PAGE, total)
}

async fn show(
    state: &AppState,
    page: Page,
    key: String,
    ledger_page: i64,
    form: CreditValues,
    errors: FormErrors,
) -> Result<HttpResponse, Error> {
    let ledger_page = ledger_page.max(1);
    let (customer, balances, transactions, total) = load(state, page.program.id, key, ledger_page).await?;
    let ledger_pager = ledger_pager(&page.path, ledger_page, total);
    render_status(
        errors.status(),
        &CreditPage {
            page,
            customer,
            balances,
            transactions,
            ledger_pager,
            ledger_page,
            form,
            errors,
            currencies: CURRENCIES,
        },
    )
}

pub async fn form(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<String>,
    query: web::Query<LedgerQuery>,
) -> Result<HttpResponse, Error> {
    let ledger_page = query.ledger_page.unwrap_or(1);
    show(
        &state,
        page,
        path.into_inner(),
        ledger_page,
        CreditValues::fresh(),
        FormErrors::default(),
    )
    .await
}

#[derive(Deserialize)]
pub struct CreditForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    amount: String,
    /// A checkbox: present when checked.
    is_currency: Option<String>,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    unit_name: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    form_token: String,
}

pub async fn submit(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<String>,
    form: web::Form<CreditForm>,
) -> Result<HttpResponse, Error> {
    let key = path.into_inner();
    let form = form.into_inner();
    let kind = match form.kind.trim() {
        "" => Kind::Credit.as_str(),
        other => other,
    };
    // The route admits support (`web::routes`); a debit needs an admin, whatever the form offered.
    if kind == Kind::Debit.as_str() && !page.is_admin() {
        return Err(Error::Forbidden("Only admins may debit a balance.".to_string()));
    }
    let is_currency = form.is_currency.is_some();
    let mut values = CreditValues::typed(kind, &form);
    let token = match Uuid::parse_str(&values.form_token) {
        Ok(token) => token,
        Err(_) => {
            values.form_token = Uuid::new_v4().to_string();
            let errors = FormErrors::one(
                "form_token",
                "This form is incomplete or expired. Check the values and submit it again.",
            );
            return show(&state, page, key, 1, values, errors).await;
        }
    };
    let units = if is_currency {
        form.currency.clone()
    } else {
        form.unit_name.clone()
    };
    let (kind, amount, note) = (kind.to_string(), form.amount.clone(), form.note.clone());
    let program_id = page.program.id;
    let actor = page.actor();
    let booking_key = key.clone();
    let booked = db::run(&state.pool, move |conn| {
        let customer = customers::find_by_key(conn, program_id, &booking_key)?;
        let idempotency_key = format!("form:{token}");
        let entry = ledger::parse_for_customer(
            conn,
            customer.id,
            &kind,
            &amount,
            &units,
            is_currency,
            &note,
            Some(&idempotency_key),
        )?;
        let (transaction, new) = ledger::book(conn, program_id, customer.id, &actor, entry)?;
        Ok((customer, transaction, new))
    })
    .await;
    match booked {
        Ok((customer, transaction, true)) => {
            page.flash("success", booked_message(&transaction, &customer));
            Ok(redirect(&format!("/customers/{}#balance", customer.key)))
        }
        Ok((customer, _, false)) => {
            page.flash(
                "info",
                "This form was already submitted: the booking was made once, not twice.",
            );
            Ok(redirect(&format!("/customers/{}#balance", customer.key)))
        }
        Err(error) => show(&state, page, key, 1, values, FormErrors::from_error(error)?).await,
    }
}

/// The flash after a booking: what moved, how much and for whom.
fn booked_message(transaction: &Transaction, customer: &Customer) -> String {
    let verb = if transaction.kind == Kind::Debit {
        "Debited"
    } else {
        "Credited"
    };
    format!(
        "{verb} {} for {}.",
        crate::web::format::money(
            &transaction.amount,
            &transaction.amount_units,
            transaction.is_currency
        ),
        customer.display_name()
    )
}
