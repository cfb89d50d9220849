//! Team members: who they are and their roles. Signing in, passwords, one-time links,
//! management by admins and a member's own profile each have a file under `team/`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::schema::{sessions, team_members};
use crate::db::text_enum;
use crate::domain::{audit, Actor};
use crate::error::{unique_violation_as_field, Error, FieldErrors};

mod management;
mod one_time_links;
mod passwords;
mod profile;
mod sign_in;

pub use management::{
    add_member, change_role, reset_password, set_disabled, with_email_clash, LAST_ADMIN_MESSAGE,
};

/// The message for an email another member already has.
pub const EMAIL_TAKEN: &str = "A team member with this email already exists.";
pub use one_time_links::{
    complete_password_link, complete_setup, create_one_time_token, find_one_time_token, issue_password_link,
    member_for_password_link, setup_token_if_needed, use_one_time_token, OneTimePurpose,
    SET_PASSWORD_LINK_HOURS,
};
pub use passwords::{
    check_password_strength, hash_password, new_password_problems, set_password, MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
};
use passwords::{dummy_hash, verify_password};
pub use profile::{parse_checked as parse_profile_change, update_profile, PasswordChange, ProfileChange};
pub use sign_in::{
    account_key, missing_sign_in_fields, sign_in, Device, SignIn, LOGIN_FAILURES_KEPT_MINUTES,
    MAX_EMAIL_LENGTH, MAX_FAILURES_PER_ACCOUNT, MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_DEVICE,
    THROTTLE_WINDOW_MINUTES,
};

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

/// An address an email can be sent to over the internet: valid, and its domain has a dot
/// (`friend@example` names no reachable domain). Only where Referdesk sends mail (invites):
/// customer and team addresses keep [`check_email`], which the API's clients rely on.
pub fn check_deliverable_email(email: &str) -> Result<(), String> {
    check_email(email)?;
    let domain = email.rsplit_once('@').map(|(_, domain)| domain).unwrap_or("");
    let labels_ok = domain.split('.').all(|label| !label.is_empty());
    if !domain.contains('.') || !labels_ok {
        return Err(format!(
            "The domain \"{domain}\" has no dot, so no email can reach it: enter a full address such as friend@example.com."
        ));
    }
    Ok(())
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
                unique_violation_as_field(error, "team_members_email_key", "email", EMAIL_TAKEN)
            })?;
        audit::record(
            conn,
            actor,
            member_change(
                "member.create",
                Some(member.id),
                None,
                Some(json!({"email": member.email, "name": member.name, "role": member.role})),
            ),
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

pub fn list_members(conn: &mut PgConnection) -> Result<Vec<Member>, Error> {
    Ok(team_members::table
        .order((team_members::disabled, team_members::name, team_members::id))
        .select(Member::as_select())
        .load(conn)?)
}

/// An audit event about a team member: no program, since the team works on all of them.
fn member_change(
    action: &str,
    member_id: Option<i64>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> audit::Change<'_> {
    audit::Change {
        program_id: None,
        action,
        subject_type: "team_member",
        subject_id: member_id.map(|id| id.to_string()),
        customer_id: None,
        before,
        after,
    }
}
