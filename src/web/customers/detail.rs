//! `GET /customers/{key}`: everything about one customer.

use actix_web::{web, HttpResponse};
use askama::Template;

use super::KeyPath;
use crate::db;
use crate::domain::audit::timeline::{self, TimelineEntry};
use crate::domain::customers::{self, Customer, ReferrerSummary};
use crate::domain::invites::{self, CustomerInvite};
use crate::domain::ledger::{self, Balance, TransactionRow};
use crate::domain::referral_links::{self, ReferralLink};
use crate::domain::rewards::figures::{self, EarnedReward};
use crate::domain::rewards::BeneficiaryRole;
use crate::domain::transactions::browse::{self, Listing};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::FormErrors;
use crate::web::ledger::{ledger_pager, LEDGER_PER_PAGE};
use crate::web::paging::{page_count, ListUrl, Pager};
use crate::web::render_status;
use crate::AppState;

const REFERRALS_PER_PAGE: i64 = 15;
const ACTIVITY_LIMIT: i64 = 50;
const INVITES_LIMIT: i64 = 10;
/// The latest transactions and rewards the page shows; the transactions page has them all.
const REWARDS_LIMIT: i64 = 20;

/// The customer's transactions and the rewards they earned as referrer and as friend, each
/// with how many there are in all.
pub(super) struct RewardPanels {
    pub transactions: Listing,
    pub as_referrer: (Vec<EarnedReward>, i64),
    pub as_friend: (Vec<EarnedReward>, i64),
}

impl RewardPanels {
    fn load(
        conn: &mut diesel::PgConnection,
        program_id: i64,
        customer_id: i64,
    ) -> Result<RewardPanels, Error> {
        Ok(RewardPanels {
            transactions: browse::for_customer(conn, program_id, customer_id, REWARDS_LIMIT)?,
            as_referrer: figures::earned_by(conn, customer_id, BeneficiaryRole::Referrer, REWARDS_LIMIT)?,
            as_friend: figures::earned_by(conn, customer_id, BeneficiaryRole::Friend, REWARDS_LIMIT)?,
        })
    }

    /// How many transactions the customer has: "1,234", or "more than 1,000" past the
    /// count limit.
    pub fn transactions_count(&self) -> String {
        let total = crate::web::paging::thousands(self.transactions.total);
        if self.transactions.total_is_exact {
            total
        } else {
            format!("more than {total}")
        }
    }

    /// A reward table's total as shown: exact up to the cap, then "more than".
    pub fn earned_count(&self, total: &i64) -> String {
        if *total > figures::EARNED_COUNT_CAP {
            format!(
                "more than {}",
                crate::web::paging::thousands(figures::EARNED_COUNT_CAP)
            )
        } else {
            crate::web::paging::thousands(*total)
        }
    }

    /// The two reward tables: title, rows and total, and what the other side is called.
    #[allow(clippy::type_complexity)]
    pub fn groups(&self) -> [(&'static str, &(Vec<EarnedReward>, i64), &'static str); 2] {
        [
            ("Earned as referrer", &self.as_referrer, "Friend"),
            ("Earned as friend", &self.as_friend, "Referrer"),
        ]
    }
}

/// What the small forms on the page (change referrer, add link) hold when they come back
/// with a message.
#[derive(Default)]
pub(super) struct InlineForms {
    pub referrer: String,
    /// The new referrer named in `referrer`, checked and waiting to be confirmed.
    pub referrer_proposal: Option<ReferrerProposal>,
    pub code: String,
    /// What was typed to confirm an erasure.
    pub erase_confirm: String,
    pub errors: FormErrors,
}

/// A referrer change to confirm: who the new referrer would be.
pub(super) struct ReferrerProposal {
    pub key: String,
    pub name: String,
}

#[derive(Template)]
#[template(path = "customers/show.html")]
struct DetailPage {
    page: Page,
    customer: Customer,
    referrer: Option<ReferrerSummary>,
    links: Vec<ReferralLink>,
    referrals: Vec<Customer>,
    referrals_pager: Pager,
    timeline: Vec<TimelineEntry>,
    balances: Vec<Balance>,
    transactions: Vec<TransactionRow>,
    ledger_page: i64,
    ledger_pager: Pager,
    invites: Vec<CustomerInvite>,
    rewards: RewardPanels,
    erased_at: Option<chrono::DateTime<chrono::Utc>>,
    custom_fields: Vec<(String, String)>,
    landing_url: String,
    public_url: String,
    forms: InlineForms,
}

impl DetailPage {
    fn share_url(&self, link: &ReferralLink) -> String {
        link.share_url(&self.public_url, &self.page.program)
    }

