//! A customer's activity in plain words: "Mia Friend signed up through Linus Allen's
//! link", "Sam Support credited 10.00 USD — goodwill". Built from the audit events about
//! the customer, and, on a referrer's page, from the events that made someone their
//! referral. [`describe`] words one event; [`action_label`] names an action for the log.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use super::CustomerEvent;
use crate::db::schema::{audit_events, customers, team_members};
use crate::domain::customers::Customer;
use crate::domain::ledger::{format_amount, grouped};
use crate::error::Error;

/// One line of the timeline, newest first; `event` keeps the full before/after.
#[derive(Clone, Debug)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub text: String,
    /// Who did it, by name ("Sam Support", "API token shop-backend", "Referdesk").
    pub actor: String,
    pub event: CustomerEvent,
}

/// Names the wording needs: team members by id, customers by key.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub members: HashMap<i64, String>,
    pub customers: HashMap<String, String>,
}

impl Names {
    /// The person or thing behind an event.
    pub fn actor(&self, event: &CustomerEvent) -> String {
        if let Some(name) = event.actor_member_id.and_then(|id| self.members.get(&id)) {
            return name.clone();
        }
        if event.actor_token_id.is_some() {
            return format!("API token {}", event.actor_label);
        }
        if event.actor_label == "system" {
            return "Referdesk".to_string();
        }
        event.actor_label.clone()
    }

    /// A customer named by key in an event: their name, or the key when it is no one's
    /// any more (a changed key).
    fn customer(&self, key: &str) -> String {
        self.customers
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }
}

/// Words for an action, for the audit log: `ledger.credit` → "Balance credited".
pub fn action_label(action: &str) -> String {
    let label = match action {
        "customer.create" => "Customer added",
        "customer.update" => "Customer edited",
        "customer.change_referrer" => "Referrer changed",
        "customer.delete" => "Customer deleted",
        "customer.restore" => "Customer restored",
        "customer.approve" => "Customer approved",
        "customer.unapprove" => "Approval withdrawn",
        "customer.erase" => "Personal data erased",
        "ledger.credit" => "Balance credited",
        "ledger.debit" => "Balance debited",
        "invite.create" => "Invite sent",
        "invite.retry" => "Invite retried",
        "referral_link.create" => "Referral link added",
        "referral_link.delete" => "Referral link deleted",
        "transaction.create" => "Transaction recorded",
        "transaction.refund" => "Transaction refunded",
        "transaction.archive" => "Transaction archived",
        "transaction.revoke_archive" => "Transaction restored",
        "reward.credit" => "Reward credited",
        "reward.void" => "Reward voided",
        "reward.approve" => "Reward approved",
        "reward.deny" => "Reward denied",
        "reward.reversal_collect" => "Reward taken back",
        "reward.reversal_write_off" => "Reward written off",
        "auth.sign_in" => "Signed in",
        "auth.sign_in_failed" => "Sign-in failed",
        "member.create" => "Team member added",
        "member.update" => "Profile changed",
        "member.role_change" => "Role changed",
        "member.disable" => "Team member disabled",
        "member.enable" => "Team member enabled",
        "member.password_change" => "Password changed",
        "member.password_link" => "Password link made",
        "program.create" => "Program created",
        "program.update" => "Program changed",
        "program.rewards_settings" => "Reward settings changed",
        "reward_rule.create" => "Reward rule added",
        "reward_rule.update" => "Reward rule changed",
        "reward_rule.enable" => "Reward rule enabled",
        "reward_rule.disable" => "Reward rule disabled",
        "api_token.create" => "API token created",
        "api_token.revoke" => "API token revoked",
        "webhook.create" => "Webhook added",
        "webhook.update" => "Webhook changed",
        "webhook.delete" => "Webhook deleted",
        "webhook.rotate_secret" => "Webhook secret rotated",
        other => return other.replace(['.', '_'], " "),
    };
    label.to_string()
}

fn text(value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    }
}

fn field<'a>(value: &'a Option<Value>, name: &str) -> Option<&'a Value> {
    value.as_ref().and_then(|value| value.get(name))
}

