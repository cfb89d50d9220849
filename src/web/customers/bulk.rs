//! Bulk actions on the customers list. The list's bulk form posts the action and the
//! selection — the ticked rows, every row of the page, or all customers matching the
//! list's filter — to `/customers/bulk`, which confirms how many customers (and for a
//! credit, the total per unit); confirming posts to `/customers/bulk/run`, which starts a
//! job (`domain::jobs`, `domain::customers::bulk`). Up to [`INLINE_LIMIT`] customers it
//! runs in the request and the job page shows the result; more run in the background and
//! the job page shows the progress. `/customers/bulk/export` exports the selection as CSV.
//!
//! "All matching" sends the filter, not the customers: the job reads the customers
//! matching it as it runs. The confirmation carries a one-time `form_token`: the same form
//! sent twice starts one job.

use actix_web::{web, HttpResponse};
use askama::Template;
use bigdecimal::BigDecimal;
use uuid::Uuid;

use super::export;
use super::list::ListParams;
use crate::db;
use crate::domain::customers::bulk::{
    self, BulkAction, BulkParams, CreditParams, Selection, StoredFilter, MAX_SELECTED,
};
use crate::domain::customers::listing::CustomerList;
use crate::domain::customers::listing::{export_selected, Total};
use crate::domain::jobs::{self, Job, NewJob, RunSettings, Started};
use crate::domain::ledger::format_amount;
use crate::domain::Actor;
use crate::error::Error;
use crate::web::context::Page;
use crate::web::forms::{rerender, FormErrors};
use crate::web::paging::thousands;
use crate::web::{redirect, render_status};
use crate::AppState;
use diesel::PgConnection;

/// Up to this many customers a bulk action runs in the request.
pub const INLINE_LIMIT: i64 = 1000;
/// How long an action run in the request may take: a thousand customers, each in the
/// same transactions as a single action.
const INLINE_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// Which customers the form means, as ticked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// The ticked rows (`key`).
    Selected,
    /// Every row of the page (`page_key`).
    Page,
    /// Every customer matching the filter.
    All,
}

/// The bulk form as posted (from the list, the confirmation or the credit step).
#[derive(Clone)]
struct BulkForm {
    action: Option<BulkAction>,
    scope: Scope,
    keys: Vec<String>,
    page_keys: Vec<String>,
    list: ListParams,
    credit: CreditParams,
    /// The credit's amount was typed (the confirmation with the total comes next).
    reviewing: bool,
    form_token: String,
}

impl BulkForm {
    fn from_pairs(pairs: &[(String, String)]) -> BulkForm {
        let mut form = BulkForm {
            action: None,
            scope: Scope::Selected,
            keys: Vec::new(),
            page_keys: Vec::new(),
            list: ListParams::from_pairs(pairs),
            credit: CreditParams::default(),
            reviewing: false,
            form_token: String::new(),
        };
        for (name, value) in pairs {
            let value = value.trim();
            match name.as_str() {
                "action" => form.action = BulkAction::parse(value),
                "scope" => {
                    form.scope = match value {
                        "all" => Scope::All,
                        "page" => Scope::Page,
                        _ => Scope::Selected,
                    }
                }
                "key" if !value.is_empty() => form.keys.push(value.to_string()),
                "page_key" if !value.is_empty() => form.page_keys.push(value.to_string()),
                "amount" => form.credit.amount = value.to_string(),
                "units" => form.credit.units = value.to_string(),
                "is_currency" => form.credit.is_currency = !value.is_empty(),
                "note" => form.credit.note = value.to_string(),
                "stage" => form.reviewing = value == "review",
                "form_token" => form.form_token = value.to_string(),
                _ => {}
            }
        }
        form
    }

    /// The selection the server acts on; an empty one is refused.
    fn selection(&self) -> Result<Selection, Error> {
        let keys = match self.scope {
            Scope::All => {
                return Ok(Selection::Matching {
                    filter: StoredFilter::of(&self.list.filter),
                })
            }
            Scope::Page => &self.page_keys,
            Scope::Selected => &self.keys,
        };
        let mut unique: Vec<String> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.contains(key) {
                unique.push(key.clone());
            }
        }
        if unique.is_empty() {
            return Err(Error::invalid(
                "selection",
                "Select at least one customer, or choose all on this page or all matching.",
            ));
        }
        if unique.len() > MAX_SELECTED {
            return Err(Error::invalid(
                "selection",
                format!("Select at most {MAX_SELECTED} customers, or choose all matching."),
            ));
        }
        Ok(Selection::Keys { keys: unique })
    }

    /// The list's query (filters, sort, page size), to come back to it.
    fn list_query(&self) -> String {
        let href = self.list.url("/customers").href();
        href.split_once('?')
            .map(|(_, query)| query.to_string())
            .unwrap_or_default()
    }

    fn list_href(&self) -> String {
        let query = self.list_query();
        if query.is_empty() {
            "/customers".to_string()
        } else {
            format!("/customers?{query}")
        }
    }

    /// The action, which the member's role must allow (delete and restore: admins).
    fn allowed_action(&self, page: &Page) -> Result<BulkAction, Error> {
        let action = self
            .action
            .ok_or_else(|| Error::BadRequest("Choose an action for the selected customers.".into()))?;
        if action.needs_admin() && !page.is_admin() {
            return Err(Error::Forbidden(
                "Only admins may delete or restore customers.".to_string(),
            ));
        }
        Ok(action)
    }
}

