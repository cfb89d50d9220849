//! The admin area: dashboard, team, profile, set-password links, programs, audit log.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{
    audit_events, balance_transactions, customers, invites, programs, sessions, team_members,
};
use referdesk::domain::team::{self, Role};
use referdesk::domain::Actor;

use crate::helpers::{location, Browser, TestApp, PASSWORD};
use crate::integration_test;

// ---- seeding and page-reading helpers -----------------------------------------------------

fn default_program(app: &TestApp) -> i64 {
    programs::table
        .filter(programs::slug.eq("default"))
        .select(programs::id)
        .first(&mut app.conn())
        .unwrap()
}

fn insert_program(app: &TestApp, slug: &str) -> i64 {
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

struct Seed<'a> {
    key: &'a str,
    referrer: Option<i64>,
    created_at: DateTime<Utc>,
    deleted: bool,
    approved: bool,
}

fn seed<'a>(key: &'a str, created_at: DateTime<Utc>) -> Seed<'a> {
    Seed {
        key,
        referrer: None,
        created_at,
        deleted: false,
        approved: true,
    }
}

fn insert_customer(app: &TestApp, program_id: i64, seed: Seed<'_>) -> i64 {
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
fn recount_referrals(app: &TestApp) {
    diesel::sql_query(
        "UPDATE customers c SET referrals_count = \
         (SELECT count(*) FROM customers r WHERE r.referrer_id = c.id AND r.status = 'active')",
    )
    .execute(&mut app.conn())
    .unwrap();
}

fn insert_transaction(
    app: &TestApp,
    program_id: i64,
    customer_id: i64,
    kind: &str,
    amount: &str,
    units: &str,
) {
    diesel::insert_into(balance_transactions::table)
        .values((
            balance_transactions::program_id.eq(program_id),
            balance_transactions::customer_id.eq(customer_id),
            balance_transactions::kind.eq(kind),
            balance_transactions::amount.eq(BigDecimal::from_str(amount).unwrap()),
            balance_transactions::amount_units.eq(units),
            balance_transactions::is_currency
                .eq(units.len() == 3 && units.chars().all(|c| c.is_ascii_uppercase())),
        ))
        .execute(&mut app.conn())
        .unwrap();
}

fn insert_invite(app: &TestApp, program_id: i64, email: &str, status: &str) {
    diesel::insert_into(invites::table)
        .values((
            invites::program_id.eq(program_id),
            invites::email.eq(email),
            invites::status.eq(status),
        ))
        .execute(&mut app.conn())
        .unwrap();
}

struct EventSeed<'a> {
    program_id: Option<i64>,
    member_id: Option<i64>,
    label: &'a str,
    action: &'a str,
    customer_id: Option<i64>,
    at: DateTime<Utc>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
}

fn insert_event(app: &TestApp, event: EventSeed<'_>) -> i64 {
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

fn event<'a>(
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

fn day(y: i32, m: u32, d: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, hour, 0, 0).unwrap()
}

/// The number in the `data-value` attribute that follows `marker`.
fn value_after(body: &str, marker: &str) -> i64 {
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not on the page"));
    let rest = &body[at..];
    let start = rest.find("data-value=\"").unwrap() + "data-value=\"".len();
    let end = rest[start..].find('"').unwrap() + start;
    rest[start..end].parse().unwrap()
}

/// Every `data-id` on the audit page, i.e. the ids of the events it lists.
fn listed_event_ids(body: &str) -> BTreeSet<i64> {
    listed_event_order(body).into_iter().collect()
}

fn member_role(app: &TestApp, id: i64) -> String {
    team_members::table
        .find(id)
        .select(team_members::role)
        .first(&mut app.conn())
        .unwrap()
}

