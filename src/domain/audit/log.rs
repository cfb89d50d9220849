//! The audit log page: filtering, paging, export and the before/after diff.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use serde_json::Value;

use crate::db::schema::{audit_events, customers, team_members};
use crate::error::{Error, FieldErrors};

/// One row of `audit_events`, as the log shows it.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct LogEvent {
    pub id: i64,
    pub program_id: Option<i64>,
    pub actor_member_id: Option<i64>,
    pub actor_token_id: Option<i64>,
    pub actor_label: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: Option<String>,
    pub customer_id: Option<i64>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub address: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An event with the public key of its customer (when it concerns one).
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub event: LogEvent,
    pub customer_key: Option<String>,
    /// The customer's name, for people ("Linus Allen", or their email or key).
    pub customer_name: Option<String>,
    /// The acting team member's name, when a member acted.
    pub actor_name: Option<String>,
}

impl LogEntry {
    /// The action in words: "Balance credited".
    pub fn action_label(&self) -> String {
        super::timeline::action_label(&self.event.action)
    }

    /// What the event is about: "customer Linus Allen", "reward #12", "team member".
    pub fn subject(&self) -> String {
        let kind = self.event.subject_type.replace('_', " ");
        match (&self.customer_name, self.event.subject_type.as_str()) {
            (Some(name), "customer") => format!("customer {name}"),
            _ => match &self.event.subject_id {
                Some(id) if self.event.subject_type == "transaction" => format!("{kind} {id}"),
                Some(id) => format!("{kind} #{id}"),
                None => kind,
            },
        }
    }

    pub fn diff(&self) -> Vec<LogDiffRow> {
        log_diff(self.event.before.as_ref(), self.event.after.as_ref())
    }
}

/// Which events to show. Built by [`LogFilter::parse`] from the filter form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Part of the actor label (an email, a token name, `system`), case-insensitive.
    pub actor: Option<String>,
    /// Events by this team member.
    pub member_id: Option<i64>,
    /// An exact action (`member.disable`), or every action under a prefix ending in a
    /// dot (`customer.`).
    pub action: Option<String>,
    /// Events about the customer with this key (in the current program).
    pub customer_key: Option<String>,
    /// First and last day, inclusive, in UTC.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

fn parse_day(fields: &mut FieldErrors, field: &str, value: &str) -> Option<NaiveDate> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Ok(day) => Some(day),
        Err(_) => {
            fields
                .entry(field.into())
                .or_default()
                .push("Enter a date as YYYY-MM-DD.".into());
            None
        }
    }
}

impl LogFilter {
    pub fn parse(
        actor: &str,
        member: &str,
        action: &str,
        customer_key: &str,
        from: &str,
        to: &str,
    ) -> Result<LogFilter, Error> {
        let mut fields = FieldErrors::new();
        let member_id = match member.trim() {
            "" => None,
            value => match value.parse::<i64>() {
                Ok(id) => Some(id),
                Err(_) => {
                    fields
                        .entry("member".into())
                        .or_default()
                        .push("Choose a team member from the list.".into());
                    None
                }
            },
        };
        let from = parse_day(&mut fields, "from", from);
        let to = parse_day(&mut fields, "to", to);
        if let (Some(from), Some(to)) = (from, to) {
            if to < from {
                fields
                    .entry("to".into())
                    .or_default()
                    .push("The end date is before the start date.".into());
            }
        }
        let filter = LogFilter {
            actor: non_empty(actor),
            member_id,
            action: non_empty(action),
            customer_key: non_empty(customer_key),
            from,
            to,
        };
        for (field, value) in [
            ("actor", &filter.actor),
            ("action", &filter.action),
            ("customer", &filter.customer_key),
        ] {
            if value.as_ref().is_some_and(|value| value.chars().count() > 255) {
                fields
                    .entry(field.into())
                    .or_default()
                    .push("Use at most 255 characters.".into());
            } else if value
                .as_ref()
                .is_some_and(|value| value.chars().any(char::is_control))
            {
                // PostgreSQL refuses NUL in text; no stored value has control characters.
                fields
                    .entry(field.into())
                    .or_default()
                    .push("Remove the control characters.".into());
            }
        }
        if fields.is_empty() {
            Ok(filter)
        } else {
            Err(Error::invalid_fields(fields))
        }
    }
}

