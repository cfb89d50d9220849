//! Rows written straight into the database, for states the pages cannot make quickly (old
//! dates, other programs, long logs), and readers of the figures and lists the pages show.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use diesel::prelude::*;
use referdesk::db::schema::{audit_events, customers, programs, sessions, team_members};

use crate::helpers::TestApp;

pub fn insert_program(app: &TestApp, slug: &str) -> i64 {
    diesel::insert_into(programs::table)
        .values((
            programs::slug.eq(slug),
            programs::name.eq(format!("Program {slug}")),
            programs::referral_base_url.eq("https://other.example.com/"),
        ))
        .returning(programs::id)
        .get_result(&mut app.conn())
        .unwrap()
}

pub struct Seed<'a> {
    pub key: &'a str,
    pub referrer: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub deleted: bool,
    pub approved: bool,
}

pub fn seed<'a>(key: &'a str, created_at: DateTime<Utc>) -> Seed<'a> {
    Seed {
        key,
        referrer: None,
        created_at,
        deleted: false,
        approved: true,
    }
}

pub fn insert_customer(app: &TestApp, program_id: i64, seed: Seed<'_>) -> i64 {
    diesel::insert_into(customers::table)
        .values((
            customers::program_id.eq(program_id),
            customers::external_id.eq(format!("ext-{}", seed.key)),
            customers::key.eq(seed.key),
            customers::email.eq(format!("{}@example.com", seed.key)),
            customers::name.eq(format!("Name {}", seed.key)),
            customers::status.eq(if seed.deleted { "deleted" } else { "active" }),
            customers::deleted_at.eq(seed.deleted.then(Utc::now)),
            customers::approved.eq(seed.approved),
            customers::referrer_id.eq(seed.referrer),
            customers::created_at.eq(seed.created_at),
        ))
        .returning(customers::id)
        .get_result(&mut app.conn())
        .unwrap()
}

/// Sets every `referrals_count` from the rows, as the customers code keeps it.
pub fn recount_referrals(app: &TestApp) {
    diesel::sql_query(
        "UPDATE customers c SET referrals_count = \
         (SELECT count(*) FROM customers r WHERE r.referrer_id = c.id AND r.status = 'active')",
    )
    .execute(&mut app.conn())
    .unwrap();
}

pub struct EventSeed<'a> {
    pub program_id: Option<i64>,
    pub member_id: Option<i64>,
    pub label: &'a str,
    pub action: &'a str,
    pub customer_id: Option<i64>,
    pub at: DateTime<Utc>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

pub fn insert_event(app: &TestApp, event: EventSeed<'_>) -> i64 {
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::program_id.eq(event.program_id),
            audit_events::actor_member_id.eq(event.member_id),
            audit_events::actor_label.eq(event.label),
            audit_events::action.eq(event.action),
            audit_events::subject_type.eq("customer"),
            audit_events::customer_id.eq(event.customer_id),
            audit_events::before.eq(event.before),
            audit_events::after.eq(event.after),
            audit_events::address.eq("203.0.113.9"),
            audit_events::created_at.eq(event.at),
        ))
        .returning(audit_events::id)
        .get_result(&mut app.conn())
        .unwrap()
}

pub fn event<'a>(
    program_id: Option<i64>,
    member_id: Option<i64>,
    label: &'a str,
    action: &'a str,
    customer_id: Option<i64>,
    at: DateTime<Utc>,
) -> EventSeed<'a> {
    EventSeed {
        program_id,
        member_id,
        label,
        action,
        customer_id,
        at,
        before: None,
        after: None,
    }
}

pub fn day(y: i32, m: u32, d: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, hour, 0, 0).unwrap()
}

/// The number in the `data-value` attribute that follows `marker`.
pub fn value_after(body: &str, marker: &str) -> i64 {
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not on the page"));
    let rest = &body[at..];
    let start = rest.find("data-value=\"").unwrap() + "data-value=\"".len();
    let end = rest[start..].find('"').unwrap() + start;
    rest[start..end].parse().unwrap()
}