/// "Email changed from a to b", "Name set to Mia", "Surname removed (was Friend)".
fn field_change(label: &str, before: Option<String>, after: Option<String>) -> String {
    match (before, after) {
        (Some(before), Some(after)) => format!("{label} changed from {before} to {after}"),
        (None, Some(after)) => format!("{label} set to {after}"),
        (Some(before), None) => format!("{label} removed (was {before})"),
        (None, None) => format!("{label} changed"),
    }
}

/// An amount as the event stored it (plain decimal), with its unit: "10.00 USD".
fn money(after: &Option<Value>, amount_field: &str) -> String {
    let amount = text(field(after, amount_field)).unwrap_or_default();
    let shown = match amount.parse::<bigdecimal::BigDecimal>() {
        Ok(value) => {
            let is_currency = field(after, "is_currency")
                .and_then(Value::as_bool)
                .unwrap_or_else(|| {
                    text(field(after, "amount_units")).is_some_and(|units| {
                        units.len() == 3 && units.bytes().all(|byte| byte.is_ascii_uppercase())
                    })
                });
            grouped(&format_amount(&value, is_currency))
        }
        Err(_) => amount,
    };
    match text(field(after, "amount_units")) {
        Some(units) => format!("{shown} {units}"),
        None => shown,
    }
}

/// " — note", or nothing.
fn dash(note: Option<String>) -> String {
    note.map(|note| format!(" — {note}")).unwrap_or_default()
}

/// Words for one event about `subject` (the customer whose page it is, by name).
pub fn describe(event: &CustomerEvent, subject: &str, names: &Names) -> String {
    sentence(event, subject, names).unwrap_or_else(|| action_label(&event.action))
}

/// The sentence for an action a customer's events carry; `None` for any other.
fn sentence(event: &CustomerEvent, subject: &str, names: &Names) -> Option<String> {
    let actor = names.actor(event);
    let (before, after) = (&event.before, &event.after);
    Some(match event.action.as_str() {
        "customer.create" => match text(field(after, "referring_customer")) {
            Some(referrer) => format!("{subject} signed up through {}'s link", names.customer(&referrer)),
            None => format!("{subject} signed up"),
        },
        "customer.update" => customer_update(before, after, &actor, subject),
        "customer.change_referrer" => {
            let old = text(field(before, "referring_customer")).map(|key| names.customer(&key));
            let new = text(field(after, "referring_customer")).map(|key| names.customer(&key));
            format!(
                "{actor}: {}",
                field_change("Referrer", old, new).replacen("Referrer", "referrer", 1)
            )
        }
        "customer.delete" => format!("{actor} deleted {subject}"),
        "customer.restore" => format!("{actor} restored {subject}"),
        "customer.approve" => format!("{actor} approved {subject}"),
        "customer.unapprove" => format!("{actor} withdrew the approval of {subject}"),
        "customer.erase" => format!("{actor} erased the personal data of this customer"),
        "ledger.credit" => format!(
            "{actor} credited {}{}",
            money(after, "amount"),
            dash(text(field(after, "note")))
        ),
        "ledger.debit" => format!(
            "{actor} debited {}{}",
            money(after, "amount"),
            dash(text(field(after, "note")))
        ),
        "invite.create" => match text(field(after, "email")) {
            Some(email) => format!("Invite to {email} sent"),
            None => "Invite sent".to_string(),
        },
        "invite.retry" => format!("{actor} sent a failed invite again"),
        "referral_link.create" => format!(
            "{actor} added the referral link {}",
            text(field(after, "code")).unwrap_or_default()
        ),
        "referral_link.delete" => format!(
            "{actor} deleted the referral link {}",
            text(field(before, "code")).unwrap_or_default()
        ),
        action if action.starts_with("transaction.") => return transaction_sentence(event),
        action if action.starts_with("reward.") => return reward_sentence(event, &actor),
        _ => return None,
    })
}

