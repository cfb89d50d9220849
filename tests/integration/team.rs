//! The team page: adding members, roles, disabling, the last admin, set-password links.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::team_members;
use referdesk::domain::team::{self, Role};
use referdesk::domain::Actor;

use crate::fixtures::{count_events, member_role, session_count};
use crate::helpers::{assert_refused, location, TestApp, PASSWORD};
use crate::integration_test;

/// The set-password link shown once on the team page.
fn issued_link(body: &str) -> Option<String> {
    let at = body.find("/set-password?token=")?;
    let end = body[at..].find(['<', '"', ' ']).unwrap() + at;
    Some(body[at..end].to_string())
}

#[apply(integration_test!)]
async fn disabling_a_member_signs_them_out_at_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let (support_id, support) = app.signed_in_browser("sam@example.com", Role::Support).await;
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
    assert_refused(response, &["You cannot disable your own account."]).await;

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
    let body = assert_refused(
        response,
        &[
            "Enter a valid email address.",
            "Enter a name",
            "Choose viewer, support or admin.",
        ],
    )
    .await;
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
    assert_refused(response, &["Enter an initial password"]).await;
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
    assert_refused(response, &["already exists"]).await;

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
    assert_refused(response, &["Use at least 10 characters."]).await;
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
    let (kim_id, kim) = app.signed_in_browser("kim@example.com", Role::Support).await;
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
    assert_refused(response, &["The two passwords differ."]).await;
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
