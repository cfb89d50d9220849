//! Team members: sign-in, roles, one-time links, login throttling.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::schema::{login_failures, one_time_tokens, sessions, team_members};
use crate::db::text_enum;
use crate::domain::{audit, sha256_hex, Actor};
use crate::error::{is_unique_violation, Error, FieldErrors};
use crate::random::random_token;

text_enum! {
    /// `team_members.role`. Ordered: each role may do everything the ones before it may.
    pub enum Role {
        Viewer = "viewer",
        Support = "support",
        Admin = "admin",
    }
}

text_enum! {
    /// What a one-time link is for (`one_time_tokens.purpose`).
    pub enum LinkPurpose {
        Setup = "setup",
        SetPassword = "set_password",
    }
}

/// A team member. Deserializable for the session store's hand-over of the signed-in
/// member (`web::session_store`), which never carries the password hash.
#[derive(Clone, Debug, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = team_members)]
pub struct Member {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub disabled: bool,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Member {
    pub fn can(&self, needed: Role) -> bool {
        !self.disabled && self.role >= needed
    }

    pub fn actor(&self, address: Option<String>) -> Actor {
        Actor {
            member_id: Some(self.id),
            token_id: None,
            label: self.email.clone(),
            address,
        }
    }
}

/// Validated input for a new team member.
pub struct NewMember {
    pub email: String,
    pub name: String,
    pub role: Role,
    /// `None`: the member sets a password through a one-time link.
    pub password: Option<String>,
}

pub const MIN_PASSWORD_LENGTH: usize = 10;
pub const MAX_PASSWORD_LENGTH: usize = 128;

pub fn check_password_strength(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_LENGTH {
        return Err(format!("Use at least {MIN_PASSWORD_LENGTH} characters."));
    }
    if length > MAX_PASSWORD_LENGTH {
        return Err(format!("Use at most {MAX_PASSWORD_LENGTH} characters."));
    }
    Ok(())
}

pub fn normalize_email(email: &str) -> String {
    email.trim().to_string()
}

pub fn check_email(email: &str) -> Result<(), String> {
    if validator::ValidateEmail::validate_email(&email) && email.len() <= 254 {
        Ok(())
    } else {
        Err("Enter a valid email address.".to_string())
    }
}

impl NewMember {
    pub fn parse(email: &str, name: &str, role: &str, password: Option<&str>) -> Result<NewMember, Error> {
        let mut fields = FieldErrors::new();
        let email = normalize_email(email);
        if let Err(message) = check_email(&email) {
            fields.entry("email".into()).or_default().push(message);
        }
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > 200 || super::has_control_chars(&name) {
            fields
                .entry("name".into())
                .or_default()
                .push("Enter a name (at most 200 characters, without control characters).".into());
        }
        let role = Role::parse(role.trim());
        if role.is_none() {
            fields
                .entry("role".into())
                .or_default()
                .push("Choose viewer, support or admin.".into());
        }
        let password = password.filter(|password| !password.is_empty());
        if let Some(password) = password {
            if let Err(message) = check_password_strength(password) {
                fields.entry("password".into()).or_default().push(message);
            }
        }
        match role {
            Some(role) if fields.is_empty() => Ok(NewMember {
                email,
                name,
                role,
                password: password.map(str::to_string),
            }),
            _ => Err(Error::invalid_fields(fields)),
        }
    }
}

pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| Error::Internal(anyhow::anyhow!("could not hash a password: {error}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Verifying against this when the email is unknown keeps the answer time the same, so
/// timing does not reveal which emails have accounts.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a real password, only for timing").unwrap_or_default())
}

pub fn create_member(conn: &mut PgConnection, actor: &Actor, new: NewMember) -> Result<Member, Error> {
    let password_hash = new.password.as_deref().map(hash_password).transpose()?;
    conn.transaction(|conn| {
        let member = diesel::insert_into(team_members::table)
            .values((
                team_members::email.eq(&new.email),
                team_members::name.eq(&new.name),
                team_members::role.eq(new.role),
                team_members::password_hash.eq(password_hash),
            ))
            .returning(Member::as_returning())
            .get_result(conn)
            .map_err(|error| {
                if is_unique_violation(&error, "team_members_email_key") {
                    Error::invalid("email", "A team member with this email already exists.")
                } else {
                    error.into()
                }
            })?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: None,
                action: "member.create",
                subject_type: "team_member",
                subject_id: Some(member.id.to_string()),
                customer_id: None,
                before: None,
                after: Some(json!({"email": member.email, "name": member.name, "role": member.role})),
            },
        )?;
        Ok(member)
    })
}