/// What an edit changed, field by field: "Email changed from a to b; Custom fields changed".
fn customer_update(before: &Option<Value>, after: &Option<Value>, actor: &str, subject: &str) -> String {
    let mut changes = Vec::new();
    for (name, label) in [
        ("email", "Email"),
        ("name", "Name"),
        ("surname", "Surname"),
        ("key", "Key"),
        ("id", "Id"),
    ] {
        let (old, new) = (text(field(before, name)), text(field(after, name)));
        if old != new {
            changes.push(field_change(label, old, new));
        }
    }
    let date_of_birth = |value: &Option<Value>| {
        text(field(value, "metadata").and_then(|metadata| metadata.get("date_of_birth")))
    };
    let (old, new) = (date_of_birth(before), date_of_birth(after));
    if old != new {
        changes.push(field_change("Date of birth", old, new));
    } else if field(before, "metadata") != field(after, "metadata") {
        changes.push("Metadata changed".to_string());
    }
    if field(before, "custom_fields") != field(after, "custom_fields") {
        changes.push("Custom fields changed".to_string());
    }
    if changes.is_empty() {
        format!("{actor} edited {subject}")
    } else {
        changes.join("; ")
    }
}

/// The sentence for a `transaction.*` action.
fn transaction_sentence(event: &CustomerEvent) -> Option<String> {
    let after = &event.after;
    Some(match event.action.as_str() {
        "transaction.create" => format!(
            "{} {} of {} recorded",
            text(field(after, "action"))
                .map_or_else(|| "Transaction".to_string(), |action| capitalized(&action)),
            text(field(after, "key")).unwrap_or_default(),
            money(after, "amount"),
        ),
        "transaction.refund" => format!(
            "Transaction {} refunded",
            event.subject_id.clone().unwrap_or_default()
        ),
        "transaction.archive" => format!(
            "Transaction {} archived",
            event.subject_id.clone().unwrap_or_default()
        ),
        "transaction.revoke_archive" => format!(
            "Transaction {} counts again (archive revoked)",
            event.subject_id.clone().unwrap_or_default()
        ),
        _ => return None,
    })
}

/// The sentence for a `reward.*` action.
fn reward_sentence(event: &CustomerEvent, actor: &str) -> Option<String> {
    let after = &event.after;
    Some(match event.action.as_str() {
        "reward.credit" => format!("Reward of {} credited to the balance", money(after, "amount")),
        "reward.void" => format!("Reward voided{}", dash(text(field(after, "void_reason")))),
        "reward.approve" => format!("{actor} approved a reward"),
        "reward.deny" => format!(
            "{actor} denied a reward{}",
            dash(text(field(after, "deny_reason")))
        ),
        "reward.reversal_collect" => match text(field(after, "collected")) {
            Some(_) => format!("Reward taken back: {} collected", money(after, "collected")),
            None => "Reward taken back".to_string(),
        },
        "reward.reversal_write_off" => match text(field(after, "written_off")) {
            Some(_) => format!("Reward reversal of {} written off", money(after, "written_off")),
            None => "Reward reversal written off".to_string(),
        },
        _ => return None,
    })
}

/// How an event made `friend` someone's referral, seen from the referrer's page.
pub fn describe_gained(event: &CustomerEvent, friend: &str, referrer: &str, names: &Names) -> String {
    if event.action == "customer.create" {
        format!("{friend} signed up through {referrer}'s link")
    } else {
        format!("{} made {referrer} the referrer of {friend}", names.actor(event))
    }
}

