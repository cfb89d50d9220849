//! The JSON shapes of the original service, kept apart from the rows they are built from.

use std::collections::HashMap;

use bigdecimal::{BigDecimal, ToPrimitive};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::customers::listing::ReferrerSummary;
use crate::domain::customers::Customer;
use crate::domain::programs::Program;
use crate::domain::referral_links::ReferralLink;

pub fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Amounts are JSON numbers, as the original service sends them. Every stored amount has
/// at most 4 decimals and at most 7 integer digits, which an f64 prints back exactly.
pub fn amount(value: &BigDecimal) -> Value {
    match value.to_f64() {
        Some(number) => json!(number),
        None => json!(value.to_string()),
    }
}

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
        status: customer.status.clone(),
        surname: customer.surname.clone(),
        updated_at: timestamp(&customer.updated_at),
    }
}