/// `%`, `_` and `\` match themselves in a LIKE pattern built from user input.
fn like_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

/// Where an event is shown: a program's events in that program, the program-less ones
/// (sign-ins, team changes) in every program. Each scope has an index in log order
/// (`audit_events_program_idx`, `audit_events_global_idx`), and a view asks each for
/// its newest events and merges them: one query for both scopes (`program_id = $1 OR
/// program_id IS NULL`) could follow neither index, so PostgreSQL would read and sort
/// every event of the log on every view, and every signup writes one.
#[derive(Clone, Copy)]
enum Scope {
    Program(i64),
    Everywhere,
}

fn scopes(program_id: i64) -> [Scope; 2] {
    [Scope::Program(program_id), Scope::Everywhere]
}

/// The events of one scope, filtered. `customer_id` is the resolved
/// `filter.customer_key`.
fn filtered(
    scope: Scope,
    filter: &LogFilter,
    customer_id: Option<i64>,
) -> audit_events::BoxedQuery<'static, Pg> {
    let mut query = match scope {
        Scope::Program(program_id) => audit_events::table
            .filter(audit_events::program_id.eq(program_id))
            .into_boxed(),
        Scope::Everywhere => audit_events::table
            .filter(audit_events::program_id.is_null())
            .into_boxed(),
    };
    if let Some(actor) = &filter.actor {
        query = query.filter(audit_events::actor_label.ilike(format!("%{}%", like_escape(actor))));
    }
    if let Some(member_id) = filter.member_id {
        query = query.filter(audit_events::actor_member_id.eq(member_id));
    }
    if let Some(action) = &filter.action {
        query = if action.ends_with('.') {
            query.filter(audit_events::action.like(format!("{}%", like_escape(action))))
        } else {
            query.filter(audit_events::action.eq(action.clone()))
        };
    }
    if let Some(customer_id) = customer_id {
        query = query.filter(audit_events::customer_id.eq(customer_id));
    }
    if let Some(from) = filter.from {
        query = query.filter(audit_events::created_at.ge(day_start(from)));
    }
    if let Some(to) = filter.to {
        query = query.filter(audit_events::created_at.lt(day_start(to + Duration::days(1))));
    }
    query
}

/// The first `depth` events of the log (both scopes), as (time, id), newest first.
fn newest_keys(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &LogFilter,
    customer_id: Option<i64>,
    depth: i64,
) -> Result<Vec<(DateTime<Utc>, i64)>, Error> {
    let mut keys = Vec::new();
    for scope in scopes(program_id) {
        keys.extend(
            filtered(scope, filter, customer_id)
                .order((audit_events::created_at.desc(), audit_events::id.desc()))
                .select((audit_events::created_at, audit_events::id))
                .limit(depth)
                .load::<(DateTime<Utc>, i64)>(conn)?,
        );
    }
    keys.sort_by_key(|key| Reverse(*key)); // the log's order: newest first
    keys.truncate(usize::try_from(depth).unwrap_or(usize::MAX));
    Ok(keys)
}

/// The customer a filter names, in this program. `Ok(None)`: no filter by customer;
/// `Err(())`: no such customer here, so nothing matches.
fn resolve_customer(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &LogFilter,
) -> Result<Result<Option<i64>, ()>, Error> {
    let Some(key) = &filter.customer_key else {
        return Ok(Ok(None));
    };
    let found: Option<i64> = customers::table
        .filter(customers::program_id.eq(program_id))
        .filter(customers::key.eq(key))
        .select(customers::id)
        .first(conn)
        .optional()?;
    Ok(found.map(Some).ok_or(()))
}

