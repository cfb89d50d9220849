//! Referral links: each customer's default link (its code is the customer's key) and extra
//! links with their own codes, plus the click counting behind `/r/{program}/{code}`.
//!
//! Codes are unique per program and never handed to someone else: a deleted extra link
//! keeps its code, and a customer's old keys stay in `retired_keys`, so a link shared
//! long ago never starts crediting another customer.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use serde::Serialize;
use serde_json::json;

use crate::db::schema::{customers, referral_clicks, referral_links, retired_keys};
use crate::domain::customers::{self as customer_rules, check_code, Customer};
use crate::domain::programs::{self, Program};
use crate::domain::{audit, Actor};
use crate::error::{unique_violation_as_field, Error};
use crate::random::random_token;

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = referral_links)]
pub struct ReferralLink {
    pub id: i64,
    pub program_id: i64,
    pub customer_id: i64,
    pub code: String,
    pub is_default: bool,
    pub clicks: i64,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl ReferralLink {
    /// The tracked address to share: counts a click, then lands on the program's page.
    pub fn share_url(&self, public_url: &str, program: &Program) -> String {
        format!(
            "{}/r/{}/{}",
            public_url.trim_end_matches('/'),
            program.slug,
            self.code
        )
    }
}

/// The live links of several customers at once (for a page of API results), each list
/// ordered like [`for_customer`].
pub fn for_customers(
    conn: &mut PgConnection,
    customer_ids: &[i64],
) -> Result<HashMap<i64, Vec<ReferralLink>>, Error> {
    let mut by_customer: HashMap<i64, Vec<ReferralLink>> = HashMap::new();
    if customer_ids.is_empty() {
        return Ok(by_customer);
    }
    let links = referral_links::table
        .filter(referral_links::customer_id.eq_any(customer_ids))
        .filter(referral_links::deleted_at.is_null())
        .order((
            referral_links::customer_id,
            referral_links::is_default.desc(),
            referral_links::created_at.asc(),
            referral_links::id.asc(),
        ))
        .select(ReferralLink::as_select())
        .load(conn)?;
    for link in links {
        by_customer.entry(link.customer_id).or_default().push(link);
    }
    Ok(by_customer)
}

/// Clicks on all of a customer's links, deleted extra links included (their clicks happened).
pub fn total_clicks(conn: &mut PgConnection, customer_id: i64) -> Result<i64, Error> {
    use diesel::dsl::sum;
    let total: Option<bigdecimal::BigDecimal> = referral_links::table
        .filter(referral_links::customer_id.eq(customer_id))
        .select(sum(referral_links::clicks))
        .first(conn)?;
    Ok(total
        .and_then(|total| bigdecimal::ToPrimitive::to_i64(&total))
        .unwrap_or(0))
}

/// Extra links a customer may have besides the default one.
pub const MAX_EXTRA_LINKS: i64 = 50;
const MAX_REFERER_CHARS: usize = 1000;

/// A customer's live links: the default first, then the extra ones oldest first.
pub fn for_customer(conn: &mut PgConnection, customer_id: i64) -> Result<Vec<ReferralLink>, Error> {
    Ok(referral_links::table
        .filter(referral_links::customer_id.eq(customer_id))
        .filter(referral_links::deleted_at.is_null())
        .order((
            referral_links::is_default.desc(),
            referral_links::created_at.asc(),
            referral_links::id.asc(),
        ))
        .select(ReferralLink::as_select())
        .load(conn)?)
}

/// Points the customer's default link at `code` (creating the link if it is missing).
/// Returns the raw database error so that callers can name the field a clash concerns.
pub(crate) fn set_default_code(
    conn: &mut PgConnection,
    customer: &Customer,
    code: &str,
) -> Result<(), DieselError> {
    let renamed = diesel::update(
        referral_links::table
            .filter(referral_links::customer_id.eq(customer.id))
            .filter(referral_links::is_default.eq(true)),
    )
    .set(referral_links::code.eq(code))
    .execute(conn)?;
    if renamed == 0 {
        insert_default(conn, customer, code)?;
    }
    Ok(())
}

fn insert_default(
    conn: &mut PgConnection,
    customer: &Customer,
    code: &str,
) -> Result<ReferralLink, DieselError> {
    diesel::insert_into(referral_links::table)
        .values((
            referral_links::program_id.eq(customer.program_id),
            referral_links::customer_id.eq(customer.id),
            referral_links::code.eq(code),
            referral_links::is_default.eq(true),
        ))
        .returning(ReferralLink::as_returning())
        .get_result(conn)
}

/// A free code for an extra link: the customer's key and a random suffix.
fn generate_code(conn: &mut PgConnection, program_id: i64, customer: &Customer) -> Result<String, Error> {
    for _ in 0..8 {
        let suffix = random_token(6).to_lowercase();
        let stem: String = customer.key.chars().take(64 - suffix.len() - 1).collect();
        let candidate = format!("{stem}-{suffix}");
        if code_problem(conn, program_id, customer.id, &candidate)?.is_none() {
            return Ok(candidate);
        }
    }
    Err(Error::Internal(anyhow::anyhow!(
        "could not generate a free link code"
    )))
}

/// Why `code` cannot be used for a new link of `customer_id`, if it cannot.
fn code_problem(
    conn: &mut PgConnection,
    program_id: i64,
    customer_id: i64,
    code: &str,
) -> Result<Option<&'static str>, Error> {
    use diesel::dsl::{exists, select};
    let link_exists: bool = select(exists(
        referral_links::table
            .filter(referral_links::program_id.eq(program_id))
            .filter(referral_links::code.eq(code)),
    ))
    .get_result(conn)?;
    if link_exists {
        return Ok(Some(
            "This code is already in use (links keep their code even when deleted).",
        ));
    }
    let other_key: bool = select(exists(
        customers::table
            .filter(customers::program_id.eq(program_id))
            .filter(customers::key.eq(code)),
    ))
    .get_result(conn)?;
    if other_key {
        return Ok(Some("This code is a customer's key."));
    }
    let retired_by_other: bool = select(exists(
        retired_keys::table
            .filter(retired_keys::program_id.eq(program_id))
            .filter(retired_keys::key.eq(code))
            .filter(retired_keys::customer_id.ne(customer_id)),
    ))
    .get_result(conn)?;
    if retired_by_other {
        return Ok(Some(
            "This code was another customer's key; their old links still use it.",
        ));
    }
    Ok(None)
}

