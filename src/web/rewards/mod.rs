//! `/rewards`: the review queue. Everyone signed in reads it; support members and admins
//! approve and deny (one by one or in bulk, see `bulk`); admins settle reversals owed.

pub mod actions;
pub mod bulk;

use actix_web::{web, HttpResponse};
use askama::Template;
use bigdecimal::BigDecimal;
use serde::Deserialize;

use crate::db;
use crate::domain::rewards::credit::rule_name;
use crate::domain::rewards::queue::{self, QueueFilter, QueueRow, RawFilter, Start, StatusCounts, COUNT_CAP};
use crate::domain::rewards::{flags, RewardStatus};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::FormErrors;
use crate::web::paging::{requested_page, thousands, ListUrl, Pager};
use crate::web::render_status;
use crate::AppState;

pub const PER_PAGE: i64 = 50;

/// Why a fraud signal holds a reward, as the queue says it.
pub fn flag_reason(flag: &str) -> &'static str {
    match flag {
        flags::SAME_EMAIL => {
            "Referrer and friend share an email address once normalised (case, +tag, Gmail dots)."
        }
        flags::DISPOSABLE_EMAIL => "The friend's email domain is a disposable-mail service.",
        flags::REFERRAL_VELOCITY => "The referrer gained more referrals in an hour than the program allows.",
        _ => "A fraud signal holds this reward for review.",
    }
}

/// An amount with its unit, as the pages show it.
pub fn amount_text(amount: &BigDecimal, units: &str, is_currency: bool) -> String {
    crate::web::format::money(amount, units, is_currency)
}

/// The queue's query string as typed.
#[derive(Deserialize, Default, Clone)]
pub struct QueueQuery {
    /// Absent: pending (the reviewer's work); `all`: every status.
    status: Option<String>,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    flagged: String,
    #[serde(default)]
    owed: String,
    #[serde(default)]
    beneficiary: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    page: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    before: String,
}

impl QueueQuery {
    pub fn raw(&self) -> RawFilter {
        RawFilter {
            status: self.status.clone().unwrap_or_else(|| "pending".to_string()),
            rule: self.rule.clone(),
            flagged: !self.flagged.trim().is_empty(),
            owed: !self.owed.trim().is_empty(),
            beneficiary: self.beneficiary.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
        }
    }

    fn page(&self) -> i64 {
        requested_page(&self.page)
    }

    /// Where the page starts: a cursor (`<page>_<id>`) of the neighbouring page, else
    /// the page number.
    fn start(&self) -> Start {
        let cursor = |raw: &str| raw.split_once('_').and_then(|(_, id)| id.parse::<i64>().ok());
        match (cursor(&self.after), cursor(&self.before)) {
            (Some(id), _) => Start::After(id),
            (None, Some(id)) => Start::Before(id),
            _ => Start::Page(self.page()),
        }
    }
}

/// The queue's address with the filters of `raw` (without the page).
pub fn queue_url(raw: &RawFilter) -> ListUrl {
    ListUrl::new("/rewards")
        .param("status", raw.status.trim())
        .param("rule", raw.rule.trim())
        .param("flagged", if raw.flagged { "1" } else { "" })
        .param("owed", if raw.owed { "1" } else { "" })
        .param("beneficiary", raw.beneficiary.trim())
        .param("from", raw.from.trim())
        .param("to", raw.to.trim())
}

#[derive(Template)]
#[template(path = "rewards/index.html")]
struct QueuePage {
    page: Page,
    raw: RawFilter,
    rules: Vec<(i64, String)>,
    counts: StatusCounts,
    rows: Vec<QueueRow>,
    pager: Pager,
    /// A beneficiary was asked for and no customer matches.
    unknown_beneficiary: bool,
    errors: FormErrors,
}

impl QueuePage {
    fn status_href(&self, status: &str) -> String {
        queue_url(&self.raw).with(&[("status", Some(status)), ("page", None)])
    }

    fn count_text(&self, count: &i64) -> String {
        if *count > COUNT_CAP {
            format!("{}+", thousands(COUNT_CAP))
        } else {
            thousands(*count)
        }
    }

    fn status_is(&self, status: &str) -> bool {
        self.raw.status.trim() == status
    }

    /// The filters, as hidden fields of the bulk form.
    fn filter_params(&self) -> Vec<(String, String)> {
        queue_url(&self.raw).params().to_vec()
    }

    fn rule_selected(&self, id: &i64) -> bool {
        self.raw.rule.trim() == id.to_string()
    }

    fn rule_of(&self, row: &QueueRow) -> String {
        rule_name(&row.reward)
    }

    fn amount_of(&self, row: &QueueRow) -> String {
        amount_text(
            &row.reward.amount,
            &row.reward.amount_units,
            row.reward.is_currency,
        )
    }

    fn owed_of(&self, row: &QueueRow) -> Option<String> {
        row.reward
            .reversal_owed
            .as_ref()
            .map(|owed| amount_text(owed, &row.reward.amount_units, row.reward.is_currency))
    }

    fn is_pending(&self, row: &QueueRow) -> bool {
        row.reward.status == RewardStatus::Pending
    }

    fn is_deniable(&self, row: &QueueRow) -> bool {
        matches!(row.reward.status, RewardStatus::Pending | RewardStatus::Approved)
    }

    fn in_hold(&self, row: &QueueRow) -> bool {
        row.reward.hold_until > chrono::Utc::now()
    }

    fn reason_of(&self, flag: &str) -> &'static str {
        flag_reason(flag)
    }

    /// The page's own address, to come back to after a per-row action.
    fn here(&self) -> String {
        self.page.path.clone()
    }
}

pub async fn index(
    state: web::Data<AppState>,
    page: Page,
    query: web::Query<QueueQuery>,
) -> Result<HttpResponse, Error> {
    let query = query.into_inner();
    let raw = query.raw();
    let start = query.start();
    let program_id = page.program.id;
    let typed = raw.clone();
    let (rules, counts, found) = db::run(&state.pool, move |conn| {
        let rules = queue::rule_names(conn, program_id)?;
        let counts = queue::status_counts(conn, program_id)?;
        let found = match QueueFilter::parse(conn, program_id, &typed) {
            Ok(filter) => {
                let unknown = filter.beneficiary == Some(None);
                Ok((queue::page(conn, program_id, &filter, start, PER_PAGE)?, unknown))
            }
            Err(error) => Err(error),
        };
        Ok((rules, counts, found))
    })
    .await?;
    let (found, unknown_beneficiary, errors) = match found {
        Ok((found, unknown)) => (Some(found), unknown, FormErrors::default()),
        Err(error) => (None, false, FormErrors::from_error(error)?),
    };
    let url = queue_url(&raw);
    let number = query.page();
    let (rows, pager) = match found {
        Some(found) => {
            let shown = found.rows.len() as i64;
            let pager = if found.total_is_exact() {
                Pager::new(url, "page", number, PER_PAGE, found.total)
            } else {
                Pager::at_least(url, "page", number, PER_PAGE, COUNT_CAP, shown, found.has_next)
            };
            let pager = match (found.rows.first(), found.rows.last()) {
                (Some(first), Some(last)) => pager.with_cursors(first.reward.id, last.reward.id),
                _ => pager,
            };
            (found.rows, pager)
        }
        None => (Vec::new(), Pager::new(url, "page", 1, PER_PAGE, 0)),
    };
    let status = errors.status();
    render_status(
        status,
        &QueuePage {
            page,
            raw,
            rules,
            counts,
            rows,
            pager,
            unknown_beneficiary,
            errors,
        },
    )
}