fn session_count(app: &TestApp, member_id: i64) -> i64 {
    sessions::table
        .filter(sessions::member_id.eq(member_id))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

fn count_events(app: &TestApp, action: &str, subject: i64) -> i64 {
    audit_events::table
        .filter(audit_events::action.eq(action))
        .filter(audit_events::subject_id.eq(subject.to_string()))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

/// The set-password link shown once on the team page.
fn issued_link(body: &str) -> Option<String> {
    let at = body.find("/set-password?token=")?;
    let end = body[at..].find(['<', '"', ' ']).unwrap() + at;
    Some(body[at..end].to_string())
}

async fn signed_in_browser(app: &TestApp, email: &str, role: Role) -> (i64, Browser) {
    let id = app.create_member(email, role, PASSWORD);
    let browser = app.new_browser();
    assert_eq!(browser.login(email, PASSWORD).await.status(), 303);
    (id, browser)
}

// ---- access ------------------------------------------------------------------------------

#[apply(integration_test!)]
async fn admin_pages_render_for_admins_and_are_refused_to_others() {
    let app = TestApp::spawn().await;
    let admin_id = app.login_as(Role::Admin).await;
    let program_id = default_program(&app);
    let (support_id, support) = signed_in_browser(&app, "support@example.com", Role::Support).await;
    let (_, viewer) = signed_in_browser(&app, "viewer@example.com", Role::Viewer).await;

    let pages = [
        ("/team".to_string(), "Team"),
        ("/team/new".to_string(), "Add a team member"),
        (format!("/team/{support_id}/password"), "Reset the password"),
        ("/programs".to_string(), "Programs"),
        ("/programs/new".to_string(), "New program"),
        (format!("/programs/{program_id}/edit"), "Edit Default program"),
        ("/audit".to_string(), "Audit log"),
    ];
    for (path, heading) in &pages {
        let (status, body) = app.browser.get_html(path).await;
        assert_eq!(status, 200, "{path} for an admin");
        assert!(body.contains(heading), "{path} shows {heading}");
        for (role, browser) in [("support", &support), ("viewer", &viewer)] {
            let (status, body) = browser.get_html(path).await;
            assert_eq!(status, 403, "{path} for {role}");
            assert!(body.contains("Your role does not allow this."));
        }
    }
    let export = app.get("/audit/export").await;
    assert_eq!(export.status(), 200);
    assert!(export.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(support.get("/audit/export").await.status(), 403);

    // The admin sees the admin links; the others do not.
    let (_, body) = app.browser.get_html("/").await;
    assert!(body.contains("href=\"/programs\"") && body.contains("href=\"/audit\""));
    let (status, body) = viewer.get_html("/").await;
    assert_eq!(status, 200);
    assert!(!body.contains("href=\"/audit\""));
    assert!(body.contains("href=\"/profile\""));

    // Actions are refused on the server too, and change nothing.
    for (path, fields) in [
        (format!("/team/{admin_id}/role"), vec![("role", "viewer")]),
        (format!("/team/{admin_id}/disable"), vec![]),
        (
            "/team".to_string(),
            vec![("email", "x@example.com"), ("name", "X"), ("role", "admin")],
        ),
        (
            "/programs".to_string(),
            vec![
                ("name", "X"),
                ("slug", "x"),
                ("referral_base_url", "https://x.example/"),
            ],
        ),
        (format!("/team/{admin_id}/password"), vec![("mode", "link")]),
    ] {
        let response = support.post_form(&path, &fields).await;
        assert_eq!(response.status(), 403, "POST {path} by support");
    }
    assert_eq!(member_role(&app, admin_id), "admin");
    let members: i64 = team_members::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(members, 3);
    let program_count: i64 = programs::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(program_count, 1);

    // Everybody has a profile.
    let (status, body) = viewer.get_html("/profile").await;
    assert_eq!(status, 200);
    assert!(body.contains("viewer@example.com"));
}

// ---- team --------------------------------------------------------------------------------

#[apply(integration_test!)]
async fn disabling_a_member_signs_them_out_at_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let (support_id, support) = signed_in_browser(&app, "sam@example.com", Role::Support).await;
    assert_eq!(support.get("/").await.status(), 200);
    assert_eq!(session_count(&app, support_id), 1);

    app.browser.get_html("/team").await;
    let response = app.post_form(&format!("/team/{support_id}/disable"), &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/team");
    let (_, body) = app.browser.get_html("/team").await;
    assert!(body.contains("sam@example.com is disabled and has been signed out."));

    // Their very next request is signed out; the server-side sessions are gone.
    let response = support.get("/").await;
    assert_eq!(response.status(), 303);
    assert!(location(&response).starts_with("/login"));
    assert_eq!(session_count(&app, support_id), 0);
    assert_eq!(support.login("sam@example.com", PASSWORD).await.status(), 401);
    assert_eq!(count_events(&app, "member.disable", support_id), 1);

    // Enabled again, they can sign in again.
    let response = app.post_form(&format!("/team/{support_id}/enable"), &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(support.login("sam@example.com", PASSWORD).await.status(), 303);
    assert_eq!(support.get("/").await.status(), 200);
    assert_eq!(count_events(&app, "member.enable", support_id), 1);
}

#[apply(integration_test!)]
async fn the_last_admin_cannot_be_demoted_or_disabled() {
    let app = TestApp::spawn().await;
    let admin_id = app.login_as(Role::Admin).await;
    app.browser.get_html("/team").await;

    let response = app
        .post_form(&format!("/team/{admin_id}/role"), &[("role", "support")])
        .await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("This is the last enabled admin."),
        "the rule is explained"
    );
    assert_eq!(member_role(&app, admin_id), "admin", "nothing changed");
    assert_eq!(count_events(&app, "member.role_change", admin_id), 0);

    let response = app.post_form(&format!("/team/{admin_id}/disable"), &[]).await;
    assert_eq!(response.status(), 422);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("You cannot disable your own account."));

    // The domain refuses it whoever asks, in one locked transaction.
    let error = team::set_disabled(&mut app.conn(), &Actor::system(), admin_id, true).unwrap_err();
    assert!(error.to_string().contains("last enabled admin"));
    let error = team::change_role(&mut app.conn(), &Actor::system(), admin_id, Role::Viewer).unwrap_err();
    assert!(error.to_string().contains("last enabled admin"));
    let disabled: bool = team_members::table
        .find(admin_id)
        .select(team_members::disabled)
        .first(&mut app.conn())
        .unwrap();
    assert!(!disabled);

    // A disabled admin does not count.
    let other = app.create_member("other-admin@example.com", Role::Admin, PASSWORD);
    team::set_disabled(&mut app.conn(), &Actor::system(), other, true).unwrap();
    let response = app
        .post_form(&format!("/team/{admin_id}/role"), &[("role", "viewer")])
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(member_role(&app, admin_id), "admin");

    // With a second enabled admin, demoting works.
    app.post_form(&format!("/team/{other}/enable"), &[]).await;
    let response = app
        .post_form(&format!("/team/{admin_id}/role"), &[("role", "support")])
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(member_role(&app, admin_id), "support");
    assert_eq!(count_events(&app, "member.role_change", admin_id), 1);
    // Now the other admin is the last one.
    let error = team::change_role(&mut app.conn(), &Actor::system(), other, Role::Support).unwrap_err();
    assert!(error.to_string().contains("last enabled admin"));
}

#[apply(integration_test!)]
async fn members_are_added_with_a_password_or_a_one_time_link() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    app.browser.get_html("/team/new").await;

    // Bad input: messages next to the fields, typed values kept, nothing created.
    let response = app
        .post_form(
            "/team",
            &[
                ("email", "not-an-email"),
                ("name", ""),
                ("role", "boss"),
                ("password_mode", "password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(body.contains("Enter a valid email address."));
    assert!(body.contains("Enter a name"));
    assert!(body.contains("Choose viewer, support or admin."));
    assert!(body.contains("value=\"not-an-email\""));
    let response = app
        .post_form(
            "/team",
            &[
                ("email", "pat@example.com"),
                ("name", "Pat"),
                ("role", "support"),
                ("password_mode", "password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Enter an initial password"));
    let members: i64 = team_members::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(members, 1);

    // With an initial password.
    let response = app
        .post_form(
            "/team",
            &[
                ("email", "pat@example.com"),
                ("name", "Pat"),
                ("role", "support"),
                ("password_mode", "password"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let (_, body) = app.browser.get_html("/team").await;
    assert!(body.contains("pat@example.com was added as support."));
    assert!(issued_link(&body).is_none());
    let pat = app.new_browser();
    assert_eq!(pat.login("pat@example.com", PASSWORD).await.status(), 303);

    // The same email again is refused.
    let response = app
        .post_form(
            "/team",
            &[
                ("email", "PAT@example.com"),
                ("name", "Pat"),
                ("role", "viewer"),
                ("password_mode", "link"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("already exists"));

    // Change of role, audited.
    let pat_id: i64 = team_members::table
        .filter(team_members::email.eq("pat@example.com"))
        .select(team_members::id)
        .first(&mut app.conn())
        .unwrap();
    let response = app
        .post_form(&format!("/team/{pat_id}/role"), &[("role", "viewer")])
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(member_role(&app, pat_id), "viewer");
    assert_eq!(count_events(&app, "member.role_change", pat_id), 1);
    let (_, body) = app.browser.get_html("/audit?action=member.role_change").await;
    assert!(body.contains("class=\"diff-before\">support<"));
    assert!(body.contains("class=\"diff-after\">viewer<"));
}

#[apply(integration_test!)]
async fn set_password_link_works_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    app.browser.get_html("/team/new").await;
    let response = app
        .post_form(
            "/team",
            &[
                ("email", "lin@example.com"),
                ("name", "Lin"),
                ("role", "viewer"),
                ("password_mode", "link"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);

    // Shown once, with a copy button.
    let (_, body) = app.browser.get_html("/team").await;
    let link = issued_link(&body).expect("the link is shown to the admin");
    assert!(body.contains("data-copy=\"http://127.0.0.1/set-password?token="));
    assert!(body.contains("no password yet"));
    let (_, again) = app.browser.get_html("/team").await;
    assert!(issued_link(&again).is_none(), "the link is shown only once");

    let lin = app.new_browser();
    let (status, body) = lin.get_html(&link).await;
    assert_eq!(status, 200);
    assert!(body.contains("lin@example.com"));
    let token = link.split("token=").nth(1).unwrap();

    // A refused password keeps the link usable.
    let response = lin
        .post_form(
            "/set-password",
            &[
                ("token", token),
                ("password", "short"),
                ("password_confirmation", "short"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Use at least 10 characters."));
    let response = lin
        .post_form(
            "/set-password",
            &[
                ("token", token),
                ("password", PASSWORD),
                ("password_confirmation", "another password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);

    let response = lin
        .post_form(
            "/set-password",
            &[
                ("token", token),
                ("password", PASSWORD),
                ("password_confirmation", PASSWORD),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/");
    let (status, body) = lin.get_html("/").await;
    assert_eq!(status, 200, "signed in after setting the password");
    assert!(body.contains("Your password is set"));

    // Used up: neither the page nor the form work again.
    let other = app.new_browser();
    let (status, body) = other.get_html(&link).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid, used or expired"));
    let response = other
        .post_form(
            "/set-password",
            &[
                ("token", token),
                ("password", "yet another password"),
                ("password_confirmation", "yet another password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        other
            .login("lin@example.com", "yet another password")
            .await
            .status(),
        401
    );
    assert_eq!(other.login("lin@example.com", PASSWORD).await.status(), 303);
    let (status, _) = other.get_html("/set-password?token=made-up").await;
    assert_eq!(status, 400);
}

#[apply(integration_test!)]
async fn admin_resets_a_password_and_their_sessions_end() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let (kim_id, kim) = signed_in_browser(&app, "kim@example.com", Role::Support).await;
    app.browser.get_html(&format!("/team/{kim_id}/password")).await;

    let response = app
        .post_form(
            &format!("/team/{kim_id}/password"),
            &[
                ("mode", "set"),
                ("password", "new password 123"),
                ("password_confirmation", "different 12345"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("The two passwords differ."));
    assert_eq!(kim.get("/").await.status(), 200, "nothing changed");

    let response = app
        .post_form(
            &format!("/team/{kim_id}/password"),
            &[
                ("mode", "set"),
                ("password", "new password 123"),
                ("password_confirmation", "new password 123"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(kim.get("/").await.status(), 303, "their session ended");
    assert_eq!(kim.login("kim@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        kim.login("kim@example.com", "new password 123").await.status(),
        303
    );

    // A new link replaces the previous one.
    app.post_form(&format!("/team/{kim_id}/password"), &[("mode", "link")])
        .await;
    let (_, body) = app.browser.get_html("/team").await;
    let first = issued_link(&body).unwrap();
    app.post_form(&format!("/team/{kim_id}/password"), &[("mode", "link")])
        .await;
    let (_, body) = app.browser.get_html("/team").await;
    let second = issued_link(&body).unwrap();
    assert_ne!(first, second);
    let visitor = app.new_browser();
    assert_eq!(visitor.get_html(&first).await.0, 400);
    assert_eq!(visitor.get_html(&second).await.0, 200);
    assert_eq!(count_events(&app, "member.password_link", kim_id), 2);
}

#[apply(integration_test!)]
async fn profile_password_change_needs_the_old_password_and_ends_other_sessions() {
    let app = TestApp::spawn().await;
    let (id, laptop) = signed_in_browser(&app, "vic@example.com", Role::Viewer).await;
    let phone = app.new_browser();
    assert_eq!(phone.login("vic@example.com", PASSWORD).await.status(), 303);
    assert_eq!(session_count(&app, id), 2);
    laptop.get_html("/profile").await;

    // Wrong current password: refused, nothing changes, the other session lives.
    let response = laptop
        .post_form(
            "/profile",
            &[
                ("name", "Vic"),
                ("current_password", "wrong password!"),
                ("new_password", "a brand new password"),
                ("password_confirmation", "a brand new password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(body.contains("Your current password is not correct."));
    assert!(body.contains("value=\"Vic\""), "typed values are kept");
    assert_eq!(phone.get("/").await.status(), 200);

    // Missing current password and a too-short one.
    let response = laptop
        .post_form(
            "/profile",
            &[
                ("name", "Vic"),
                ("new_password", "short"),
                ("password_confirmation", "short"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(body.contains("Enter your current password"));
    assert!(body.contains("Use at least 10 characters."));

    // The name alone needs no password.
    let response = laptop.post_form("/profile", &[("name", "Victoria")]).await;
    assert_eq!(response.status(), 303);
    let name: String = team_members::table
        .find(id)
        .select(team_members::name)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(name, "Victoria");
    assert_eq!(
        phone.get("/").await.status(),
        200,
        "a name change ends no session"
    );

    let cookie_before = laptop.cookies();
    let response = laptop
        .post_form(
            "/profile",
            &[
                ("name", "Victoria"),
                ("current_password", PASSWORD),
                ("new_password", "a brand new password"),
                ("password_confirmation", "a brand new password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let (status, body) = laptop.get_html("/profile").await;
    assert_eq!(status, 200, "this session stays signed in");
    assert_eq!(
        laptop.cookies(),
        cookie_before,
        "the very same session, not a new one"
    );
    assert!(body.contains("Your password was changed."));
    let response = phone.get("/").await;
    assert_eq!(response.status(), 303, "the other session ended");
    assert_eq!(session_count(&app, id), 1);
    let fresh = app.new_browser();
    assert_eq!(fresh.login("vic@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        fresh
            .login("vic@example.com", "a brand new password")
            .await
            .status(),
        303
    );
    assert_eq!(count_events(&app, "member.password_change", id), 1);
    assert_eq!(count_events(&app, "member.update", id), 1);
}

// ---- programs ----------------------------------------------------------------------------

#[apply(integration_test!)]
async fn programs_are_created_and_edited_with_per_field_messages() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    app.browser.get_html("/programs/new").await;

    let response = app
        .post_form(
            "/programs",
            &[
                ("name", ""),
                ("slug", "Not A Slug"),
                ("referral_base_url", "javascript:alert(1)"),
                ("link_param", "a b"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(body.contains("Enter a name"));
    assert!(body.contains("Use 1 to 63 lowercase letters"));
    assert!(body.contains("Enter a full address starting with https:// or http://."));
    assert!(body.contains("Use 1 to 64 letters, digits"));
    assert!(body.contains("value=\"Not A Slug\""), "typed values are kept");
    let count: i64 = programs::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(count, 1, "nothing created");

    let response = app
        .post_form(
            "/programs",
            &[
                ("name", "Spring shop"),
                ("slug", "spring"),
                ("referral_base_url", "https://spring.example.com/join"),
                ("link_param", "via"),
                ("require_approval", "on"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let (id, base, param, approval): (i64, String, String, bool) = programs::table
        .filter(programs::slug.eq("spring"))
        .select((
            programs::id,
            programs::referral_base_url,
            programs::link_param,
            programs::require_approval,
        ))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(
        (base.as_str(), param.as_str(), approval),
        ("https://spring.example.com/join", "via", true)
    );
    assert_eq!(count_events(&app, "program.create", id), 1);
    let (_, body) = app.browser.get_html("/programs").await;
    assert!(body.contains("Program Spring shop was created."));
    assert!(body.contains("https://spring.example.com/join?via=KEY"));
    // The switcher lists it.
    assert!(body.contains(&format!("<option value=\"{id}\"")));

    // A duplicate slug.
    let response = app
        .post_form(
            "/programs",
            &[
                ("name", "Copy"),
                ("slug", "default"),
                ("referral_base_url", "https://x.example.com/"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Another program already uses this slug."));

    // Edit: the form shows the values; a duplicate slug is refused; a good change is saved.
    let (status, body) = app.browser.get_html(&format!("/programs/{id}/edit")).await;
    assert_eq!(status, 200);
    assert!(body.contains("value=\"spring\""));
    assert!(body.contains("checked"));
    let response = app
        .post_form(
            &format!("/programs/{id}/edit"),
            &[
                ("name", "Spring shop"),
                ("slug", "default"),
                ("referral_base_url", "https://spring.example.com/join"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Another program already uses this slug."));
    let response = app
        .post_form(
            &format!("/programs/{id}/edit"),
            &[
                ("name", "Summer shop"),
                ("slug", "summer"),
                ("referral_base_url", "http://summer.example.com"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let (name, slug, base, param, approval): (String, String, String, String, bool) = programs::table
        .find(id)
        .select((
            programs::name,
            programs::slug,
            programs::referral_base_url,
            programs::link_param,
            programs::require_approval,
        ))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(name, "Summer shop");
    assert_eq!(slug, "summer");
    assert_eq!(base, "http://summer.example.com/");
    assert_eq!(param, "ref", "an empty link parameter means ref");
    assert!(!approval, "an unticked box turns approval off");
    let (before, after): (Option<serde_json::Value>, Option<serde_json::Value>) = audit_events::table
        .filter(audit_events::action.eq("program.update"))
        .select((audit_events::before, audit_events::after))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(before.unwrap()["slug"], "spring");
    assert_eq!(after.unwrap()["slug"], "summer");
    assert_eq!(app.get("/programs/999999/edit").await.status(), 404);
}

#[apply(integration_test!)]
async fn pages_only_show_the_current_program() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let program_a = default_program(&app);
    let program_b = insert_program(&app, "bee");
    let now = Utc::now();
    let a_referrer = insert_customer(&app, program_a, seed("alpha", now - Duration::days(5)));
    insert_customer(
        &app,
        program_a,
        Seed {
            referrer: Some(a_referrer),
            ..seed("alpha-friend", now)
        },
    );
    let b_referrer = insert_customer(&app, program_b, seed("bravo", now - Duration::days(5)));
    for key in ["bravo-1", "bravo-2"] {
        insert_customer(
            &app,
            program_b,
            Seed {
                referrer: Some(b_referrer),
                ..seed(key, now - Duration::days(1))
            },
        );
    }
    recount_referrals(&app);
    insert_event(
        &app,
        EventSeed {
            program_id: Some(program_b),
            member_id: None,
            label: "b-token",
            action: "customer.update",
            customer_id: Some(b_referrer),
            at: now,
            before: None,
            after: None,
        },
    );

    // The customer page of program B's customer is a 404 while A is current (that page
    // belongs to the customers area; without it the route is unknown, a 404 as well).
    assert_eq!(app.get("/customers/bravo").await.status(), 404);

    let (_, body) = app.browser.get_html("/").await;
    assert!(body.contains("data-key=\"alpha\""));
    assert!(!body.contains("bravo"), "no trace of program B on A's dashboard");
    assert_eq!(value_after(&body, "id=\"stat-customers\""), 2);
    assert_eq!(value_after(&body, "id=\"stat-referred\""), 1);
    let (status, body) = app.browser.get_html("/audit?customer=bravo").await;
    assert_eq!(status, 200);
    assert!(body.contains("No customer with the key"));
    assert!(listed_event_ids(&body).is_empty());
    let (_, body) = app.browser.get_html("/audit?action=customer.update").await;
    assert!(!body.contains("b-token"));

    // Switching makes B current.
    let response = app
        .post_form("/program", &[("program", &program_b.to_string()), ("next", "/")])
        .await;
    assert_eq!(response.status(), 303);
    let (_, body) = app.browser.get_html("/").await;
    assert!(body.contains("data-key=\"bravo\""));
    assert!(!body.contains("data-key=\"alpha\""));
    assert_eq!(value_after(&body, "id=\"stat-customers\""), 3);
    assert_eq!(value_after(&body, "id=\"stat-referred\""), 2);
    let (_, body) = app.browser.get_html("/audit?customer=bravo").await;
    assert_eq!(listed_event_ids(&body).len(), 1);
    assert!(body.contains("b-token"));
}

/// id, actor member, actor label, action, customer, created at.
type EventRow = (i64, Option<i64>, String, String, Option<i64>, DateTime<Utc>);
/// key, referrer, status, approved, created at, referrals count.
type CustomerRow = (String, Option<i64>, String, bool, DateTime<Utc>, i32);

// ---- audit log ---------------------------------------------------------------------------

#[apply(integration_test!)]
async fn audit_filters_return_exactly_the_matching_events() {
    let app = TestApp::spawn().await;
    let admin_id = app.login_as(Role::Admin).await;
    let other_id = app.create_member("mo@example.com", Role::Support, PASSWORD);
    let program_a = default_program(&app);
    let program_b = insert_program(&app, "bee");
    let long_ago = day(2026, 1, 1, 0);
    let c1 = insert_customer(&app, program_a, seed("cust-one", long_ago));
    let c2 = insert_customer(&app, program_a, seed("cust-two", long_ago));
    let cb = insert_customer(&app, program_b, seed("cust-b", long_ago));
    let admin_label: String = team_members::table
        .find(admin_id)
        .select(team_members::email)
        .first(&mut app.conn())
        .unwrap();

    let e1 = insert_event(
        &app,
        EventSeed {
            before: Some(serde_json::json!({"name": "Ada", "email": "ada@example.com"})),
            after: Some(serde_json::json!({"name": "Ada L.", "email": "ada@example.com"})),
            ..event(
                Some(program_a),
                Some(other_id),
                "mo@example.com",
                "customer.update",
                Some(c1),
                day(2026, 1, 10, 9),
            )
        },
    );
    let e2 = insert_event(
        &app,
        event(
            Some(program_a),
            Some(admin_id),
            &admin_label,
            "customer.delete",
            Some(c2),
            day(2026, 1, 15, 12),
        ),
    );
    let e3 = insert_event(
        &app,
        event(
            Some(program_a),
            None,
            "shop backend",
            "customer.create",
            Some(c1),
            day(2026, 2, 1, 8),
        ),
    );
    let e4 = insert_event(
        &app,
        event(
            Some(program_b),
            Some(other_id),
            "mo@example.com",
            "customer.update",
            Some(cb),
            day(2026, 1, 10, 9),
        ),
    );
    let e5 = insert_event(
        &app,
        event(
            None,
            None,
            "=evil@example.com",
            "auth.sign_in_failed",
            None,
            day(2026, 1, 12, 23),
        ),
    );
    let e6 = insert_event(
        &app,
        event(
            None,
            Some(admin_id),
            &admin_label,
            "member.disable",
            None,
            day(2026, 1, 20, 23),
        ),
    );

    // What each filter must return, computed from every row the log may show.
    let visible: Vec<EventRow> = audit_events::table
        .filter(
            audit_events::program_id
                .eq(program_a)
                .or(audit_events::program_id.is_null()),
        )
        .select((
            audit_events::id,
            audit_events::actor_member_id,
            audit_events::actor_label,
            audit_events::action,
            audit_events::customer_id,
            audit_events::created_at,
        ))
        .load(&mut app.conn())
        .unwrap();
    assert!(visible.iter().all(|row| row.0 != e4));
    let expect = |keep: &dyn Fn(&EventRow) -> bool| {
        visible
            .iter()
            .filter(|row| keep(row))
            .map(|row| row.0)
            .collect::<BTreeSet<i64>>()
    };
    let in_days = |at: &DateTime<Utc>, from: (i32, u32, u32), to: (i32, u32, u32)| {
        *at >= day(from.0, from.1, from.2, 0) && *at < day(to.0, to.1, to.2, 0) + Duration::days(1)
    };

    let cases: Vec<(String, BTreeSet<i64>)> = vec![
        (
            "actor=MO%40example".into(),
            expect(&|row| row.2.to_lowercase().contains("mo@example")),
        ),
        (
            format!("member={admin_id}"),
            expect(&|row| row.1 == Some(admin_id)),
        ),
        (
            "action=customer.update".into(),
            expect(&|row| row.3 == "customer.update"),
        ),
        (
            "action=customer.".into(),
            expect(&|row| row.3.starts_with("customer.")),
        ),
        ("customer=cust-one".into(), expect(&|row| row.4 == Some(c1))),
        (
            "from=2026-01-11&to=2026-01-20".into(),
            expect(&|row| in_days(&row.5, (2026, 1, 11), (2026, 1, 20))),
        ),
        (
            "action=customer.&from=2026-01-12".into(),
            expect(&|row| row.3.starts_with("customer.") && row.5 >= day(2026, 1, 12, 0)),
        ),
        (String::new(), expect(&|_| true)),
    ];
    // The expectations are what the seed says, not just whatever the rows happen to be.
    assert_eq!(cases[2].1, BTreeSet::from([e1]));
    assert_eq!(cases[3].1, BTreeSet::from([e1, e2, e3]));
    assert_eq!(cases[4].1, BTreeSet::from([e1, e3]));
    assert_eq!(cases[5].1, BTreeSet::from([e2, e5, e6]));
    assert_eq!(cases[6].1, BTreeSet::from([e2, e3]));
    for (query, expected) in &cases {
        let (status, body) = app.browser.get_html(&format!("/audit?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(&listed_event_ids(&body), expected, "filter {query:?}");

        // The CSV export of the same filter has exactly the same events.
        let response = app.get(&format!("/audit/export?{query}")).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap().get(0), Some("id"));
        let exported: BTreeSet<i64> = reader
            .records()
            .map(|record| record.unwrap()[0].parse().unwrap())
            .collect();
        assert_eq!(&exported, expected, "export {query:?}");
    }

    // Before/after as a per-field table; unchanged fields are not highlighted.
    let (_, body) = app
        .browser
        .get_html("/audit?customer=cust-one&action=customer.update")
        .await;
    assert!(body.contains("<td class=\"diff-before\">Ada</td>"));
    assert!(body.contains("<td class=\"diff-after\">Ada L.</td>"));
    assert!(body.contains("<td >ada@example.com</td>") || body.contains("<td>ada@example.com</td>"));
    assert!(body.contains("href=\"/customers/cust-one\""));

    // A formula typed as an email cannot run in a spreadsheet.
    let text = app
        .get("/audit/export?action=auth.sign_in_failed")
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("'=evil@example.com"));

    // Bad filter values are reported next to their field.
    let (status, body) = app.browser.get_html("/audit?from=yesterday&to=2026-01-01").await;
    assert_eq!(status, 422);
    assert!(body.contains("Enter a date as YYYY-MM-DD."));
    assert!(body.contains("value=\"yesterday\""));
    let (status, body) = app.browser.get_html("/audit?from=2026-02-02&to=2026-02-01").await;
    assert_eq!(status, 422);
    assert!(body.contains("The end date is before the start date."));
    assert_eq!(app.get("/audit/export?from=nope").await.status(), 422);
}

#[apply(integration_test!)]
async fn sign_ins_and_failed_sign_ins_are_in_the_audit_log() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    app.create_member("una@example.com", Role::Viewer, PASSWORD);
    let una = app.new_browser();
    assert_eq!(
        una.login("una@example.com", "not the password").await.status(),
        401
    );
    assert_eq!(una.login("una@example.com", PASSWORD).await.status(), 303);

    let (_, body) = app.browser.get_html("/audit?action=auth.sign_in_failed").await;
    assert_eq!(listed_event_ids(&body).len(), 1);
    assert!(body.contains("una@example.com"));
    assert!(!body.contains("not the password"), "passwords are never logged");
    let (_, body) = app.browser.get_html("/audit?action=auth.sign_in&actor=una").await;
    assert_eq!(listed_event_ids(&body).len(), 1);

    // Pages of 50 keep the filters in their links.
    for _ in 0..55 {
        insert_event(
            &app,
            EventSeed {
                program_id: None,
                member_id: None,
                label: "bulk",
                action: "auth.sign_in_failed",
                customer_id: None,
                at: Utc::now(),
                before: None,
                after: None,
            },
        );
    }
    let (_, body) = app.browser.get_html("/audit?action=auth.sign_in_failed").await;
    assert_eq!(listed_event_ids(&body).len(), 50);
    assert!(body.contains("Showing 1–50 of 56 events."));
    assert!(body.contains("href=\"/audit?action=auth.sign_in_failed&#38;page=2\""));
    let (_, page_two) = app
        .browser
        .get_html("/audit?action=auth.sign_in_failed&page=2")
        .await;
    assert_eq!(listed_event_ids(&page_two).len(), 6);
    assert!(listed_event_ids(&body).is_disjoint(&listed_event_ids(&page_two)));
}

/// Event ids in the order the page lists them.
fn listed_event_order(body: &str) -> Vec<i64> {
    body.match_indices("class=\"audit-event\" data-id=\"")
        .map(|(at, marker)| {
            let start = at + marker.len();
            let end = body[start..].find('"').unwrap() + start;
            body[start..end].parse().unwrap()
        })
        .collect()
}

/// The program's events and the program-less ones are read from their own indexes and
/// merged: every page shows exactly SQL's order of both (ties in time broken by id), other
/// programs' events never, the total is exact up to 1,000 and "more than" beyond, and the
/// export holds every event once.
#[apply(integration_test!)]
async fn a_long_audit_log_merges_both_scopes_in_order_and_counts_to_a_limit() {
    use diesel::sql_types::BigInt;
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let program = default_program(&app);
    let other = insert_program(&app, "other");
    // Two events a second (pairs share a time), every third one program-less.
    diesel::sql_query(
        "INSERT INTO audit_events (program_id, actor_label, action, subject_type, created_at)
         SELECT CASE WHEN n % 3 = 0 THEN NULL ELSE $1 END, 'bulk',
                CASE WHEN n % 3 = 0 THEN 'auth.sign_in_failed' ELSE 'customer.update' END,
                'customer', now() - interval '1 hour' - (n / 2) * interval '1 second'
         FROM generate_series(1, 1200) AS n
         UNION ALL
         SELECT $2, 'elsewhere', 'customer.update', 'customer', now() - interval '1 hour' - n * interval '1 second'
         FROM generate_series(1, 300) AS n",
    )
    .bind::<BigInt, _>(program)
    .bind::<BigInt, _>(other)
    .execute(&mut app.conn())
    .unwrap();
    let expected: Vec<i64> = audit_events::table
        .filter(
            audit_events::program_id
                .eq(program)
                .or(audit_events::program_id.is_null()),
        )
        .order((audit_events::created_at.desc(), audit_events::id.desc()))
        .select(audit_events::id)
        .load(&mut app.conn())
        .unwrap();
    assert!(expected.len() > 1200, "the bulk events and the sign-in");
    let pages = (expected.len() as i64 + 49) / 50;

    let (_, first) = app.browser.get_html("/audit").await;
    assert_eq!(listed_event_order(&first), expected[..50]);
    assert!(
        first.contains("Showing 1–50 of more than 1,000 events."),
        "{first}"
    );
    assert!(first.contains("href=\"/audit?page=2\" rel=\"next\""));
    for page in [2, 13, pages - 1, pages] {
        let (_, body) = app.browser.get_html(&format!("/audit?page={page}")).await;
        let from = ((page - 1) * 50) as usize;
        let to = (from + 50).min(expected.len());
        assert_eq!(listed_event_order(&body), expected[from..to], "page {page}");
        assert_eq!(
            body.contains(&format!("href=\"/audit?page={}\" rel=\"next\"", page + 1)),
            page < pages,
            "Next link on page {page}"
        );
    }
    let (_, past) = app.browser.get_html(&format!("/audit?page={}", pages + 3)).await;
    assert!(past.contains("No events on this page."));

    // Few enough to count: an exact total and a last page.
    let (_, failed) = app.browser.get_html("/audit?action=auth.sign_in_failed").await;
    assert!(failed.contains("Showing 1–50 of 400 events."), "{failed}");
    assert!(failed.contains("href=\"/audit?action=auth.sign_in_failed&#38;page=8\""));

    let export = app.get("/audit/export").await.text().await.unwrap();
    assert_eq!(
        export.lines().count(),
        expected.len() + 1,
        "header and every event once"
    );
    assert!(!export.contains("elsewhere"));
}

// ---- dashboard ---------------------------------------------------------------------------

#[apply(integration_test!)]
async fn dashboard_numbers_equal_counts_from_the_database() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let program_a = default_program(&app);
    let program_b = insert_program(&app, "bee");
    let now = Utc::now();
    let ago = |hours: i64| now - Duration::hours(hours);

    let r1 = insert_customer(&app, program_a, seed("r1", ago(24 * 100)));
    let r2 = insert_customer(&app, program_a, seed("r2", ago(24 * 95)));
    let referred = |key, referrer, hours| Seed {
        referrer: Some(referrer),
        ..seed(key, ago(hours))
    };
    for (key, referrer, hours) in [
        ("f1", r1, 1),
        ("f2", r1, 30),
        ("f3", r1, 24 * 3),
        ("f4", r2, 24 * 8),
        ("f5", r2, 24 * 20),
        ("f6", r1, 24 * 40),
        ("f7", r1, 24 * 89),
        ("f8", r2, 24 * 120),
    ] {
        insert_customer(&app, program_a, referred(key, referrer, hours));
    }
    insert_customer(&app, program_a, seed("solo1", ago(2)));
    insert_customer(
        &app,
        program_a,
        Seed {
            approved: false,
            ..seed("pending", ago(50))
        },
    );
    insert_customer(
        &app,
        program_a,
        Seed {
            deleted: true,
            ..referred("gone", r1, 5)
        },
    );
    insert_customer(
        &app,
        program_a,
        Seed {
            deleted: true,
            approved: false,
            ..seed("gone2", ago(5))
        },
    );
    insert_customer(
        &app,
        program_a,
        Seed {
            approved: false,
            ..referred("f9", r2, 10)
        },
    );
    let other = insert_customer(&app, program_b, seed("b1", ago(3)));
    insert_customer(&app, program_b, referred("b2", other, 3));
    recount_referrals(&app);

    insert_transaction(&app, program_a, r1, "credit", "10.50", "USD");
    insert_transaction(&app, program_a, r1, "credit", "5.25", "USD");
    insert_transaction(&app, program_a, r2, "debit", "2.00", "USD");
    insert_transaction(&app, program_a, r2, "credit", "3", "EUR");
    insert_transaction(&app, program_a, r2, "credit", "100", "points");
    insert_transaction(&app, program_a, r1, "credit", "50.5", "points");
    insert_transaction(&app, program_b, other, "credit", "999", "USD");
    insert_invite(&app, program_a, "i1@example.com", "sent");
    insert_invite(&app, program_a, "i2@example.com", "sent");
    insert_invite(&app, program_a, "i3@example.com", "queued");
    insert_invite(&app, program_a, "i4@example.com", "failed");
    insert_invite(&app, program_b, "i5@example.com", "sent");

    // Expected figures, counted in Rust from the rows themselves.
    let rows: Vec<CustomerRow> = customers::table
        .filter(customers::program_id.eq(program_a))
        .select((
            customers::key,
            customers::referrer_id,
            customers::status,
            customers::approved,
            customers::created_at,
            customers::referrals_count,
        ))
        .load(&mut app.conn())
        .unwrap();
    let today = now.date_naive();
    let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let week_start = Utc.from_utc_datetime(&monday.and_hms_opt(0, 0, 0).unwrap());
    let first_of_month = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap();
    let month_start = Utc.from_utc_datetime(&first_of_month.and_hms_opt(0, 0, 0).unwrap());
    let active: Vec<_> = rows.iter().filter(|row| row.2 == "active").collect();
    let count = |keep: &dyn Fn(&&CustomerRow) -> bool| active.iter().filter(|row| keep(row)).count() as i64;
    let customers_total = count(&|_| true);
    let referred_total = count(&|row| row.1.is_some());
    let approved_total = count(&|row| row.3);
    let new_week = count(&|row| row.4 >= week_start);
    let new_month = count(&|row| row.4 >= month_start);
    let referrals_week = count(&|row| row.1.is_some() && row.4 >= week_start);
    let referrals_month = count(&|row| row.1.is_some() && row.4 >= month_start);
    assert_eq!((customers_total, referred_total, approved_total), (13, 9, 11));

    let (status, body) = app.browser.get_html("/").await;
    assert_eq!(status, 200);
    assert_eq!(value_after(&body, "id=\"stat-customers\""), customers_total);
    assert_eq!(value_after(&body, "id=\"stat-referred\""), referred_total);
    assert_eq!(value_after(&body, "id=\"stat-approved\""), approved_total);
    assert_eq!(value_after(&body, "id=\"stat-new\""), new_week);
    assert_eq!(value_after(&body, "this week · <span"), new_month);
    assert_eq!(value_after(&body, "id=\"stat-referrals\""), referrals_week);
    let referrals_block = &body[body.find("id=\"stat-referrals\"").unwrap()..];
    assert_eq!(value_after(referrals_block, "this week · <span"), referrals_month);
    assert_eq!(value_after(&body, "id=\"stat-invites\""), 2);
    assert!(body.contains(">69.2%<"), "9 of 13 referred");
    assert!(body.contains(">84.6%<"), "11 of 13 approved");

    // Credits per unit, exact, debits not counted, currencies with two decimals.
    assert!(body.contains("data-units=\"USD\">15.75<"));
    assert!(body.contains("data-units=\"EUR\">3.00<"));
    assert!(body.contains("data-units=\"points\">150.5<"));

    // Top referrers by their referral counts, linked to their pages.
    let top: Vec<(String, i32)> = {
        let mut top: Vec<_> = active
            .iter()
            .filter(|row| row.5 > 0)
            .map(|row| (row.0.clone(), row.5))
            .collect();
        top.sort_by_key(|row| std::cmp::Reverse(row.1));
        top
    };
    assert_eq!(top, [("r1".to_string(), 5), ("r2".to_string(), 4)]);
    for (key, referrals) in &top {
        assert!(body.contains(&format!(
            "<a href=\"/customers/{key}\">Name {key}</a><span data-key=\"{key}\">{referrals}</span>"
        )));
    }
    assert!(body.find("data-key=\"r1\"").unwrap() < body.find("data-key=\"r2\"").unwrap());

    // The chart: one bar per day over 90 days, each titled with its count.
    let first_day = today - Duration::days(89);
    let mut per_day: BTreeMap<NaiveDate, i64> = BTreeMap::new();
    for row in active.iter().filter(|row| row.1.is_some()) {
        let day = row.4.date_naive();
        if day >= first_day {
            *per_day.entry(day).or_default() += 1;
        }
    }
    assert_eq!(body.matches("<rect class=\"bar\"").count(), 90);
    for (day, referrals) in &per_day {
        let plural = if *referrals == 1 { "" } else { "s" };
        assert!(
            body.contains(&format!("<title>{day}: {referrals} referral{plural}</title>")),
            "bar of {day}"
        );
    }
    let total: i64 = per_day.values().sum();
    assert!(body.contains(&format!("{total} referrals from {first_day}")));
    assert!(body.contains("<title id=\"chart-title\">"));
    assert!(!body.contains("style="), "no inline styles (CSP)");
}
