//! The JSON shapes of the original service, kept apart from the rows they are built from.

use std::collections::HashMap;

use bigdecimal::{BigDecimal, ToPrimitive};
use chrono::{DateTime, SecondsFormat, Utc};
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

fn referrer_json(referrer: &ReferrerSummary) -> Value {
    json!({
        "id": referrer.external_id,
        "key": referrer.key,
        "email": referrer.email,
        "name": referrer.name,
        "surname": referrer.surname,
    })
}

pub fn customer(customer: &Customer, context: &CustomerContext<'_>) -> Value {
    let referral_link = context.program.referral_url(&customer.key);
    let links: Vec<Value> = context
        .links
        .get(&customer.id)
        .map(|links| {
            links
                .iter()
                .map(|link| {
                    json!({
                        "code": link.code,
                        "url": if link.is_default { referral_link.clone() } else { link.share_url(context.public_url, context.program) },
                        "is_default": link.is_default,
                        "clicks": link.clicks,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "id": customer.external_id,
        "key": customer.key,
        "email": customer.email,
        "name": customer.name,
        "surname": customer.surname,
        "status": customer.status,
        "approved": customer.approved,
        "referring_customer": customer.referrer_id.and_then(|id| context.referrers.get(&id)).map(referrer_json),
        "referrals_count": customer.referrals_count,
        "metadata": customer.metadata,
        "referral_link": referral_link,
        "referral_links": links,
        "custom_fields": customer.custom_fields,
        "created_at": timestamp(&customer.created_at),
        "updated_at": timestamp(&customer.updated_at),
    })
}