fn with_customer_keys(conn: &mut PgConnection, events: Vec<LogEvent>) -> Result<Vec<LogEntry>, Error> {
    let mut ids: Vec<i64> = events.iter().filter_map(|event| event.customer_id).collect();
    ids.sort_unstable();
    ids.dedup();
    type NameColumns = (i64, String, Option<String>, Option<String>, Option<String>);
    let named: HashMap<i64, (String, String)> = if ids.is_empty() {
        HashMap::new()
    } else {
        customers::table
            .filter(customers::id.eq_any(ids))
            .select((
                customers::id,
                customers::key,
                customers::name,
                customers::surname,
                customers::email,
            ))
            .load::<NameColumns>(conn)?
            .into_iter()
            .map(|(id, key, name, surname, email)| {
                let shown = crate::domain::customers::display_name_of(&name, &surname, &email, &key);
                (id, (key, shown))
            })
            .collect()
    };
    let mut member_ids: Vec<i64> = events.iter().filter_map(|event| event.actor_member_id).collect();
    member_ids.sort_unstable();
    member_ids.dedup();
    let members: HashMap<i64, String> = if member_ids.is_empty() {
        HashMap::new()
    } else {
        team_members::table
            .filter(team_members::id.eq_any(member_ids))
            .select((team_members::id, team_members::name))
            .load::<(i64, String)>(conn)?
            .into_iter()
            .collect()
    };
    Ok(events
        .into_iter()
        .map(|event| {
            let customer = event.customer_id.and_then(|id| named.get(&id));
            LogEntry {
                customer_key: customer.map(|(key, _)| key.clone()),
                customer_name: customer.map(|(_, name)| name.clone()),
                actor_name: event.actor_member_id.and_then(|id| members.get(&id).cloned()),
                event,
            }
        })
        .collect())
}

/// The log is counted exactly up to this many events; a longer one says "more than".
/// (Counting every event on every view costs as much as reading them all.)
pub const LOG_COUNT_LIMIT: i64 = 1000;

/// One page of the log, newest first.
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    /// Exact when `total_is_exact`, else [`LOG_COUNT_LIMIT`] ("more than").
    pub total: i64,
    pub total_is_exact: bool,
    /// More events follow this page.
    pub has_next: bool,
    /// The customer key in the filter names no customer of this program.
    pub unknown_customer: bool,
}

pub fn log_page(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &LogFilter,
    page: i64,
    per_page: i64,
) -> Result<LogPage, Error> {
    let customer_id = match resolve_customer(conn, program_id, filter)? {
        Ok(customer_id) => customer_id,
        Err(()) => {
            return Ok(LogPage {
                entries: Vec::new(),
                total: 0,
                total_is_exact: true,
                has_next: false,
                unknown_customer: true,
            })
        }
    };
    let mut counted = 0;
    for scope in scopes(program_id) {
        counted += filtered(scope, filter, customer_id)
            .select(audit_events::id)
            .limit(LOG_COUNT_LIMIT + 1)
            .load::<i64>(conn)?
            .len() as i64;
    }
    let total_is_exact = counted <= LOG_COUNT_LIMIT;
    // Deep pages read every event before them, as OFFSET would; the keys are narrow,
    // and only the page's own events are read whole.
    let skipped = page.saturating_sub(1).saturating_mul(per_page);
    let depth = skipped.saturating_add(per_page).saturating_add(1);
    let keys = if total_is_exact && skipped >= counted {
        Vec::new() // past the end: nothing to read
    } else {
        newest_keys(conn, program_id, filter, customer_id, depth)?
    };
    let has_next = keys.len() as i64 > skipped + per_page;
    let ids: Vec<i64> = keys
        .iter()
        .skip(usize::try_from(skipped).unwrap_or(usize::MAX))
        .take(usize::try_from(per_page).unwrap_or(0))
        .map(|(_, id)| *id)
        .collect();
    let mut events: Vec<LogEvent> = if ids.is_empty() {
        Vec::new()
    } else {
        audit_events::table
            .filter(audit_events::id.eq_any(&ids))
            .select(LogEvent::as_select())
            .load(conn)?
    };
    events.sort_by_key(|event| Reverse((event.created_at, event.id)));
    Ok(LogPage {
        entries: with_customer_keys(conn, events)?,
        total: if total_is_exact { counted } else { LOG_COUNT_LIMIT },
        total_is_exact,
        has_next,
        unknown_customer: false,
    })
}

/// Where an export batch continues: after this event in the log's order.
pub type LogCursor = (DateTime<Utc>, i64);

