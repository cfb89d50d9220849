//! A member's own profile: name and password changes and the sessions they end.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::team_members;
use referdesk::domain::team::Role;

use crate::fixtures::{count_events, session_count};
use crate::helpers::{assert_refused, TestApp, PASSWORD};
use crate::integration_test;

#[apply(integration_test!)]
async fn profile_password_change_needs_the_old_password_and_ends_other_sessions() {
    let app = TestApp::spawn().await;
    let (id, laptop) = app.signed_in_browser("vic@example.com", Role::Viewer).await;
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
    let body = assert_refused(response, &["Your current password is not correct."]).await;
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
    assert_refused(
        response,
        &["Enter your current password", "Use at least 10 characters."],
    )
    .await;

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

    let cookie_before = laptop.session_cookie();
    assert!(cookie_before.is_some(), "signed in");
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
        laptop.session_cookie(),
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
