//! What the server keeps: no rows for visitors who are not signed in.

use diesel::prelude::*;
use referdesk::db::schema::sessions;
use referdesk::domain::team::Role;

use crate::helpers::{TestApp, PASSWORD};
use crate::trials;

pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![anonymous_visitors_store_no_sessions,]
}

fn session_rows(app: &TestApp) -> Vec<(String, Option<i64>)> {
    sessions::table
        .select((sessions::id, sessions::member_id))
        .order(sessions::id)
        .load(&mut app.conn())
        .unwrap()
}

async fn anonymous_visitors_store_no_sessions() {
    let app = TestApp::spawn().await;
    app.create_member("sam@example.com", Role::Viewer, PASSWORD);
    // A client that keeps no cookies: every request is a new visitor.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for _ in 0..500 {
        let response = client.get(app.browser.url("/login")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let sets_session = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|value| value.to_str().unwrap().starts_with("referdesk_session="));
        assert!(!sets_session, "the login page starts no session");
        response.bytes().await.unwrap();
    }
    for path in [
        "/login?signed_out=1",
        "/setup?token=made-up",
        "/set-password?token=made-up",
        "/",
    ] {
        client.get(app.browser.url(path)).send().await.unwrap();
    }
    assert_eq!(session_rows(&app), vec![], "anonymous visits stored sessions");

    // A refused sign-in stores nothing either; the right password still gets in.
    assert_eq!(
        app.browser
            .login("sam@example.com", "wrong password!!")
            .await
            .status(),
        401
    );
    assert_eq!(session_rows(&app), vec![]);
    assert_eq!(app.browser.login("sam@example.com", PASSWORD).await.status(), 303);
    assert_eq!(app.browser.get_html("/").await.0, 200);
    let rows = session_rows(&app);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].1.is_some(), "the one row is the signed-in member's");

    // Signing out removes it, and the login page shown next adds none.
    assert_eq!(app.post_form("/logout", &[]).await.status(), 303);
    assert_eq!(app.browser.get_html("/login?signed_out=1").await.0, 200);
    assert_eq!(session_rows(&app), vec![]);
}