#[derive(Template)]
#[template(path = "customers/bulk.html")]
struct ConfirmPage {
    page: Page,
    action: BulkAction,
    form: BulkForm,
    selection: Selection,
    count: Total,
    /// The credit is valid and its total shown: the page confirms.
    credit_ready: bool,
    form_token: String,
    errors: FormErrors,
}

impl ConfirmPage {
    fn count_text(&self) -> String {
        match self.count {
            Total::Exact(n) => thousands(n),
            Total::About(n) => format!("about {}", thousands(n)),
        }
    }

    fn noun(&self) -> &'static str {
        if self.count == Total::Exact(1) {
            "customer"
        } else {
            "customers"
        }
    }

    fn is_all(&self) -> bool {
        matches!(self.selection, Selection::Matching { .. })
    }

    fn keys(&self) -> &[String] {
        match &self.selection {
            Selection::Keys { keys } => keys,
            Selection::Matching { .. } => &[],
        }
    }

    fn is_credit(&self) -> bool {
        self.action == BulkAction::Credit
    }

    /// The list's own parameters, carried as hidden fields.
    fn list_fields(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_str(&self.form.list_query()).unwrap_or_default()
    }

    fn back(&self) -> String {
        self.form.list_href()
    }

    /// "10.00 USD each, 25,000.00 USD in total".
    fn credit_total(&self) -> Option<String> {
        let entry = self.form.credit.entry(None).ok()?;
        let total = &entry.amount * BigDecimal::from(self.count.value());
        let about = if self.count.is_exact() { "" } else { "about " };
        Some(format!(
            "{} {} each, {about}{} {} in total",
            format_amount(&entry.amount, entry.is_currency),
            entry.units,
            format_amount(&total, entry.is_currency),
            entry.units
        ))
    }

    fn runs_in_background(&self) -> bool {
        !runs_inline(self.count)
    }

    fn inline_limit(&self) -> String {
        thousands(INLINE_LIMIT)
    }
}

/// Whether a job of this many customers runs in the request.
fn runs_inline(count: Total) -> bool {
    count.is_exact() && count.value() <= INLINE_LIMIT
}

/// Back to the list with a message: nothing to confirm.
fn back_to_list(page: &Page, form: &BulkForm, message: &str) -> HttpResponse {
    page.flash("error", message);
    redirect(&form.list_href())
}

/// The form's selection, or the way back to the list with why it cannot be used.
fn selection_or_back(page: &Page, form: &BulkForm) -> Result<Result<Selection, HttpResponse>, Error> {
    match form.selection() {
        Ok(selection) => Ok(Ok(selection)),
        Err(error) => {
            let errors = FormErrors::from_error(error)?;
            Ok(Err(back_to_list(
                page,
                form,
                errors.summary().unwrap_or("Check the selection."),
            )))
        }
    }
}

/// `POST /customers/bulk`: the confirmation (and for a credit, first its amount).
pub async fn confirm(
    state: web::Data<AppState>,
    page: Page,
    body: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let form = BulkForm::from_pairs(&body);
    let action = form.allowed_action(&page)?;
    let selection = match selection_or_back(&page, &form)? {
        Ok(selection) => selection,
        Err(back) => return Ok(back),
    };
    let count = count(&state, page.program.id, &selection).await?;
    if count == Total::Exact(0) {
        return Ok(back_to_list(&page, &form, "No customer matches this selection."));
    }
    let mut errors = FormErrors::default();
    let mut credit_ready = false;
    if action == BulkAction::Credit && form.reviewing {
        match form.credit.entry(None) {
            Ok(_) => credit_ready = true,
            Err(error) => errors = FormErrors::from_error(error)?,
        }
    }
    let form_token = match Uuid::parse_str(&form.form_token) {
        Ok(token) => token.to_string(),
        Err(_) => Uuid::new_v4().to_string(),
    };
    let confirm = ConfirmPage {
        page,
        action,
        form,
        selection,
        count,
        credit_ready,
        form_token,
        errors,
    };
    // 422 when the credit's amount was refused, with the message next to its field.
    render_status(confirm.errors.status(), &confirm)
}

async fn count(state: &web::Data<AppState>, program_id: i64, selection: &Selection) -> Result<Total, Error> {
    let (list, selection) = (state.customer_list.clone(), selection.clone());
    db::run(&state.pool, move |conn| {
        bulk::count(conn, &list, program_id, &selection)
    })
    .await
}

