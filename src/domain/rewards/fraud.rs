//! Fraud signals: reasons to hold a reward for manual review whatever its rule says.
//!
//! - `same_email`: referrer and friend share an email once normalised (case, `+tag`, dots
//!   in Gmail addresses): one person referring themselves.
//! - `disposable_email`: the friend's email domain (or a parent domain) is on the list of
//!   disposable-mail domains in `data/disposable_email_domains.txt` (see `data/README.md`
//!   for its source and licence).
//! - `referral_velocity`: the referrer gained more referrals in the last hour than the
//!   program's `rewards_max_referrals_per_hour`.

use std::collections::HashSet;
use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use crate::db::schema::{customers, programs};
use crate::domain::customers::Customer;
use crate::error::Error;

use super::flags;

const DISPOSABLE_DOMAINS: &str = include_str!("../../../data/disposable_email_domains.txt");

fn disposable_domains() -> &'static HashSet<&'static str> {
    static DOMAINS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    DOMAINS.get_or_init(|| {
        DISPOSABLE_DOMAINS
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    })
}

/// An email as the mailbox it reaches: lower case, without a `+tag`, and for Gmail without
/// dots (Gmail ignores them) and with `googlemail.com` read as `gmail.com`.
pub fn normalize_email(email: &str) -> String {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.rsplit_once('@') else {
        return email;
    };
    let local = local.split('+').next().unwrap_or(local);
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", local.replace('.', "")),
        _ => format!("{local}@{domain}"),
    }
}

/// Whether the address's domain, or any domain above it, is a disposable-mail domain.
pub fn is_disposable(email: &str) -> bool {
    let email = email.trim().to_lowercase();
    let Some((_, mut domain)) = email.rsplit_once('@') else {
        return false;
    };
    let list = disposable_domains();
    loop {
        if list.contains(domain) {
            return true;
        }
        match domain.split_once('.') {
            Some((_, parent)) if parent.contains('.') => domain = parent,
            _ => return false,
        }
    }
}

/// The fraud signals of a referral (`referrer` referred `friend`), as of `now`.
pub fn signals(
    conn: &mut PgConnection,
    program_id: i64,
    referrer: &Customer,
    friend: &Customer,
    now: DateTime<Utc>,
) -> Result<Vec<String>, Error> {
    let mut found = Vec::new();
    if let (Some(mine), Some(theirs)) = (&referrer.email, &friend.email) {
        if normalize_email(mine) == normalize_email(theirs) {
            found.push(flags::SAME_EMAIL.to_string());
        }
    }
    if friend.email.as_deref().is_some_and(is_disposable) {
        found.push(flags::DISPOSABLE_EMAIL.to_string());
    }
    // One round trip: the program's allowance and the referrer's referrals of the hour.
    let last_hour = customers::table
        .filter(customers::referrer_id.eq(referrer.id))
        .filter(customers::created_at.gt(now - Duration::hours(1)))
        .select(diesel::dsl::count_star())
        .single_value()
        .assume_not_null();
    let (allowed, last_hour): (i32, i64) = programs::table
        .find(program_id)
        .select((programs::rewards_max_referrals_per_hour, last_hour))
        .first(conn)?;
    if last_hour > i64::from(allowed) {
        found.push(flags::REFERRAL_VELOCITY.to_string());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_like_mail_servers_read_them() {
        assert_eq!(normalize_email("Ada.Love+ref@GMail.com"), "adalove@gmail.com");
        assert_eq!(normalize_email("ada.love@googlemail.com"), "adalove@gmail.com");
        assert_eq!(normalize_email("Ada.Love+x@example.com"), "ada.love@example.com");
        assert_ne!(
            normalize_email("ada@example.com"),
            normalize_email("ada@example.org")
        );
    }

    #[test]
    fn disposable_domains_and_their_subdomains_are_known() {
        assert!(is_disposable("someone@mailinator.com"));
        assert!(is_disposable("someone@MAILINATOR.COM"));
        assert!(is_disposable("someone@eu.mailinator.com"));
        assert!(!is_disposable("someone@example.com"));
        assert!(!is_disposable("someone@gmail.com"));
        assert!(!is_disposable("not-an-email"));
    }
}