/// How `friend` stopped being the referrer's referral, seen from the referrer's page:
/// "Mia Friend's referrer changed from Linus Allen to Ada".
pub fn describe_lost(event: &CustomerEvent, friend: &str, referrer: &str, names: &Names) -> String {
    match text(field(&event.after, "referring_customer")) {
        Some(key) => format!(
            "{friend}'s referrer changed from {referrer} to {}",
            names.customer(&key)
        ),
        None => format!("{friend}'s referrer removed (was {referrer})"),
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// How an event about a friend is worded: (event, friend, referrer, names).
type Describe = fn(&CustomerEvent, &str, &str, &Names) -> String;

/// A customer's name, surname and email, as read for the wording.
type NameColumns = (Option<String>, Option<String>, Option<String>);

/// A friend (a referral, current or former): their id, name columns and key.
type Friend = (i64, NameColumns, String);

/// The customer's timeline, newest first: their own events and the signups and
/// re-attributions that made someone their referral (for their latest `limit` referrals),
/// at most `limit` entries.
pub fn for_customer(
    conn: &mut PgConnection,
    program_id: i64,
    customer: &Customer,
    limit: i64,
) -> Result<Vec<TimelineEntry>, Error> {
    let own = super::for_customer(conn, program_id, customer.id, limit)?;
    let friends = latest_referrals(conn, customer, limit)?;
    let gained = referrals_gained(conn, program_id, &friends)?;
    let lost = moved_away(conn, program_id, customer, limit)?;
    let former = former_referrals(conn, &lost)?;
    let names = names_for(conn, program_id, &own, &gained, &lost)?;

    let subject = customer.display_name();
    let mut entries: Vec<TimelineEntry> = own
        .into_iter()
        .map(|event| TimelineEntry {
            at: event.created_at,
            text: describe(&event, &subject, &names),
            actor: names.actor(&event),
            event,
        })
        .collect();
    for event in gained {
        entries.extend(about_friend(event, &friends, describe_gained, &subject, &names));
    }
    for event in lost {
        entries.extend(about_friend(event, &former, describe_lost, &subject, &names));
    }
    entries.sort_by_key(|entry| std::cmp::Reverse((entry.at, entry.event.id)));
    entries.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(entries)
}

/// The customer's latest `limit` referrals.
fn latest_referrals(conn: &mut PgConnection, customer: &Customer, limit: i64) -> Result<Vec<Friend>, Error> {
    // A customer who referred no one (most) costs no more queries here.
    if customer.referrals_count == 0 {
        return Ok(Vec::new());
    }
    Ok(customers::table
        .filter(customers::referrer_id.eq(customer.id))
        .order(customers::created_at.desc())
        .limit(limit)
        .select((
            customers::id,
            (customers::name, customers::surname, customers::email),
            customers::key,
        ))
        .load(conn)?)
}

/// For each of `friends`, the event that made them this customer's referral: the latest
/// of their attributions, when it names a referrer.
fn referrals_gained(
    conn: &mut PgConnection,
    program_id: i64,
    friends: &[Friend],
) -> Result<Vec<CustomerEvent>, Error> {
    let friend_ids: Vec<i64> = friends.iter().map(|friend| friend.0).collect();
    if friend_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut gained: Vec<CustomerEvent> = audit_events::table
        .filter(audit_events::customer_id.eq_any(&friend_ids))
        .filter(audit_events::program_id.eq(program_id))
        .filter(audit_events::action.eq_any(["customer.create", "customer.change_referrer"]))
        .order((audit_events::created_at.desc(), audit_events::id.desc()))
        .select(CustomerEvent::as_select())
        .load(conn)?;
    // The latest of a friend's attributions is the one that made them this customer's.
    let mut seen = HashSet::new();
    gained.retain(|event| event.customer_id.is_some_and(|id| seen.insert(id)));
    gained.retain(|event| text(field(&event.after, "referring_customer")).is_some());
    Ok(gained)
}

/// The customers the `lost` events moved away.
fn former_referrals(conn: &mut PgConnection, lost: &[CustomerEvent]) -> Result<Vec<Friend>, Error> {
    let lost_ids: Vec<i64> = lost.iter().filter_map(|event| event.customer_id).collect();
    if lost_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(customers::table
        .filter(customers::id.eq_any(&lost_ids))
        .select((
            customers::id,
            (customers::name, customers::surname, customers::email),
            customers::key,
        ))
        .load(conn)?)
}

/// The names the wording of these events needs: the members who acted, and the
/// customers named as referrers.
fn names_for(
    conn: &mut PgConnection,
    program_id: i64,
    own: &[CustomerEvent],
    gained: &[CustomerEvent],
    lost: &[CustomerEvent],
) -> Result<Names, Error> {
    let mut member_ids: Vec<i64> = own
        .iter()
        .chain(gained)
        .chain(lost)
        .filter_map(|event| event.actor_member_id)
        .collect();
    member_ids.sort_unstable();
    member_ids.dedup();
    let mut keys: Vec<String> = own
        .iter()
        .chain(lost)
        .flat_map(|event| {
            [
                text(field(&event.before, "referring_customer")),
                text(field(&event.after, "referring_customer")),
            ]
        })
        .flatten()
        .collect();
    keys.sort();
    keys.dedup();
    let mut names = Names::default();
    if !member_ids.is_empty() {
        names.members = team_members::table
            .filter(team_members::id.eq_any(&member_ids))
            .select((team_members::id, team_members::name))
            .load::<(i64, String)>(conn)?
            .into_iter()
            .collect();
    }
    if !keys.is_empty() {
        let rows: Vec<(String, NameColumns)> = customers::table
            .filter(customers::program_id.eq(program_id))
            .filter(customers::key.eq_any(&keys))
            .select((
                customers::key,
                (customers::name, customers::surname, customers::email),
            ))
            .load(conn)?;
        names.customers = rows
            .into_iter()
            .map(|(key, (name, surname, email))| {
                let shown = crate::domain::customers::display_name_of(&name, &surname, &email, &key);
                (key, shown)
            })
            .collect();
    }
    Ok(names)
}

/// A referral gained or moved away, worded with the friend's name; `None` when the
/// friend is not among `friends`.
fn about_friend(
    event: CustomerEvent,
    friends: &[Friend],
    describe: Describe,
    subject: &str,
    names: &Names,
) -> Option<TimelineEntry> {
    let (_, (name, surname, email), key) = friends
        .iter()
        .find(|friend| Some(friend.0) == event.customer_id)?;
    let friend_name = crate::domain::customers::display_name_of(name, surname, email, key);
    Some(TimelineEntry {
        at: event.created_at,
        text: describe(&event, &friend_name, subject, names),
        actor: names.actor(&event),
        event,
    })
}

/// The latest `limit` referrer changes that took a referral away from `customer` (named
/// by their key in the event's "before").
fn moved_away(
    conn: &mut PgConnection,
    program_id: i64,
    customer: &Customer,
    limit: i64,
) -> Result<Vec<CustomerEvent>, Error> {
    Ok(audit_events::table
        .filter(audit_events::program_id.eq(program_id))
        .filter(LeftReferrer(customer.key.clone()))
        .order((audit_events::created_at.desc(), audit_events::id.desc()))
        .limit(limit)
        .select(CustomerEvent::as_select())
        .load(conn)?)
}

/// A referrer change whose old referrer had this key. The action is written into the SQL,
/// not bound, so that the cached statement's generic plan can use the partial index
/// `audit_events_referrer_left_idx` (as `IsErasure` does for erasures); the SQL never
/// varies but for the bound key, so the statement has a static query id.
#[derive(Debug, Clone)]
struct LeftReferrer(String);

impl diesel::query_builder::QueryId for LeftReferrer {
    type QueryId = LeftReferrer;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::expression::Expression for LeftReferrer {
    type SqlType = diesel::sql_types::Bool;
}

impl<QS> diesel::expression::AppearsOnTable<QS> for LeftReferrer {}

impl<QS> diesel::expression::SelectableExpression<QS> for LeftReferrer {}

impl<GB> diesel::expression::ValidGrouping<GB> for LeftReferrer {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for LeftReferrer {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        out.push_sql(
            "audit_events.action = 'customer.change_referrer' AND (audit_events.before ->> 'referring_customer') = ",
        );
        out.push_bind_param::<diesel::sql_types::Text, String>(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(action: &str, before: Option<Value>, after: Option<Value>) -> CustomerEvent {
        CustomerEvent {
            id: 1,
            actor_member_id: Some(7),
            actor_token_id: None,
            actor_label: "sam@example.com".into(),
            action: action.into(),
            subject_type: "customer".into(),
            subject_id: Some("txn_1".into()),
            customer_id: Some(3),
            before,
            after,
            address: None,
            created_at: Utc::now(),
        }
    }

    fn names() -> Names {
        Names {
            members: HashMap::from([(7, "Sam Support".to_string())]),
            customers: HashMap::from([
                ("linus".to_string(), "Linus Allen".to_string()),
                ("ada".to_string(), "Ada Lovelace".to_string()),
            ]),
        }
    }

    fn said(action: &str, before: Option<Value>, after: Option<Value>) -> String {
        describe(&event(action, before, after), "Mia Friend", &names())
    }

    #[test]
    fn signups_credits_and_invites_read_as_sentences() {
        assert_eq!(
            said(
                "customer.create",
                None,
                Some(json!({"referring_customer": "linus"}))
            ),
            "Mia Friend signed up through Linus Allen's link"
        );
        assert_eq!(
            said("customer.create", None, Some(json!({"referring_customer": null}))),
            "Mia Friend signed up"
        );
        assert_eq!(
            said(
                "ledger.credit",
                None,
                Some(
                    json!({"amount": "10.00", "amount_units": "USD", "is_currency": true, "note": "goodwill (ticket #4711)"})
                )
            ),
            "Sam Support credited 10.00 USD — goodwill (ticket #4711)"
        );
        assert_eq!(
            said(
                "ledger.debit",
                None,
                Some(
                    json!({"amount": "250000", "amount_units": "points", "is_currency": false, "note": null})
                )
            ),
            "Sam Support debited 250,000 points"
        );
        assert_eq!(
            said("invite.create", None, Some(json!({"email": "mia@example.com"}))),
            "Invite to mia@example.com sent"
        );
    }

    #[test]
    fn edits_and_referrer_changes_name_old_and_new_values() {
        assert_eq!(
            said(
                "customer.update",
                Some(json!({"email": "old@example.com", "name": "Mia", "metadata": {}})),
                Some(
                    json!({"email": "new@example.com", "name": "Mia", "metadata": {"date_of_birth": "1990-01-02"}})
                )
            ),
            "Email changed from old@example.com to new@example.com; Date of birth set to 1990-01-02"
        );
        assert_eq!(
            said(
                "customer.change_referrer",
                Some(json!({"referring_customer": "linus"})),
                Some(json!({"referring_customer": "ada"}))
            ),
            "Sam Support: referrer changed from Linus Allen to Ada Lovelace"
        );
        assert_eq!(
            said(
                "customer.change_referrer",
                Some(json!({"referring_customer": "linus"})),
                Some(json!({"referring_customer": null}))
            ),
            "Sam Support: referrer removed (was Linus Allen)"
        );
        let gained = event(
            "customer.create",
            None,
            Some(json!({"referring_customer": "linus"})),
        );
        assert_eq!(
            describe_gained(&gained, "Mia Friend", "Linus Allen", &names()),
            "Mia Friend signed up through Linus Allen's link"
        );
        let moved = event(
            "customer.change_referrer",
            Some(json!({"referring_customer": "linus"})),
            Some(json!({"referring_customer": "ada"})),
        );
        assert_eq!(
            describe_lost(&moved, "Mia Friend", "Linus Allen", &names()),
            "Mia Friend's referrer changed from Linus Allen to Ada Lovelace"
        );
        let removed = event(
            "customer.change_referrer",
            Some(json!({"referring_customer": "linus"})),
            Some(json!({"referring_customer": null})),
        );
        assert_eq!(
            describe_lost(&removed, "Mia Friend", "Linus Allen", &names()),
            "Mia Friend's referrer removed (was Linus Allen)"
        );
    }

    /// Every action a customer's events can carry has its own words (none falls back to
    /// the bare label), and every action of the log has a label.
    #[test]
    fn every_action_is_worded() {
        let customer_actions = [
            "customer.create",
            "customer.update",
            "customer.change_referrer",
            "customer.delete",
            "customer.restore",
            "customer.approve",
            "customer.unapprove",
            "customer.erase",
            "ledger.credit",
            "ledger.debit",
            "invite.create",
            "invite.retry",
            "referral_link.create",
            "referral_link.delete",
            "transaction.create",
            "transaction.refund",
            "transaction.archive",
            "transaction.revoke_archive",
            "reward.credit",
            "reward.void",
            "reward.approve",
            "reward.deny",
            "reward.reversal_collect",
            "reward.reversal_write_off",
        ];
        for action in customer_actions {
            let event = event(action, Some(json!({})), Some(json!({})));
            assert!(
                sentence(&event, "Mia Friend", &names()).is_some(),
                "{action} has no sentence of its own"
            );
        }
        for action in customer_actions.iter().chain(&[
            "auth.sign_in",
            "auth.sign_in_failed",
            "member.create",
            "member.update",
            "member.role_change",
            "member.disable",
            "member.enable",
            "member.password_change",
            "member.password_link",
            "program.create",
            "program.update",
            "program.rewards_settings",
            "reward_rule.create",
            "reward_rule.update",
            "reward_rule.enable",
            "reward_rule.disable",
            "api_token.create",
            "api_token.revoke",
            "webhook.create",
            "webhook.update",
            "webhook.delete",
            "webhook.rotate_secret",
        ]) {
            let label = action_label(action);
            assert!(
                !label.contains('.') && !label.contains('_'),
                "{action} has no label: {label}"
            );
        }
        assert_eq!(action_label("something.new_thing"), "something new thing");
    }
}