pub fn find(conn: &mut PgConnection, id: i64) -> Result<Member, Error> {
    Ok(team_members::table
        .find(id)
        .select(Member::as_select())
        .first(conn)?)
}

/// A fingerprint of the whole `programs` table, read with each signed-in session
/// (`sessions::load`): it changes whenever any program does, so a signed-in request can
/// reuse its cached program list without a second round trip and without ever showing a
/// stale one (`web::access::ProgramsCache`).
pub const PROGRAMS_FINGERPRINT: &str =
    "(SELECT md5(string_agg(programs::text, ',' ORDER BY programs.id)) FROM programs)";

pub fn any_members(conn: &mut PgConnection) -> Result<bool, Error> {
    Ok(diesel::select(diesel::dsl::exists(team_members::table.select(team_members::id))).get_result(conn)?)
}

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
                audit::record(conn, &actor, sign_in_change("auth.sign_in", Some(member.id)))
            })?;
            Ok(SignIn::Ok(member))
        }
        member => {
            audit::record(
                conn,
                &actor,
                sign_in_change("auth.sign_in_failed", member.map(|m| m.id)),
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

fn sign_in_change(action: &str, member_id: Option<i64>) -> audit::Change<'_> {
    audit::Change {
        program_id: None,
        action,
        subject_type: "team_member",
        subject_id: member_id.map(|id| id.to_string()),
        customer_id: None,
        before: None,
        after: None,
    }
}

/// Ends every session of a member (disable, password change, explicit sign-out everywhere).
pub fn end_sessions(
    conn: &mut PgConnection,
    member_id: i64,
    except_session_id: Option<&str>,
) -> Result<usize, Error> {
    let query = sessions::table.filter(sessions::member_id.eq(member_id));
    Ok(match except_session_id {
        Some(keep) => diesel::delete(query.filter(sessions::id.ne(keep))).execute(conn)?,
        None => diesel::delete(query).execute(conn)?,
    })
}

/// Sets a new password and ends the member's other sessions.
pub fn set_password(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    password: &str,
    keep_session_id: Option<&str>,
) -> Result<(), Error> {
    check_password_strength(password).map_err(|message| Error::invalid("password", message))?;
    let hash = hash_password(password)?;
    conn.transaction(|conn| {
        diesel::update(team_members::table.find(member_id))
            .set((
                team_members::password_hash.eq(hash),
                team_members::updated_at.eq(Utc::now()),
            ))
            .execute(conn)?;
        end_sessions(conn, member_id, keep_session_id)?;
        audit::record(
            conn,
            actor,
            sign_in_change("member.password_change", Some(member_id)),
        )
    })
}

pub enum OneTimePurpose {
    Setup,
    SetPassword(i64),
}

/// Creates a one-time link token (returned in clear once; only its hash is stored).
pub fn create_one_time_token(
    conn: &mut PgConnection,
    purpose: OneTimePurpose,
    valid_for: Duration,
) -> Result<String, Error> {
    let token = random_token(40);
    let (purpose, member_id) = match purpose {
        OneTimePurpose::Setup => (LinkPurpose::Setup, None),
        OneTimePurpose::SetPassword(member_id) => (LinkPurpose::SetPassword, Some(member_id)),
    };
    diesel::insert_into(one_time_tokens::table)
        .values((
            one_time_tokens::token_hash.eq(sha256_hex(&token)),
            one_time_tokens::purpose.eq(purpose),
            one_time_tokens::member_id.eq(member_id),
            one_time_tokens::expires_at.eq(Utc::now() + valid_for),
        ))
        .execute(conn)?;
    Ok(token)
}

/// A usable one-time token: unused, unexpired, of the given purpose. Returns its id and member.
pub fn find_one_time_token(
    conn: &mut PgConnection,
    token: &str,
    purpose: LinkPurpose,
) -> Result<(i64, Option<i64>), Error> {
    one_time_tokens::table
        .filter(one_time_tokens::token_hash.eq(sha256_hex(token)))
        .filter(one_time_tokens::purpose.eq(purpose))
        .filter(one_time_tokens::used_at.is_null())
        .filter(one_time_tokens::expires_at.gt(Utc::now()))
        .select((one_time_tokens::id, one_time_tokens::member_id))
        .first(conn)
        .optional()?
        .ok_or_else(|| {
            Error::BadRequest("This link is invalid, used or expired. Ask an admin for a new one.".into())
        })
}

/// Marks a token used; false when another request used it first.
pub fn use_one_time_token(conn: &mut PgConnection, token_id: i64) -> Result<bool, Error> {
    let updated = diesel::update(
        one_time_tokens::table
            .find(token_id)
            .filter(one_time_tokens::used_at.is_null()),
    )
    .set(one_time_tokens::used_at.eq(Utc::now()))
    .execute(conn)?;
    Ok(updated == 1)
}

/// First run: when nobody can sign in yet, a setup link creates the first admin.
pub fn setup_token_if_needed(conn: &mut PgConnection) -> Result<Option<String>, Error> {
    if any_members(conn)? {
        return Ok(None);
    }
    create_one_time_token(conn, OneTimePurpose::Setup, Duration::hours(24)).map(Some)
}

/// Creates the first admin through the setup link, in one transaction with using the link.
pub fn complete_setup(
    conn: &mut PgConnection,
    token: &str,
    new: NewMember,
    address: Option<String>,
) -> Result<Member, Error> {
    conn.transaction(|conn| {
        let (token_id, _) = find_one_time_token(conn, token, LinkPurpose::Setup)?;
        if any_members(conn)? || !use_one_time_token(conn, token_id)? {
            return Err(Error::BadRequest(
                "Setup is already complete. Please sign in.".into(),
            ));
        }
        let actor = Actor {
            member_id: None,
            token_id: None,
            label: "setup".into(),
            address,
        };
        create_member(
            conn,
            &actor,
            NewMember {
                role: Role::Admin,
                ..new
            },
        )
    })
}

pub fn list_members(conn: &mut PgConnection) -> Result<Vec<Member>, Error> {
    Ok(team_members::table
        .order((team_members::disabled, team_members::name, team_members::id))
        .select(Member::as_select())
        .load(conn)?)
}

// ---------------------------------------------------------------------------------------
// Team management by admins, the set-password link and the member's own profile.

/// How long a set-password link given to a member stays valid.
pub const SET_PASSWORD_LINK_HOURS: i64 = 72;

pub const LAST_ADMIN_MESSAGE: &str =
    "This is the last enabled admin. Make another member an admin first, so that someone can still manage the team.";

/// Locks every enabled admin (in id order, so concurrent changes queue up instead of
/// deadlocking), then the member to change. Two admins demoting each other at the same
/// moment therefore cannot both succeed: the second sees the first's change.
fn lock_for_admin_change(conn: &mut PgConnection, member_id: i64) -> Result<(Member, usize), Error> {
    let enabled_admins: Vec<i64> = team_members::table
        .filter(team_members::role.eq(Role::Admin))
        .filter(team_members::disabled.eq(false))
        .order(team_members::id)
        .select(team_members::id)
        .for_update()
        .load(conn)?;
    let member = team_members::table
        .find(member_id)
        .select(Member::as_select())
        .for_update()
        .first(conn)?;
    Ok((member, enabled_admins.len()))
}

fn is_enabled_admin(member: &Member) -> bool {
    !member.disabled && member.role == Role::Admin
}

/// Changes a member's role. The last enabled admin cannot be demoted.
pub fn change_role(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    role: Role,
) -> Result<Member, Error> {
    conn.transaction(|conn| {
        let (member, enabled_admins) = lock_for_admin_change(conn, member_id)?;
        if member.role == role {
            return Ok(member);
        }
        if is_enabled_admin(&member) && enabled_admins <= 1 {
            return Err(Error::invalid("role", LAST_ADMIN_MESSAGE));
        }
        let updated = diesel::update(team_members::table.find(member_id))
            .set((
                team_members::role.eq(role),
                team_members::updated_at.eq(Utc::now()),
            ))
            .returning(Member::as_returning())
            .get_result(conn)?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: None,
                action: "member.role_change",
                subject_type: "team_member",
                subject_id: Some(member_id.to_string()),
                customer_id: None,
                before: Some(json!({"role": member.role})),
                after: Some(json!({"role": updated.role})),
            },
        )?;
        Ok(updated)
    })
}

