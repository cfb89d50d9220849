//! Subscriptions: where a program's events go, which ones, and the secret that signs them.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::webhook_subscriptions as subs;
use crate::domain::{audit, has_control_chars, Actor};
use crate::error::{Error, FieldErrors};

use super::addresses::{self, Policy};
use super::Event;

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;
const MAX_NAME_CHARS: usize = 100;
const MAX_URL_CHARS: usize = 2000;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = subs)]
pub struct Subscription {
    pub id: i64,
    pub program_id: i64,
    pub key: String,
    pub name: String,
    pub url: String,
    pub all_events: bool,
    pub events: Vec<String>,
    pub is_active: bool,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub auto_disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// The events it receives, by name (every event when it asked for all).
    pub fn event_names(&self) -> Vec<String> {
        if self.all_events {
            Event::subscribable()
                .map(|event| event.as_str().to_string())
                .collect()
        } else {
            self.events.clone()
        }
    }

    pub fn wants(&self, event: &str) -> bool {
        self.all_events || self.events.iter().any(|wanted| wanted == event)
    }

    /// The secrets that sign a delivery made at `now`: the current one, and the previous
    /// one during the overlap after a rotation.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut secrets = vec![self.secret.clone()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_secret_until) {
            if now < until {
                secrets.push(previous.clone());
            }
        }
        secrets
    }

    pub fn in_rotation_overlap(&self, now: DateTime<Utc>) -> bool {
        self.signing_secrets(now).len() > 1
    }
}

/// A new signing secret in the Standard Webhooks form: `whsec_` and 32 random bytes in
/// base64 (the HMAC key of `webhook-signature` is those bytes; the `Signature` header is
/// keyed with the whole text).
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The fields as submitted (the API may leave any out on an update).
#[derive(Clone, Debug, Default)]
pub struct SubscriptionInput {
    pub name: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub all_events: Option<bool>,
    pub is_active: Option<bool>,
}

/// Validated fields, ready to store.
#[derive(Debug)]
struct Checked {
    name: String,
    url: String,
    all_events: bool,
    events: Vec<String>,
    is_active: bool,
}

/// The URL to store: the one given (checked), else the current one.
fn check_url_field(
    url: Option<String>,
    current: Option<&Subscription>,
    policy: Policy,
) -> Result<String, String> {
    match (url, current) {
        (Some(url), _) if url.trim().chars().count() > MAX_URL_CHARS => {
            Err(format!("The URL may be at most {MAX_URL_CHARS} characters long."))
        }
        (Some(url), _) if url.trim().is_empty() => Err("Enter the URL that receives the events.".into()),
        (Some(url), _) => addresses::check_url(&url, policy),
        (None, Some(current)) => Ok(current.url.clone()),
        (None, None) => Err("Enter the URL that receives the events.".into()),
    }
}

fn check(input: SubscriptionInput, current: Option<&Subscription>, policy: Policy) -> Result<Checked, Error> {
    let mut errors = FieldErrors::new();
    let mut refuse = |field: &str, message: String| {
        errors.entry(field.to_string()).or_default().push(message);
    };
    let name = input
        .name
        .map(|name| name.trim().to_string())
        .or_else(|| current.map(|current| current.name.clone()))
        .unwrap_or_default();
    if name.is_empty() {
        refuse("name", "Enter a name.".into());
    } else if name.chars().count() > MAX_NAME_CHARS || has_control_chars(&name) {
        refuse(
            "name",
            format!("The name must be one line of at most {MAX_NAME_CHARS} characters."),
        );
    }
    let url = check_url_field(input.url, current, policy).unwrap_or_else(|message| {
        refuse("url", message);
        String::new()
    });
    let all_events = input
        .all_events
        .unwrap_or_else(|| current.is_some_and(|current| current.all_events && input.events.is_none()));
    let mut events = match input.events {
        Some(events) => events.iter().map(|event| event.trim().to_string()).collect(),
        None => current.map(|current| current.events.clone()).unwrap_or_default(),
    };
    events.sort();
    events.dedup();
    let unknown: Vec<&str> = events
        .iter()
        .filter(|name| Event::parse(name).is_none_or(|event| event == Event::Test))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = Event::subscribable().map(Event::as_str).collect();
        refuse(
            "events",
            format!(
                "Unknown events: {}. Events are: {}.",
                unknown.join(", "),
                known.join(", ")
            ),
        );
    } else if !all_events && events.is_empty() {
        refuse("events", "Choose at least one event (or all events).".into());
    }
    if all_events {
        events.clear();
    }
    if !errors.is_empty() {
        return Err(Error::invalid_fields(errors));
    }
    Ok(Checked {
        name,
        url,
        all_events,
        events,
        is_active: input
            .is_active
            .or(current.map(|current| current.is_active))
            .unwrap_or(true),
    })
}

fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    subscription: &Subscription,
    action: &str,
) -> Result<(), Error> {
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(subscription.program_id),
            action,
            subject_type: "webhook",
            subject_id: Some(subscription.key.clone()),
            customer_id: None,
            before: None,
            after: Some(json!({
                "name": subscription.name,
                "url": subscription.url,
                "events": subscription.event_names(),
                "is_active": subscription.is_active,
            })),
        },
    )
}

/// Creates a subscription with a new secret (in the answer: shown once).
pub fn create(
    conn: &mut PgConnection,
    program_id: i64,
    actor: &Actor,
    input: SubscriptionInput,
    policy: Policy,
) -> Result<Subscription, Error> {
    create_once(conn, program_id, actor, input, policy, None).map(Created::into_inner)
}

/// What [`create_once`] did.
#[derive(Debug)]
pub enum Created {
    New(Subscription),
    /// The form was submitted before: the subscription it made then.
    Before(Subscription),
}

impl Created {
    pub fn into_inner(self) -> Subscription {
        match self {
            Created::New(subscription) | Created::Before(subscription) => subscription,
        }
    }
}

/// Creates a subscription once per `form_token` (the dashboard form's one-time token):
/// the same form sent twice, even at once, makes one subscription, and the second send
/// gets the first one's. Concurrent sends queue on the unique index; the later one inserts
/// nothing and reads the row the earlier one committed.
pub fn create_once(
    conn: &mut PgConnection,
    program_id: i64,
    actor: &Actor,
    input: SubscriptionInput,
    policy: Policy,
    form_token: Option<uuid::Uuid>,
) -> Result<Created, Error> {
    if let Some(token) = form_token {
        if let Some(before) = created_by_form(conn, program_id, token)? {
            return Ok(Created::Before(before));
        }
    }
    let checked = check(input, None, policy)?;
    let created = conn.transaction(|conn| {
        let created: Option<Subscription> = diesel::insert_into(subs::table)
            .values((
                subs::program_id.eq(program_id),
                subs::key.eq(format!("wh_{}", crate::random::random_token(20))),
                subs::name.eq(&checked.name),
                subs::url.eq(&checked.url),
                subs::all_events.eq(checked.all_events),
                subs::events.eq(&checked.events),
                subs::is_active.eq(checked.is_active),
                subs::secret.eq(new_secret()),
                subs::form_token.eq(form_token),
            ))
            .on_conflict(subs::form_token)
            .do_nothing()
            .returning(Subscription::as_returning())
            .get_result(conn)
            .optional()?;
        if let Some(created) = &created {
            record(conn, actor, created, "webhook.create")?;
        }
        Ok::<_, Error>(created)
    })?;
    match (created, form_token) {
        (Some(created), _) => Ok(Created::New(created)),
        (None, Some(token)) => created_by_form(conn, program_id, token)?
            .map(Created::Before)
            .ok_or(Error::NotFound),
        (None, None) => Err(Error::Internal(anyhow::anyhow!(
            "a webhook subscription without a form token was not inserted"
        ))),
    }
}

fn created_by_form(
    conn: &mut PgConnection,
    program_id: i64,
    form_token: uuid::Uuid,
) -> Result<Option<Subscription>, Error> {
    Ok(subs::table
        .filter(subs::program_id.eq(program_id))
        .filter(subs::form_token.eq(form_token))
        .select(Subscription::as_select())
        .first(conn)
        .optional()?)
}

