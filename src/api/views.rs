//! The JSON shapes of the original service, kept apart from the rows they are built from.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::domain::customers::listing::ReferrerSummary;
use crate::domain::customers::Customer;
use crate::domain::invites::{DeliveryStatus, Invite};
use crate::domain::ledger::{Balance, Kind, Transaction, TransactionRow};
use crate::domain::programs::Program;
use crate::domain::referral_links::ReferralLink;
use crate::domain::webhooks::Subscription;

pub use crate::domain::json::{amount, timestamp, Amount};

mod rewards;

pub use rewards::{
    reward, reward_line, reward_totals, sales, transaction as sale, RewardTotalView, RewardView, SalesView,
    TransactionView,
};

/// Everything a customer's JSON needs besides the row itself.
pub struct CustomerContext<'a> {
    pub program: &'a Program,
    pub public_url: &'a str,
    pub referrers: &'a HashMap<i64, ReferrerSummary>,
    pub links: &'a HashMap<i64, Vec<ReferralLink>>,
}

/// A customer as the API shows it. Typed rather than built as a `serde_json::Value`, which
/// would allocate a map per object and copy it again into every envelope.
/// Fields are in alphabetical order, the order serde_json printed the maps in, so answers
/// stay the same byte for byte.
#[derive(Debug, Serialize)]
pub struct CustomerJson {
    approved: bool,
    created_at: String,
    custom_fields: Value,
    email: Option<String>,
    id: String,
    key: String,
    metadata: Value,
    name: Option<String>,
    referral_link: String,
    referral_links: Vec<LinkJson>,
    referrals_count: i32,
    referring_customer: Option<ReferrerJson>,
    status: String,
    surname: Option<String>,
    updated_at: String,
}

#[derive(Debug, Serialize)]
struct LinkJson {
    clicks: i64,
    code: String,
    is_default: bool,
    url: String,
}

#[derive(Debug, Serialize)]
struct ReferrerJson {
    email: Option<String>,
    id: String,
    key: String,
    name: Option<String>,
    surname: Option<String>,
}

fn referrer_json(referrer: &ReferrerSummary) -> ReferrerJson {
    ReferrerJson {
        email: referrer.email.clone(),
        id: referrer.external_id.clone(),
        key: referrer.key.clone(),
        name: referrer.name.clone(),
        surname: referrer.surname.clone(),
    }
}