/// Every `data-id` on the audit page, i.e. the ids of the events it lists.
pub fn listed_event_ids(body: &str) -> BTreeSet<i64> {
    listed_event_order(body).into_iter().collect()
}

/// Event ids in the order the page lists them.
pub fn listed_event_order(body: &str) -> Vec<i64> {
    body.match_indices("class=\"audit-event\" data-id=\"")
        .map(|(at, marker)| {
            let start = at + marker.len();
            let end = body[start..].find('"').unwrap() + start;
            body[start..end].parse().unwrap()
        })
        .collect()
}

pub fn session_count(app: &TestApp, member_id: i64) -> i64 {
    sessions::table
        .filter(sessions::member_id.eq(member_id))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

pub fn count_events(app: &TestApp, action: &str, subject: i64) -> i64 {
    audit_events::table
        .filter(audit_events::action.eq(action))
        .filter(audit_events::subject_id.eq(subject.to_string()))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

pub fn member_role(app: &TestApp, id: i64) -> String {
    team_members::table
        .find(id)
        .select(team_members::role)
        .first(&mut app.conn())
        .unwrap()
}

fn execute(app: &TestApp, sql: &str) {
    diesel::sql_query(sql)
        .execute(&mut app.conn())
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// A webhook ("Billing", key `hook-tables`) whose delivery of customer `ada`'s creation
/// failed once; returns its delivery log's address.
pub fn failed_delivery(app: &TestApp) -> String {
    execute(
        app,
        "INSERT INTO webhook_subscriptions (program_id, key, name, url, all_events, secret) \
         SELECT id, 'hook-tables', 'Billing', 'https://hooks.example.com/in', true, 'whsec_tables' FROM programs WHERE slug = 'default'",
    );
    execute(
        app,
        "INSERT INTO webhook_events (id, program_id, event, customer_id, data) \
         SELECT '6f1c1f9e-0000-4000-8000-000000000001', program_id, 'customer.created', id, '{}' FROM customers WHERE key = 'ada'",
    );
    execute(
        app,
        "INSERT INTO webhook_deliveries (event_id, subscription_id, event, customer_id, status, attempts, next_attempt_at) \
         SELECT e.id, s.id, e.event, e.customer_id, 'failed', 1, now() FROM webhook_events e, webhook_subscriptions s",
    );
    execute(
        app,
        "INSERT INTO webhook_attempts (delivery_id, subscription_id, event_id, event, customer_id, outcome, status_code, duration_ms, response) \
         SELECT d.id, d.subscription_id, d.event_id, d.event, d.customer_id, 'failure', 500, 12, 'busy' FROM webhook_deliveries d",
    );
    "/webhooks/hook-tables/deliveries".to_string()
}

/// A finished bulk approval of the default program that skipped one row; returns its id.
pub fn finished_job(app: &TestApp) -> i64 {
    execute(
        app,
        "INSERT INTO jobs (program_id, kind, status, actor_label, total, done, skipped, started_at, finished_at) \
         SELECT id, 'customers.approve', 'done', 'admin', 2, 1, 1, now(), now() FROM programs WHERE slug = 'default'",
    );
    let job: i64 = referdesk::db::schema::jobs::table
        .select(referdesk::db::schema::jobs::id)
        .order(referdesk::db::schema::jobs::id.desc())
        .first(&mut app.conn())
        .unwrap();
    execute(
        app,
        &format!(
            "INSERT INTO job_skipped_rows (job_id, line, customer_key, email, reason) \
             VALUES ({job}, 2, 'zoe', 'zoe@example.com', 'Already approved.')"
        ),
    );
    job
}

/// A CSV file uploaded through the dashboard by `app.browser` (signed in as an admin),
/// waiting for its columns to be chosen; returns its page's address.
pub async fn uploaded_import(app: &TestApp) -> String {
    let boundary = "----referdesk-fixture-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"people.csv\"\r\nContent-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(b"E-mail;First name\nlin@example.com;Lin\n");
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let csrf = app.browser.csrf().await;
    let uploaded = app
        .browser
        .client
        .post(app.browser.url(&format!("/customers/import?csrf_token={csrf}")))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 303);
    crate::helpers::location(&uploaded)
}