/// Adds an extra link with `code` (generated when blank).
pub fn create(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
    code: &str,
) -> Result<ReferralLink, Error> {
    let code = code.trim();
    if !code.is_empty() {
        check_code(code).map_err(|message| Error::invalid("code", message))?;
    }
    conn.transaction(|conn| {
        let customer = customer_rules::find(conn, program.id, customer_id)?;
        if customer.is_deleted() {
            return Err(Error::invalid(
                "code",
                "This customer is deleted; restore them before adding links.",
            ));
        }
        let extra: i64 = referral_links::table
            .filter(referral_links::customer_id.eq(customer.id))
            .filter(referral_links::is_default.eq(false))
            .filter(referral_links::deleted_at.is_null())
            .count()
            .get_result(conn)?;
        if extra >= MAX_EXTRA_LINKS {
            return Err(Error::invalid(
                "code",
                format!("A customer can have at most {MAX_EXTRA_LINKS} extra links."),
            ));
        }
        let code = if code.is_empty() {
            generate_code(conn, program.id, &customer)?
        } else {
            if let Some(problem) = code_problem(conn, program.id, customer.id, code)? {
                return Err(Error::invalid("code", problem));
            }
            code.to_string()
        };
        let link = diesel::insert_into(referral_links::table)
            .values((
                referral_links::program_id.eq(program.id),
                referral_links::customer_id.eq(customer.id),
                referral_links::code.eq(&code),
                referral_links::is_default.eq(false),
            ))
            .returning(ReferralLink::as_returning())
            .get_result(conn)
            .map_err(|error| {
                unique_violation_as_field(
                    error,
                    "referral_links_program_id_code_key",
                    "code",
                    "This code is already in use.",
                )
            })?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(program.id),
                action: "referral_link.create",
                subject_type: "referral_link",
                subject_id: Some(link.id.to_string()),
                customer_id: Some(customer.id),
                before: None,
                after: Some(json!({"code": link.code})),
            },
        )?;
        Ok(link)
    })
}