    /// The default link to share, for the header's copy button (none while deleted: the
    /// links do not redirect).
    fn default_share_url(&self) -> Option<String> {
        if self.customer.is_deleted() {
            return None;
        }
        self.links
            .iter()
            .find(|link| link.is_default)
            .map(|link| self.share_url(link))
    }

    /// Editing, inviting, re-attributing and managing links make sense only for a
    /// customer who is neither deleted nor erased.
    fn can_change(&self) -> bool {
        !self.customer.is_deleted() && self.erased_at.is_none()
    }

    /// What the erasure asks to type: the email when there is one, or the key.
    fn erase_label(&self) -> String {
        match &self.customer.email {
            Some(email) => format!(
                "Type the email {email} or the key {} to confirm",
                self.customer.key
            ),
            None => format!("Type the key {} to confirm", self.customer.key),
        }
    }
}

#[derive(serde::Deserialize)]
pub struct DetailQuery {
    referrals_page: Option<String>,
    ledger_page: Option<String>,
}

fn page_number(raw: Option<&str>) -> i64 {
    raw.and_then(|value| value.trim().parse::<i64>().ok())
        .unwrap_or(1)
        .max(1)
}

pub async fn show(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
    query: web::Query<DetailQuery>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, Error> {
    let shown = render_detail(
        &state,
        page,
        &path.key,
        Pages {
            referrals: page_number(query.referrals_page.as_deref()),
            ledger: page_number(query.ledger_page.as_deref()),
        },
        InlineForms::default(),
    )
    .await;
    match shown {
        Err(Error::NotFound) => super::elsewhere::show(&state, &req, &path.key).await,
        other => other,
    }
}

/// Which page of each paginated panel to show.
#[derive(Clone, Copy)]
pub(super) struct Pages {
    pub referrals: i64,
    pub ledger: i64,
}

impl Pages {
    pub(super) const FIRST: Pages = Pages {
        referrals: 1,
        ledger: 1,
    };
}

/// Renders the page (422 when a small form comes back with a message, shown in place).
pub(super) async fn render_detail(
    state: &web::Data<AppState>,
    page: Page,
    key: &str,
    pages: Pages,
    forms: InlineForms,
) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let key = key.to_string();
    let (customer, referrer, links, referrals, events, shown, panels, erased_at) =
        db::run_lookups(&state.pool, move |conn| {
            let customer = customers::find_by_key(conn, program_id, &key)?;
            let referrer = customers::with_referrers(conn, vec![customer.clone()])?
                .pop()
                .and_then(|row| row.referrer);
            let links = referral_links::for_customer(conn, customer.id)?;
            let total = i64::from(customer.referrals_count);
            let shown = pages.referrals.clamp(1, page_count(total, REFERRALS_PER_PAGE));
            // Most customers referred nobody and hold no ledger entry: their page asks
            // neither (three round trips of about eleven), as the count and the balances
            // already say so — the count is kept with the rows in the same transactions,
            // and a customer with any entry has a balance row for its unit.
            let referrals = if total == 0 {
                Vec::new()
            } else {
                customers::referrals(conn, program_id, customer.id, shown, REFERRALS_PER_PAGE)?
            };
            let events = timeline::for_customer(conn, program_id, &customer, ACTIVITY_LIMIT)?;
            let (balances, entries) = ledger::balances_and_entries(conn, customer.id)?;
            let (transactions, ledger_total) = if entries == 0 {
                (Vec::new(), 0)
            } else {
                ledger::transactions_of(conn, customer.id, entries, pages.ledger, LEDGER_PER_PAGE)?
            };
            let invites = invites::for_customer(conn, &customer, INVITES_LIMIT)?;
            let rewards = RewardPanels::load(conn, program_id, customer.id)?;
            let panels = (balances, transactions, ledger_total, invites, rewards);
            let erased_at = customers::erased_at(conn, customer.id)?;
            Ok((
                customer, referrer, links, referrals, events, shown, panels, erased_at,
            ))
        })
        .await?;
    let customer_path = format!("/customers/{}", customer.key);
    let referrals_pager = Pager::new(
        ListUrl::new(&customer_path),
        "referrals_page",
        shown,
        REFERRALS_PER_PAGE,
        i64::from(customer.referrals_count),
    );
    render_status(
        forms.errors.status(),
        &DetailPage {
            landing_url: page.program.referral_url(&customer.key),
            public_url: state.config.public_url.clone(),
            custom_fields: customer.custom_field_rows(),
            referrals_pager,
            customer,
            referrer,
            links,
            referrals,
            timeline: events,
            balances: panels.0,
            transactions: panels.1,
            ledger_pager: ledger_pager(&customer_path, pages.ledger, panels.2),
            ledger_page: pages.ledger,
            invites: panels.3,
            rewards: panels.4,
            erased_at,
            forms,
            page,
        },
    )
}