/// Disables or enables a member. Disabling ends all their sessions in the same
/// transaction, so their next request is signed out. Nobody disables themselves, and the
/// last enabled admin cannot be disabled.
pub fn set_disabled(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    disabled: bool,
) -> Result<Member, Error> {
    if disabled && actor.member_id == Some(member_id) {
        return Err(Error::invalid("disabled", "You cannot disable your own account."));
    }
    conn.transaction(|conn| {
        let (member, enabled_admins) = lock_for_admin_change(conn, member_id)?;
        if member.disabled == disabled {
            return Ok(member);
        }
        if disabled && is_enabled_admin(&member) && enabled_admins <= 1 {
            return Err(Error::invalid("disabled", LAST_ADMIN_MESSAGE));
        }
        let updated = diesel::update(team_members::table.find(member_id))
            .set((
                team_members::disabled.eq(disabled),
                team_members::updated_at.eq(Utc::now()),
            ))
            .returning(Member::as_returning())
            .get_result(conn)?;
        if disabled {
            end_sessions(conn, member_id, None)?;
        }
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: None,
                action: if disabled {
                    "member.disable"
                } else {
                    "member.enable"
                },
                subject_type: "team_member",
                subject_id: Some(member_id.to_string()),
                customer_id: None,
                before: Some(json!({"disabled": member.disabled})),
                after: Some(json!({"disabled": updated.disabled})),
            },
        )?;
        Ok(updated)
    })
}