/// Retires an extra link: it stops redirecting, its code stays reserved, its clicks stay.
/// The default link cannot be deleted (it follows the customer's key).
pub fn delete(
    conn: &mut PgConnection,
    program: &Program,
    actor: &Actor,
    customer_id: i64,
    link_id: i64,
) -> Result<ReferralLink, Error> {
    conn.transaction(|conn| {
        let link: ReferralLink = referral_links::table
            .filter(referral_links::program_id.eq(program.id))
            .filter(referral_links::customer_id.eq(customer_id))
            .filter(referral_links::id.eq(link_id))
            .filter(referral_links::deleted_at.is_null())
            .select(ReferralLink::as_select())
            .for_update()
            .first(conn)?;
        if link.is_default {
            return Err(Error::BadRequest(
                "The default link follows the customer's key and cannot be deleted.".into(),
            ));
        }
        let deleted = diesel::update(referral_links::table.find(link.id))
            .set(referral_links::deleted_at.eq(Utc::now()))
            .returning(ReferralLink::as_returning())
            .get_result(conn)?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(program.id),
                action: "referral_link.delete",
                subject_type: "referral_link",
                subject_id: Some(link.id.to_string()),
                customer_id: Some(customer_id),
                before: Some(json!({"code": link.code, "clicks": link.clicks})),
                after: None,
            },
        )?;
        Ok(deleted)
    })
}

/// Counts a click on `/r/{program_slug}/{code}` and returns where to send the visitor:
/// the program's landing page with the customer's current key. A retired key still
/// leads to the customer who had it. Unknown codes, deleted links and deleted customers
/// are `NotFound`.
pub fn record_click(
    conn: &mut PgConnection,
    program_slug: &str,
    code: &str,
    referer: Option<&str>,
) -> Result<String, Error> {
    // Anything not shaped like a slug and a code cannot exist (and NUL cannot be queried).
    let slug_shaped = !program_slug.is_empty()
        && program_slug.len() <= 63
        && program_slug
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    if !slug_shaped || check_code(code).is_err() {
        return Err(Error::NotFound);
    }
    conn.transaction(|conn| {
        let program = programs::find_by_slug(conn, program_slug)?;
        let live = || {
            referral_links::table
                .filter(referral_links::program_id.eq(program.id))
                .filter(referral_links::deleted_at.is_null())
                .select(ReferralLink::as_select())
        };
        let link = match live()
            .filter(referral_links::code.eq(code))
            .first(conn)
            .optional()?
        {
            Some(link) => link,
            None => {
                let owner: i64 = retired_keys::table
                    .filter(retired_keys::program_id.eq(program.id))
                    .filter(retired_keys::key.eq(code))
                    .select(retired_keys::customer_id)
                    .first(conn)?;
                live()
                    .filter(referral_links::customer_id.eq(owner))
                    .filter(referral_links::is_default.eq(true))
                    .first(conn)?
            }
        };
        let customer = customer_rules::find(conn, program.id, link.customer_id)?;
        if customer.is_deleted() {
            return Err(Error::NotFound);
        }
        diesel::update(referral_links::table.find(link.id))
            .set(referral_links::clicks.eq(referral_links::clicks + 1))
            .execute(conn)?;
        let referer: Option<String> = referer.map(|value| {
            value
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_REFERER_CHARS)
                .collect()
        });
        diesel::insert_into(referral_clicks::table)
            .values((
                referral_clicks::link_id.eq(link.id),
                referral_clicks::referer.eq(referer),
            ))
            .execute(conn)?;
        Ok(program.referral_url(&customer.key))
    })
}