pub fn customer(customer: &Customer, context: &CustomerContext<'_>) -> CustomerJson {
    let referral_link = context.program.referral_url(&customer.key);
    let referral_links = context
        .links
        .get(&customer.id)
        .map(|links| {
            links
                .iter()
                .map(|link| LinkJson {
                    clicks: link.clicks,
                    code: link.code.clone(),
                    is_default: link.is_default,
                    url: if link.is_default {
                        referral_link.clone()
                    } else {
                        link.share_url(context.public_url, context.program)
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    CustomerJson {
        approved: customer.approved,
        created_at: timestamp(&customer.created_at),
        custom_fields: customer.custom_fields.clone(),
        email: customer.email.clone(),
        id: customer.external_id.clone(),
        key: customer.key.clone(),
        metadata: customer.metadata.clone(),
        name: customer.name.clone(),
        referral_link,
        referral_links,
        referrals_count: customer.referrals_count,
        referring_customer: customer
            .referrer_id
            .and_then(|id| context.referrers.get(&id))
            .map(referrer_json),
        status: customer.status.to_string(),
        surname: customer.surname.clone(),
        updated_at: timestamp(&customer.updated_at),
    }
}

// Every struct below keeps its fields in alphabetical order, like `CustomerJson`.

/// One balance (or credited total) per unit.
#[derive(Debug, Serialize)]
pub struct BalanceJson {
    amount: Amount,
    amount_units: String,
    is_currency: bool,
}

pub fn balances(balances: &[Balance]) -> Vec<BalanceJson> {
    balances
        .iter()
        .map(|balance| BalanceJson {
            amount: amount(&balance.amount),
            amount_units: balance.amount_units.clone(),
            is_currency: balance.is_currency,
        })
        .collect()
}

/// `{"currency": [...]}`, the `balance` of a customer.
#[derive(Debug, Serialize)]
pub struct BalancesJson {
    currency: Vec<BalanceJson>,
}

/// `GET /v1/customers/{ident}/balance`.
#[derive(Debug, Serialize)]
pub struct CustomerBalanceJson {
    balance: BalancesJson,
    customer: CustomerJson,
}

pub fn customer_balance(customer: CustomerJson, of: &[Balance]) -> CustomerBalanceJson {
    CustomerBalanceJson {
        balance: BalancesJson {
            currency: balances(of),
        },
        customer,
    }
}

/// `GET /v1/customers/{ident}/stats`.
#[derive(Debug, Serialize)]
pub struct StatsJson {
    clicks: i64,
    credits: Vec<BalanceJson>,
    /// Rewards earned as beneficiary, per unit and status.
    rewards: Vec<RewardTotalView>,
    /// Counted (active) transactions, per unit.
    sales: Vec<SalesView>,
    signups: i32,
}

pub fn stats(
    clicks: i64,
    signups: i32,
    credits: &[Balance],
    sales: Vec<SalesView>,
    rewards: Vec<RewardTotalView>,
) -> StatsJson {
    StatsJson {
        clicks,
        credits: balances(credits),
        rewards,
        sales,
        signups,
    }
}

/// A ledger entry, in a customer's transactions and in the answer to a credit.
#[derive(Debug, Serialize)]
pub struct TransactionJson {
    amount: Amount,
    amount_units: String,
    created_at: String,
    id: i64,
    is_currency: bool,
    kind: Kind,
    note: Option<String>,
}

pub fn transaction(row: &TransactionRow) -> TransactionJson {
    TransactionJson {
        amount: amount(&row.amount),
        amount_units: row.amount_units.clone(),
        created_at: timestamp(&row.created_at),
        id: row.id,
        is_currency: row.is_currency,
        kind: row.kind,
        note: row.note.clone(),
    }
}

/// `POST /v1/customers/{ident}/balance/credit`: the customer, the entry and the new balance.
#[derive(Debug, Serialize)]
pub struct CreditJson {
    balance: BalancesJson,
    customer: CustomerJson,
    transaction: TransactionJson,
}

pub fn credit(customer: CustomerJson, booked: &Transaction, balances_now: &[Balance]) -> CreditJson {
    CreditJson {
        balance: BalancesJson {
            currency: balances(balances_now),
        },
        customer,
        transaction: TransactionJson {
            amount: amount(&booked.amount),
            amount_units: booked.amount_units.clone(),
            created_at: timestamp(&booked.created_at),
            id: booked.id,
            is_currency: booked.is_currency,
            kind: booked.kind,
            note: booked.note.clone(),
        },
    }
}

/// `POST /v1/customers:invite`.
#[derive(Debug, Serialize)]
pub struct InviteJson {
    created_at: String,
    email: String,
    id: i64,
    name: Option<String>,
    personalization: Value,
    status: DeliveryStatus,
}

pub fn invite(invite: &Invite) -> InviteJson {
    InviteJson {
        created_at: timestamp(&invite.created_at),
        email: invite.email.clone(),
        id: invite.id,
        name: invite.name.clone(),
        personalization: invite.personalization.clone(),
        status: invite.status,
    }
}

/// A webhook subscription as `/v1/webhooks` shows it.
#[derive(Debug, Serialize)]
pub struct WebhookJson {
    created_at: String,
    events: Vec<String>,
    is_active: bool,
    key: String,
    name: String,
    updated_at: String,
    url: String,
}

pub fn webhook(subscription: &Subscription) -> WebhookJson {
    WebhookJson {
        created_at: timestamp(&subscription.created_at),
        events: subscription.event_names(),
        is_active: subscription.is_active,
        key: subscription.key.clone(),
        name: subscription.name.clone(),
        updated_at: timestamp(&subscription.updated_at),
        url: subscription.url.clone(),
    }
}

/// The answer of a create: the subscription and its signing secret (shown only here).
#[derive(Debug, Serialize)]
pub struct CreatedWebhookJson {
    created_at: String,
    events: Vec<String>,
    is_active: bool,
    key: String,
    name: String,
    signature: String,
    updated_at: String,
    url: String,
}

pub fn created_webhook(subscription: &Subscription) -> CreatedWebhookJson {
    let view = webhook(subscription);
    CreatedWebhookJson {
        created_at: view.created_at,
        events: view.events,
        is_active: view.is_active,
        key: view.key,
        name: view.name,
        signature: subscription.secret.clone(),
        updated_at: view.updated_at,
        url: view.url,
    }
}
