//! What the server keeps: no rows for visitors who are not signed in, and expired rows
//! pruned by one background pass at a time.

use std::sync::{Arc, Barrier};
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{login_failures, maintenance_runs, one_time_tokens, rate_windows, sessions};
use referdesk::domain::maintenance::{prune, Pruned, PRUNE_INTERVAL};
use referdesk::domain::rate_limits;
use referdesk::domain::team::{Role, LOGIN_FAILURES_KEPT_MINUTES};

use crate::helpers::{fresh_database, test_config, TestApp, PASSWORD};
use crate::integration_test;

fn session_rows(app: &TestApp) -> Vec<(String, Option<i64>)> {
    sessions::table
        .select((sessions::id, sessions::member_id))
        .order(sessions::id)
        .load(&mut app.conn())
        .unwrap()
}

#[apply(integration_test!)]
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

/// The server's own pruning task runs a pass when it starts.
async fn wait_for_first_pass(app: &TestApp) {
    let started = Instant::now();
    loop {
        let last_run: Option<chrono::DateTime<Utc>> = maintenance_runs::table
            .select(maintenance_runs::last_run_at)
            .first(&mut app.conn())
            .unwrap();
        if last_run.is_some() {
            return;
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(60),
            "the server never ran a pruning pass"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

fn insert_session(conn: &mut PgConnection, id: &str, expires_at: chrono::DateTime<Utc>) {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(id),
            sessions::state.eq(serde_json::json!({})),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .unwrap();
}

/// A server started on a database holding expired rows clears them without being asked.
#[apply(integration_test!)]
async fn the_server_prunes_when_it_starts() {
    let url = fresh_database();
    let mut conn = PgConnection::establish(&url).unwrap();
    insert_session(&mut conn, "expired-session", Utc::now() - Duration::minutes(1));
    insert_session(&mut conn, "live-session", Utc::now() + Duration::hours(1));
    let app = TestApp::spawn_with(test_config(&url)).await;
    wait_for_first_pass(&app).await;
    let ids: Vec<String> = session_rows(&app).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec!["live-session".to_string()]);
}

fn insert_link(app: &TestApp, hash: &str, expires_at: chrono::DateTime<Utc>, used: bool) {
    diesel::insert_into(one_time_tokens::table)
        .values((
            one_time_tokens::token_hash.eq(hash),
            one_time_tokens::purpose.eq("setup"),
            one_time_tokens::expires_at.eq(expires_at),
            one_time_tokens::used_at.eq(used.then(|| Utc::now() - Duration::minutes(1))),
        ))
        .execute(&mut app.conn())
        .unwrap();
}

#[apply(integration_test!)]
async fn one_pass_prunes_expired_rows_and_keeps_live_ones() {
    let app = TestApp::spawn().await;
    wait_for_first_pass(&app).await;
    app.login_as(Role::Admin).await;
    let now = Utc::now();
    insert_session(&mut app.conn(), "expired-session", now - Duration::minutes(1));
    insert_session(&mut app.conn(), "live-session", now + Duration::hours(1));
    let kept_from = now - Duration::minutes(LOGIN_FAILURES_KEPT_MINUTES);
    for (email, at) in [
        ("old@example.com", kept_from - Duration::minutes(1)),
        ("recent@example.com", kept_from + Duration::minutes(1)),
    ] {
        diesel::insert_into(login_failures::table)
            .values((
                login_failures::email.eq(email),
                login_failures::address.eq("203.0.113.9"),
                login_failures::created_at.eq(at),
            ))
            .execute(&mut app.conn())
            .unwrap();
    }
    insert_link(&app, "used-link", now + Duration::hours(1), true);
    insert_link(&app, "expired-link", now - Duration::minutes(1), false);
    insert_link(&app, "live-link", now + Duration::hours(1), false);
    let windows_kept_from = now - Duration::minutes(rate_limits::KEPT_MINUTES);
    for (key, at) in [
        ("old-window", windows_kept_from - Duration::minutes(1)),
        ("recent-window", windows_kept_from + Duration::minutes(1)),
    ] {
        diesel::insert_into(rate_windows::table)
            .values((
                rate_windows::scope.eq("api_token"),
                rate_windows::key.eq(key),
                rate_windows::window_start.eq(at),
                rate_windows::hits.eq(3),
            ))
            .execute(&mut app.conn())
            .unwrap();
    }
    let links = || -> Vec<String> {
        one_time_tokens::table
            .select(one_time_tokens::token_hash)
            .order(one_time_tokens::id)
            .load(&mut app.conn())
            .unwrap()
    };
    let startup_link = links()[0].clone();

    let pruned = prune(&mut app.conn(), Duration::zero())
        .unwrap()
        .expect("nobody else is pruning");
    assert_eq!(
        pruned,
        Pruned {
            sessions: 1,
            login_failures: 1,
            one_time_tokens: 2,
            rate_windows: 1,
        }
    );
    let windows: Vec<String> = rate_windows::table
        .select(rate_windows::key)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(windows, vec!["recent-window".to_string()]);
    let session_ids: Vec<String> = session_rows(&app).into_iter().map(|(id, _)| id).collect();
    assert!(!session_ids.contains(&"expired-session".to_string()));
    assert!(session_ids.contains(&"live-session".to_string()));
    assert_eq!(session_ids.len(), 2, "the live row and the admin's session");
    let failures: Vec<String> = login_failures::table
        .select(login_failures::email)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(failures, vec!["recent@example.com".to_string()]);
    assert_eq!(links(), vec![startup_link, "live-link".to_string()]);
    assert_eq!(app.browser.get_html("/").await.0, 200, "still signed in");

    // Nothing is left for a second pass.
    let again = prune(&mut app.conn(), Duration::zero()).unwrap();
    assert_eq!(again, Some(Pruned::default()));
}

/// Several server processes on one database: a pass under way makes the others skip
/// rather than wait or repeat it, of several that wake together only one runs, and none
/// runs again within the interval.
#[apply(integration_test!)]
async fn concurrent_passes_prune_once() {
    let app = TestApp::spawn().await;
    wait_for_first_pass(&app).await;
    insert_session(
        &mut app.conn(),
        "expired-session",
        Utc::now() - Duration::minutes(1),
    );

    let mut holder = app.conn();
    holder
        .transaction::<_, diesel::result::Error, _>(|holder| {
            // Another process's pass holds the task's row until it commits.
            maintenance_runs::table
                .select(maintenance_runs::task)
                .for_update()
                .load::<String>(holder)?;
            // Waiting for the lock would wait for this very transaction: bounded, so a
            // pass that waits instead of skipping fails rather than hangs.
            let mut other = app.conn();
            diesel::sql_query("SET lock_timeout = '10s'")
                .execute(&mut other)
                .unwrap();
            let skipped = prune(&mut other, Duration::zero()).expect("it skipped, not waited");
            assert_eq!(skipped, None, "a pass ran beside another");
            diesel::sql_query("RESET lock_timeout")
                .execute(&mut other)
                .unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(session_rows(&app).len(), 1, "the skipped pass deleted nothing");

    diesel::update(maintenance_runs::table)
        .set(maintenance_runs::last_run_at.eq(None::<chrono::DateTime<Utc>>))
        .execute(&mut app.conn())
        .unwrap();
    let min_gap = Duration::from_std(PRUNE_INTERVAL).unwrap();
    let processes = 4;
    let barrier = Arc::new(Barrier::new(processes));
    let outcomes: Vec<Option<Pruned>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..processes)
            .map(|_| {
                let barrier = barrier.clone();
                let url = app.database_url.clone();
                scope.spawn(move || {
                    let mut conn = PgConnection::establish(&url).unwrap();
                    barrier.wait();
                    prune(&mut conn, min_gap).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let ran: Vec<&Pruned> = outcomes.iter().flatten().collect();
    assert_eq!(ran.len(), 1, "passes that ran: {outcomes:?}");
    assert_eq!(ran[0].sessions, 1);
    assert_eq!(session_rows(&app), vec![]);
    // A process that wakes later within the interval leaves it too.
    assert_eq!(prune(&mut app.conn(), min_gap).unwrap(), None);
}