/// Adds a member. Without an initial password, a set-password link is created in the same
/// transaction and returned (in clear, once) for the admin to pass on.
pub fn add_member(
    conn: &mut PgConnection,
    actor: &Actor,
    new: NewMember,
) -> Result<(Member, Option<String>), Error> {
    let wants_link = new.password.is_none();
    conn.transaction(|conn| {
        let member = create_member(conn, actor, new)?;
        let link = if wants_link {
            Some(issue_password_link(conn, actor, member.id)?)
        } else {
            None
        };
        Ok((member, link))
    })
}

/// A fresh one-time set-password link for a member (valid [`SET_PASSWORD_LINK_HOURS`]).
/// Older unused links of the member stop working: only the latest one handed out counts.
pub fn issue_password_link(conn: &mut PgConnection, actor: &Actor, member_id: i64) -> Result<String, Error> {
    conn.transaction(|conn| {
        let member = find(conn, member_id)?;
        let now = Utc::now();
        diesel::update(
            one_time_tokens::table
                .filter(one_time_tokens::member_id.eq(member.id))
                .filter(one_time_tokens::purpose.eq(LinkPurpose::SetPassword))
                .filter(one_time_tokens::used_at.is_null())
                .filter(one_time_tokens::expires_at.gt(now)),
        )
        .set(one_time_tokens::expires_at.eq(now))
        .execute(conn)?;
        let token = create_one_time_token(
            conn,
            OneTimePurpose::SetPassword(member.id),
            Duration::hours(SET_PASSWORD_LINK_HOURS),
        )?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: None,
                action: "member.password_link",
                subject_type: "team_member",
                subject_id: Some(member.id.to_string()),
                customer_id: None,
                before: None,
                after: Some(json!({"valid_hours": SET_PASSWORD_LINK_HOURS})),
            },
        )?;
        Ok(token)
    })
}

/// An admin sets a member's password; all of that member's sessions end.
pub fn reset_password(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    password: &str,
) -> Result<Member, Error> {
    let member = find(conn, member_id)?;
    set_password(conn, actor, member.id, password, None)?;
    Ok(member)
}

