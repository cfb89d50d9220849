//! Bulk decisions: the queue's form posts the selected rows — or "all N matching this
//! filter" — to `/rewards/confirm`, which shows how many rewards and how much per unit;
//! confirming posts to `/rewards/decide`, which decides all of them or none
//! (`review::decide_many`). For "all matching", the count confirmed travels with the form:
//! when the matching rewards changed meanwhile, nothing is decided and the reviewer sees
//! the new count.

use actix_web::{web, HttpResponse};
use askama::Template;

use crate::db;
use crate::domain::rewards::queue::{self, QueueFilter, RawFilter, Selection};
use crate::domain::rewards::review::{self, Decision};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::{rerender, FormErrors};
use crate::web::{redirect, render};
use crate::AppState;

use super::actions::reviewer;
use super::{amount_text, queue_url};

/// How long a bulk decision may take: a thousand rewards credited at once book a thousand
/// ledger entries, longer than a page's usual limit; a reviewer waits for it.
const BULK_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// The bulk form as posted.
#[derive(Clone, Default)]
struct BulkForm {
    /// `approve` or `deny`.
    decision: String,
    /// True for "all N matching the filter", false for the selected rows.
    all: bool,
    ids: Vec<i64>,
    raw: RawFilter,
    /// "All matching": the count the reviewer confirmed.
    expected: Option<i64>,
    reason: String,
}

impl BulkForm {
    fn from_pairs(pairs: &[(String, String)]) -> BulkForm {
        let mut form = BulkForm::default();
        for (name, value) in pairs {
            match name.as_str() {
                // The queue's "all N matching" buttons say `approve_all` / `deny_all`.
                "decision" => match value.trim().strip_suffix("_all") {
                    Some(decision) => {
                        form.decision = decision.to_string();
                        form.all = true;
                    }
                    None => form.decision = value.trim().to_string(),
                },
                "scope" => form.all = value == "all",
                "ids" => form.ids.extend(value.trim().parse::<i64>().ok()),
                "status" => form.raw.status = value.clone(),
                "rule" => form.raw.rule = value.clone(),
                "flagged" => form.raw.flagged = !value.trim().is_empty(),
                "owed" => form.raw.owed = !value.trim().is_empty(),
                "beneficiary" => form.raw.beneficiary = value.clone(),
                "from" => form.raw.from = value.clone(),
                "to" => form.raw.to = value.clone(),
                "expected" => form.expected = value.trim().parse().ok(),
                "reason" => form.reason = value.clone(),
                _ => {}
            }
        }
        form
    }

    fn is_deny(&self) -> bool {
        self.decision == "deny"
    }

    fn check_decision(&self) -> Result<(), Error> {
        match self.decision.as_str() {
            "approve" | "deny" => Ok(()),
            _ => Err(Error::invalid("decision", "Choose approve or deny.")),
        }
    }
}

#[derive(Template)]
#[template(path = "rewards/confirm.html")]
struct ConfirmPage {
    page: Page,
    form: BulkForm,
    selection: Selection,
    errors: FormErrors,
}

impl ConfirmPage {
    fn totals(&self) -> Vec<String> {
        self.selection
            .totals
            .iter()
            .map(|(units, is_currency, total)| amount_text(total, units, *is_currency))
            .collect()
    }

    fn back(&self) -> String {
        queue_url(&self.form.raw).href()
    }

    fn verb(&self) -> &'static str {
        if self.form.is_deny() {
            "Deny"
        } else {
            "Approve"
        }
    }
}

/// The rewards the form means: the selected rows, or every reward matching its filter.
fn selection(conn: &mut diesel::PgConnection, program_id: i64, form: &BulkForm) -> Result<Selection, Error> {
    if form.all {
        let filter = QueueFilter::parse(conn, program_id, &form.raw)?;
        queue::matching(conn, program_id, &filter)
    } else {
        queue::selected(conn, program_id, &form.ids)
    }
}

pub async fn confirm(
    state: web::Data<AppState>,
    page: Page,
    body: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let form = BulkForm::from_pairs(&body);
    form.check_decision()?;
    let program_id = page.program.id;
    let loaded = form.clone();
    let selection = db::run(&state.pool, move |conn| selection(conn, program_id, &loaded)).await;
    let selection = match selection {
        Ok(selection) if !selection.ids.is_empty() => selection,
        Ok(_) => {
            page.flash("error", "Select at least one reward (or choose all matching).");
            return Ok(redirect(&queue_url(&form.raw).href()));
        }
        Err(error) => {
            let errors = FormErrors::from_error(error)?;
            page.flash("error", errors.summary().unwrap_or("Check the filter."));
            return Ok(redirect(&queue_url(&form.raw).href()));
        }
    };
    let mut form = form;
    if form.all {
        form.expected = Some(selection.ids.len() as i64);
    }
    render(&ConfirmPage {
        page,
        form,
        selection,
        errors: FormErrors::default(),
    })
}

pub async fn decide(
    state: web::Data<AppState>,
    page: Page,
    body: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let form = BulkForm::from_pairs(&body);
    form.check_decision()?;
    let (program_id, reviewer) = (page.program.id, reviewer(&page));
    let submitted = form.clone();
    let now = chrono::Utc::now();
    let result = db::run_within(&state.pool, BULK_WITHIN, move |conn| {
        let form = submitted;
        let decision = if form.is_deny() {
            Decision::Deny(review::parse_reason(&form.reason)?)
        } else {
            Decision::Approve
        };
        let selection = selection(conn, program_id, &form)?;
        if form.all && form.expected != Some(selection.ids.len() as i64) {
            return Err(Error::invalid(
                "rewards",
                format!(
                    "The rewards matching this filter changed: {} match now. Nothing was decided; check the new count and confirm again.",
                    selection.ids.len()
                ),
            ));
        }
        review::decide_many(conn, program_id, &reviewer, &selection.ids, &decision, now)
    })
    .await;
    match result {
        Ok(outcome) => {
            let verb = if form.is_deny() { "Denied" } else { "Approved" };
            let credited = if outcome.credited > 0 {
                format!(
                    " ({} credited at once: their hold was over)",
                    crate::web::format::number(outcome.credited as i64)
                )
            } else {
                String::new()
            };
            page.flash(
                "success",
                format!(
                    "{verb} {} rewards{credited}.",
                    crate::web::format::number(outcome.decided as i64)
                ),
            );
            Ok(redirect(&queue_url(&form.raw).href()))
        }
        Err(error) => {
            let loaded = form.clone();
            let selection = db::run(&state.pool, move |conn| selection(conn, program_id, &loaded))
                .await
                .unwrap_or_default();
            let mut form = form;
            if form.all {
                form.expected = Some(selection.ids.len() as i64);
            }
            rerender(error, |errors| ConfirmPage {
                page,
                form,
                selection,
                errors,
            })
        }
    }
}