/// The next `limit` events for an export, newest first, after `cursor`. Keyset paging, so
/// a long export neither slows down nor skips rows as new events arrive.
pub fn log_export_batch(
    conn: &mut PgConnection,
    program_id: i64,
    filter: &LogFilter,
    cursor: Option<LogCursor>,
    limit: i64,
) -> Result<Vec<LogEntry>, Error> {
    let customer_id = match resolve_customer(conn, program_id, filter)? {
        Ok(customer_id) => customer_id,
        Err(()) => return Ok(Vec::new()),
    };
    let mut events: Vec<LogEvent> = Vec::new();
    for scope in scopes(program_id) {
        let mut query = filtered(scope, filter, customer_id);
        if let Some((at, id)) = cursor {
            query = query.filter(
                audit_events::created_at
                    .lt(at)
                    .or(audit_events::created_at.eq(at).and(audit_events::id.lt(id))),
            );
        }
        events.extend(
            query
                .order((audit_events::created_at.desc(), audit_events::id.desc()))
                .limit(limit)
                .select(LogEvent::as_select())
                .load::<LogEvent>(conn)?,
        );
    }
    events.sort_by_key(|event| Reverse((event.created_at, event.id)));
    events.truncate(usize::try_from(limit).unwrap_or(0));
    with_customer_keys(conn, events)
}

/// One field of a before/after comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogDiffRow {
    pub field: String,
    /// `None`: the field was absent on that side.
    pub before: Option<String>,
    pub after: Option<String>,
}

impl LogDiffRow {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// Flattens nested objects into dotted paths (`metadata.date_of_birth`); other values are
/// shown as text (strings without quotes, everything else as compact JSON).
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, out);
            }
        }
        Value::String(text) => {
            out.insert(field_name(prefix), text.clone());
        }
        other => {
            out.insert(field_name(prefix), other.to_string());
        }
    }
}

fn field_name(path: &str) -> String {
    if path.is_empty() {
        "value".to_string()
    } else {
        path.to_string()
    }
}

/// The before/after values of an event as rows of a table, one per field, in field order.
pub fn log_diff(before: Option<&Value>, after: Option<&Value>) -> Vec<LogDiffRow> {
    let mut old = BTreeMap::new();
    let mut new = BTreeMap::new();
    if let Some(before) = before {
        flatten("", before, &mut old);
    }
    if let Some(after) = after {
        flatten("", after, &mut new);
    }
    let mut fields: Vec<&String> = old.keys().chain(new.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .map(|field| LogDiffRow {
            field: field.clone(),
            before: old.get(field).cloned(),
            after: new.get(field).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_diff_lists_every_field_once() {
        let rows = log_diff(
            Some(&json!({"name": "Ada", "metadata": {"date_of_birth": "1990-01-01"}, "approved": true})),
            Some(&json!({"name": "Ada L.", "metadata": {"date_of_birth": "1990-01-01"}, "email": "a@b.c"})),
        );
        let fields: Vec<&str> = rows.iter().map(|row| row.field.as_str()).collect();
        assert_eq!(fields, ["approved", "email", "metadata.date_of_birth", "name"]);
        assert_eq!(rows[0].before.as_deref(), Some("true"));
        assert_eq!(rows[0].after, None);
        assert!(rows[3].changed());
        assert!(!rows[2].changed());
        assert_eq!(rows[3].after.as_deref(), Some("Ada L."));
    }

    #[test]
    fn filters_are_checked_field_by_field() {
        let error = LogFilter::parse("", "x", "", "", "2026-13-01", "").unwrap_err();
        let fields = error.field_errors().unwrap();
        assert!(fields.contains_key("member"));
        assert!(fields.contains_key("from"));
        let error = LogFilter::parse("", "", "", "", "2026-02-02", "2026-02-01").unwrap_err();
        assert!(error.field_errors().unwrap().contains_key("to"));
        let filter = LogFilter::parse(" ada ", "3", "customer.", "", "", "").unwrap();
        assert_eq!(filter.actor.as_deref(), Some("ada"));
        assert_eq!(filter.member_id, Some(3));
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