/// The member a usable set-password link belongs to (for showing the form).
pub fn member_for_password_link(conn: &mut PgConnection, token: &str) -> Result<Member, Error> {
    let (_, member_id) = find_one_time_token(conn, token, LinkPurpose::SetPassword)?;
    let member_id = member_id.ok_or(Error::NotFound)?;
    let member = find(conn, member_id)?;
    if member.disabled {
        return Err(Error::BadRequest(
            "This account is disabled. Ask an admin to enable it.".into(),
        ));
    }
    Ok(member)
}

/// Sets a password through a one-time link: the link is used up and every session of the
/// member ends, all in one transaction (a refused password leaves the link usable).
pub fn complete_password_link(
    conn: &mut PgConnection,
    token: &str,
    password: &str,
    address: Option<String>,
) -> Result<Member, Error> {
    conn.transaction(|conn| {
        let (token_id, _) = find_one_time_token(conn, token, LinkPurpose::SetPassword)?;
        let member = member_for_password_link(conn, token)?;
        if !use_one_time_token(conn, token_id)? {
            return Err(Error::BadRequest(
                "This link is invalid, used or expired. Ask an admin for a new one.".into(),
            ));
        }
        set_password(conn, &member.actor(address), member.id, password, None)?;
        Ok(member)
    })
}

/// A member's change to their own profile, parsed from the form.
pub struct ProfileChange {
    pub name: String,
    pub password: Option<PasswordChange>,
}

pub struct PasswordChange {
    pub current: String,
    pub new: String,
}

impl ProfileChange {
    /// The new password is optional; when given, the current one and a matching
    /// confirmation are required.
    pub fn parse(name: &str, current: &str, new: &str, confirmation: &str) -> Result<ProfileChange, Error> {
        let mut fields = FieldErrors::new();
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > 200 || super::has_control_chars(&name) {
            fields
                .entry("name".into())
                .or_default()
                .push("Enter a name (at most 200 characters, without control characters).".into());
        }
        let wants_password = !new.is_empty() || !confirmation.is_empty();
        if wants_password {
            if current.is_empty() {
                fields
                    .entry("current_password".into())
                    .or_default()
                    .push("Enter your current password to set a new one.".into());
            }
            if let Err(message) = check_password_strength(new) {
                fields.entry("new_password".into()).or_default().push(message);
            } else if new != confirmation {
                fields
                    .entry("password_confirmation".into())
                    .or_default()
                    .push("The two passwords differ.".into());
            }
        }
        if !fields.is_empty() {
            return Err(Error::invalid_fields(fields));
        }
        Ok(ProfileChange {
            name,
            password: wants_password.then(|| PasswordChange {
                current: current.to_string(),
                new: new.to_string(),
            }),
        })
    }
}

/// Saves a member's own name and, when asked, password. The current password must be
/// right; a new password ends every other session of the member (`keep_session_id` is the
/// row id of the session making the change, which stays signed in).
pub fn update_profile(
    conn: &mut PgConnection,
    actor: &Actor,
    member_id: i64,
    change: ProfileChange,
    keep_session_id: Option<&str>,
) -> Result<Member, Error> {
    conn.transaction(|conn| {
        let member = team_members::table
            .find(member_id)
            .select(Member::as_select())
            .for_update()
            .first(conn)?;
        if let Some(password) = &change.password {
            let hash = member.password_hash.as_deref().unwrap_or_else(|| dummy_hash());
            if member.password_hash.is_none() || !verify_password(&password.current, hash) {
                return Err(Error::invalid(
                    "current_password",
                    "Your current password is not correct.",
                ));
            }
        }
        let member = if change.name != member.name {
            let updated = diesel::update(team_members::table.find(member_id))
                .set((
                    team_members::name.eq(&change.name),
                    team_members::updated_at.eq(Utc::now()),
                ))
                .returning(Member::as_returning())
                .get_result(conn)?;
            audit::record(
                conn,
                actor,
                audit::Change {
                    program_id: None,
                    action: "member.update",
                    subject_type: "team_member",
                    subject_id: Some(member_id.to_string()),
                    customer_id: None,
                    before: Some(json!({"name": member.name})),
                    after: Some(json!({"name": updated.name})),
                },
            )?;
            updated
        } else {
            member
        };
        if let Some(password) = &change.password {
            set_password(conn, actor, member_id, &password.new, keep_session_id)?;
        }
        Ok(member)
    })
}