/// `POST /customers/bulk/run`: starts the job, and runs it here when it is small.
pub async fn run(
    state: web::Data<AppState>,
    page: Page,
    body: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let form = BulkForm::from_pairs(&body);
    let action = form.allowed_action(&page)?;
    let selection = match selection_or_back(&page, &form)? {
        Ok(selection) => selection,
        Err(back) => return Ok(back),
    };
    let Ok(token) = Uuid::parse_str(&form.form_token) else {
        return Ok(back_to_list(
            &page,
            &form,
            "This form is incomplete or expired: choose the customers and the action again.",
        ));
    };
    let credit = if action == BulkAction::Credit {
        if let Err(error) = form.credit.entry(None) {
            let count = count(&state, page.program.id, &selection).await?;
            return rerender(error, |errors| ConfirmPage {
                page,
                action,
                form,
                selection,
                count,
                credit_ready: false,
                form_token: token.to_string(),
                errors,
            });
        }
        Some(form.credit.clone())
    } else {
        None
    };
    let list_query = form.list_query();
    let described = bulk::described(&selection, &list_query);
    let mut params = serde_json::to_value(BulkParams { selection, credit })
        .map_err(|error| Error::Internal(anyhow::anyhow!("bulk parameters: {error}")))?;
    params["list_query"] = serde_json::Value::String(list_query);
    let (program_id, actor, list) = (page.program.id, page.actor(), state.customer_list.clone());
    let settings = state.config.jobs.run_settings();
    let owner = format!("request-{}", crate::random::random_token(12));
    let new = NewJob {
        program_id,
        kind: action.kind(),
        params,
        form_token: Some(token),
        // Counted again when the job starts.
        total: 0,
        described,
    };
    let started = db::run_within(&state.pool, INLINE_WITHIN, move |conn| {
        start_job(conn, &list, &actor, new, &owner, &settings)
    })
    .await?;
    let Some((new, inline, job)) = started else {
        return Ok(back_to_list(
            &page,
            &form,
            "No customer matches this selection any more.",
        ));
    };
    let message = started_message(action, new, inline, &job);
    page.flash(message.0, message.1);
    Ok(redirect(&format!("/jobs/{}", job.id)))
}

/// Counts the selection again and starts the job (`new.total` is that count; once per
/// form token), then runs it to its end here when it is small. Whether the job is new,
/// whether it ran here, and the job as it is now; `None` when no customer matches any more.
fn start_job(
    conn: &mut PgConnection,
    list: &CustomerList,
    actor: &Actor,
    mut new: NewJob,
    owner: &str,
    settings: &RunSettings,
) -> Result<Option<(bool, bool, Job)>, Error> {
    let selection: BulkParams = serde_json::from_value(new.params.clone())
        .map_err(|error| Error::Internal(anyhow::anyhow!("bulk parameters: {error}")))?;
    let program_id = new.program_id;
    let counted = bulk::count(conn, list, program_id, &selection.selection)?;
    if counted == Total::Exact(0) {
        return Ok(None);
    }
    let inline = runs_inline(counted);
    new.total = counted.value();
    let started = jobs::create(conn, actor, new, inline.then_some((owner, settings.lease)))?;
    if let (Started::New(job), true) = (&started, inline) {
        jobs::run_to_end(conn, list, job.id, owner, settings, &|_| false)?;
    }
    let job = jobs::find(conn, program_id, started.job().id)?;
    Ok(Some((matches!(started, Started::New(_)), inline, job)))
}

/// The flash message on the job's page once the form started (or found) its job.
fn started_message(action: BulkAction, new: bool, inline: bool, job: &Job) -> (&'static str, String) {
    if !new {
        (
            "info",
            "This form was already sent: here is the job it started, which ran once.".to_string(),
        )
    } else if inline {
        let skipped = if job.skipped > 0 {
            format!(", {} skipped (see why below)", thousands(job.skipped))
        } else {
            String::new()
        };
        (
            "success",
            format!("{}: {} done{skipped}.", action_done(action), thousands(job.done)),
        )
    } else {
        (
            "success",
            format!(
                "{} customers are being handled in the background; you may leave this page.",
                thousands(job.total)
            ),
        )
    }
}

fn action_done(action: BulkAction) -> &'static str {
    match action {
        BulkAction::Approve => "Approved",
        BulkAction::Unapprove => "Unapproved",
        BulkAction::Delete => "Deleted",
        BulkAction::Restore => "Restored",
        BulkAction::Invite => "Invites queued",
        BulkAction::Credit => "Credited",
    }
}

/// `POST /customers/bulk/export`: the selection as CSV (any member may export).
pub async fn export(
    state: web::Data<AppState>,
    page: Page,
    body: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let form = BulkForm::from_pairs(&body);
    match selection_or_back(&page, &form)? {
        Ok(Selection::Matching { filter }) => {
            Ok(export::stream_filtered(&state, &page.program, filter.filter()))
        }
        Ok(Selection::Keys { keys }) => {
            let program_id = page.program.id;
            let rows = db::run(&state.pool, move |conn| export_selected(conn, program_id, &keys)).await?;
            export::selected(&page.program, &rows)
        }
        Err(back) => Ok(back),
    }
}
