//! Signing in with email and password, throttled per account, address and device.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use crate::db::schema::{login_failures, team_members};
use crate::domain::{audit, Actor};
use crate::error::{Error, FieldErrors};

use super::{dummy_hash, member_change, verify_password, Member};

/// Failed sign-ins allowed within [`THROTTLE_WINDOW_MINUTES`]: per account (the typed
/// email, whether or not it has an account, from every address together), per client
/// address (an IPv6 client's /64), and per device cookie.
pub const MAX_FAILURES_PER_ACCOUNT: i64 = 10;
pub const MAX_FAILURES_PER_ADDRESS: i64 = 30;
pub const MAX_FAILURES_PER_DEVICE: i64 = 5;
pub const THROTTLE_WINDOW_MINUTES: i64 = 15;

/// The longest email an account can have. A typed one is cut to this before it is
/// counted, stored or audited, so a huge "email" costs no more than a real one.
pub const MAX_EMAIL_LENGTH: usize = 254;
/// How long a failed sign-in counts for any throttle: the longest window above. Older
/// failures are pruned (`domain::maintenance`).
pub const LOGIN_FAILURES_KEPT_MINUTES: i64 = THROTTLE_WINDOW_MINUTES;

pub enum SignIn {
    Ok(Member),
    /// Wrong email or password — deliberately not saying which.
    Refused,
    Throttled {
        retry_after_secs: u64,
    },
}

/// A browser's device cookie, its signature already checked: the member it was issued to
/// at a successful sign-in, and its random id.
pub struct Device {
    pub member_id: i64,
    pub id: String,
}

/// The email as counted, stored and audited: trimmed, lower case, at most
/// [`MAX_EMAIL_LENGTH`] characters.
pub fn account_key(email: &str) -> String {
    email
        .trim()
        .to_lowercase()
        .chars()
        .take(MAX_EMAIL_LENGTH)
        .collect()
}

/// The address a failure counts against: an IPv6 client usually has a whole /64 to pick
/// addresses from, so that is one address here.
fn address_key(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => ipnet::Ipv6Net::new(v6, 64)
            .map(|net| net.trunc().to_string())
            .unwrap_or_else(|_| address.to_string()),
        _ => address.to_string(),
    }
}

/// The sign-in form's empty fields, each with its message (both at once); such a form is
/// answered without trying it, so it costs no failed attempt.
pub fn missing_sign_in_fields(email: &str, password: &str) -> FieldErrors {
    let mut fields = FieldErrors::new();
    if email.trim().is_empty() {
        fields.insert("email".into(), vec!["Enter your email address.".into()]);
    }
    if password.is_empty() {
        fields.insert("password".into(), vec!["Enter your password.".into()]);
    }
    fields
}

/// Checks a sign-in attempt against the failure budgets.
///
/// Each attempt first takes a slot in its budgets, counted and recorded as a failure in
/// one transaction under locks on the account and the address, and only then is the
/// password checked (the slot is given back when it was right): parallel attempts cannot
/// all pass one count. A device cookie issued to this account at an earlier sign-in
/// exempts its browser from the account and address budgets while the device's own
/// budget lasts, so an attack on an account does not lock its owner out.
pub fn sign_in(
    conn: &mut PgConnection,
    email: &str,
    password: &str,
    address: &str,
    device: Option<&Device>,
) -> Result<SignIn, Error> {
    let email_key = account_key(email);
    let member: Option<Member> = team_members::table
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(email) = ")
                .bind::<diesel::sql_types::Text, _>(&email_key),
        )
        .select(Member::as_select())
        .first(conn)
        .optional()?;
    let device = device
        .filter(|device| {
            member
                .as_ref()
                .is_some_and(|member| member.id == device.member_id)
        })
        .map(|device| device.id.as_str());
    let slot = match take_slot(conn, &email_key, &address_key(address), device)? {
        Ok(slot) => slot,
        Err(retry_after_secs) => return Ok(SignIn::Throttled { retry_after_secs }),
    };

    let hash = member
        .as_ref()
        .and_then(|member| member.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let password_ok = verify_password(password, &hash);

    let actor = Actor {
        member_id: member.as_ref().map(|member| member.id),
        token_id: None,
        label: email_key.clone(),
        address: Some(address.to_string()),
    };
    match member {
        Some(member) if password_ok && !member.disabled && member.password_hash.is_some() => {
            conn.transaction(|conn| {
                diesel::update(team_members::table.find(member.id))
                    .set(team_members::last_sign_in_at.eq(Utc::now()))
                    .execute(conn)?;
                diesel::delete(login_failures::table.find(slot)).execute(conn)?;
                audit::record(
                    conn,
                    &actor,
                    member_change("auth.sign_in", Some(member.id), None, None),
                )
            })?;
            Ok(SignIn::Ok(member))
        }
        member => {
            audit::record(
                conn,
                &actor,
                member_change("auth.sign_in_failed", member.map(|m| m.id), None, None),
            )?;
            Ok(SignIn::Refused)
        }
    }
}