pub fn list(conn: &mut PgConnection, program_id: i64) -> Result<Vec<Subscription>, Error> {
    Ok(subs::table
        .filter(subs::program_id.eq(program_id))
        .order(subs::id)
        .select(Subscription::as_select())
        .load(conn)?)
}

pub fn find(conn: &mut PgConnection, program_id: i64, key: &str) -> Result<Subscription, Error> {
    subs::table
        .filter(subs::program_id.eq(program_id))
        .filter(subs::key.eq(key))
        .select(Subscription::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)
}

fn lock(conn: &mut PgConnection, program_id: i64, key: &str) -> Result<Subscription, Error> {
    subs::table
        .filter(subs::program_id.eq(program_id))
        .filter(subs::key.eq(key))
        .select(Subscription::as_select())
        .for_update()
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)
}

/// Applies the submitted fields; left-out ones keep their values. Turning a subscription
/// on again clears its failure streak and the automatic-disable notice.
pub fn update(
    conn: &mut PgConnection,
    program_id: i64,
    key: &str,
    actor: &Actor,
    input: SubscriptionInput,
    policy: Policy,
) -> Result<Subscription, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program_id, key)?;
        let checked = check(input, Some(&current), policy)?;
        let reactivated = checked.is_active && !current.is_active;
        let updated: Subscription = diesel::update(subs::table.find(current.id))
            .set((
                subs::name.eq(&checked.name),
                subs::url.eq(&checked.url),
                subs::all_events.eq(checked.all_events),
                subs::events.eq(&checked.events),
                subs::is_active.eq(checked.is_active),
                subs::failing_since.eq(if reactivated { None } else { current.failing_since }),
                subs::auto_disabled_at.eq(if checked.is_active {
                    None
                } else {
                    current.auto_disabled_at
                }),
                subs::updated_at.eq(Utc::now()),
            ))
            .returning(Subscription::as_returning())
            .get_result(conn)?;
        record(conn, actor, &updated, "webhook.update")?;
        Ok(updated)
    })
}

/// Deletes the subscription with its deliveries and their log.
pub fn delete(
    conn: &mut PgConnection,
    program_id: i64,
    key: &str,
    actor: &Actor,
) -> Result<Subscription, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program_id, key)?;
        diesel::delete(subs::table.find(current.id)).execute(conn)?;
        record(conn, actor, &current, "webhook.delete")?;
        Ok(current)
    })
}

/// A new secret; the current one keeps signing (beside it) for [`ROTATION_OVERLAP_HOURS`].
/// Returns the subscription with the new secret, to be shown once.
pub fn rotate_secret(
    conn: &mut PgConnection,
    program_id: i64,
    key: &str,
    actor: &Actor,
) -> Result<Subscription, Error> {
    conn.transaction(|conn| {
        let current = lock(conn, program_id, key)?;
        let now = Utc::now();
        let rotated: Subscription = diesel::update(subs::table.find(current.id))
            .set((
                subs::previous_secret.eq(Some(&current.secret)),
                subs::previous_secret_until.eq(Some(now + Duration::hours(ROTATION_OVERLAP_HOURS))),
                subs::secret.eq(new_secret()),
                subs::updated_at.eq(now),
            ))
            .returning(Subscription::as_returning())
            .get_result(conn)?;
        record(conn, actor, &rotated, "webhook.rotate_secret")?;
        Ok(rotated)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(events: &[&str]) -> SubscriptionInput {
        SubscriptionInput {
            name: Some("Backend".into()),
            url: Some("https://93.184.216.34/hook".into()),
            events: Some(events.iter().map(|event| event.to_string()).collect()),
            all_events: None,
            is_active: None,
        }
    }

    #[test]
    fn events_must_be_known_and_not_empty() {
        assert!(check(input(&["customer.created"]), None, Policy::default()).is_ok());
        assert!(check(input(&[]), None, Policy::default()).is_err());
        assert!(check(input(&["customer.exploded"]), None, Policy::default()).is_err());
        assert!(check(input(&["webhook.test"]), None, Policy::default()).is_err());
    }

    #[test]
    fn secrets_are_standard_webhooks_secrets() {
        let secret = new_secret();
        let encoded = secret.strip_prefix("whsec_").expect("prefix");
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        assert_eq!(bytes.len(), 32);
    }
}