#[derive(Clone, Copy)]
enum Budget<'a> {
    Account(&'a str),
    Address(&'a str),
    Device(&'a str),
}

/// Records an attempt as a failure if its budgets allow one more and returns the row's
/// id, or else the seconds until they do.
fn take_slot(
    conn: &mut PgConnection,
    email_key: &str,
    address_key: &str,
    device: Option<&str>,
) -> Result<Result<i64, u64>, Error> {
    conn.transaction(|conn| {
        // One lock per budget, always taken in this order (so never a deadlock): parallel
        // attempts on the same account or address count one after another.
        lock(conn, 1, email_key)?;
        lock(conn, 2, address_key)?;
        if let Some(device) = device {
            lock(conn, 3, device)?;
        }
        let now = Utc::now();
        let mut reopens = match device {
            Some(device) => reopens_at(conn, Budget::Device(device), now)?,
            None => None,
        };
        if device.is_none() || reopens.is_some() {
            let account = reopens_at(conn, Budget::Account(email_key), now)?;
            let address = reopens_at(conn, Budget::Address(address_key), now)?;
            reopens = account.max(address);
        }
        if let Some(at) = reopens {
            let seconds = (at - now).num_seconds().max(1);
            return Ok(Err(seconds as u64));
        }
        let slot = diesel::insert_into(login_failures::table)
            .values((
                login_failures::email.eq(email_key),
                login_failures::address.eq(address_key),
                login_failures::device.eq(device),
                login_failures::created_at.eq(now),
            ))
            .returning(login_failures::id)
            .get_result(conn)?;
        Ok(Ok(slot))
    })
}

fn lock(conn: &mut PgConnection, budget: i32, key: &str) -> Result<(), Error> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(budget)
        .bind::<diesel::sql_types::Text, _>(key)
        .execute(conn)?;
    Ok(())
}

/// When a spent budget allows another attempt (its oldest failure that still matters
/// leaves the window), or `None` while it is not spent.
fn reopens_at(
    conn: &mut PgConnection,
    budget: Budget<'_>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Error> {
    let window = Duration::minutes(THROTTLE_WINDOW_MINUTES);
    let recent = login_failures::table
        .select(login_failures::created_at)
        .filter(login_failures::created_at.gt(now - window))
        .into_boxed();
    let (recent, limit) = match budget {
        Budget::Account(email) => (
            recent.filter(login_failures::email.eq(email)),
            MAX_FAILURES_PER_ACCOUNT,
        ),
        Budget::Address(address) => (
            recent.filter(login_failures::address.eq(address)),
            MAX_FAILURES_PER_ADDRESS,
        ),
        Budget::Device(device) => (
            recent.filter(login_failures::device.eq(device)),
            MAX_FAILURES_PER_DEVICE,
        ),
    };
    // The limit-th newest failure: once it leaves the window, one fewer than the limit remain.
    let limiting: Option<DateTime<Utc>> = recent
        .order(login_failures::created_at.desc())
        .offset(limit - 1)
        .first(conn)
        .optional()?;
    Ok(limiting.map(|at| at + window))
}
