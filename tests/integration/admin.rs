//! Who may open the admin pages (team, programs, audit log) and post to them.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{programs, team_members};
use referdesk::domain::team::Role;

use crate::fixtures::member_role;
use crate::helpers::TestApp;
use crate::integration_test;

#[apply(integration_test!)]
async fn admin_pages_render_for_admins_and_are_refused_to_others() {
    let app = TestApp::spawn().await;
    let admin_id = app.login_as(Role::Admin).await;
    let program_id = app.default_program().id;
    let (support_id, support) = app.signed_in_browser("support@example.com", Role::Support).await;
    let (_, viewer) = app.signed_in_browser("viewer@example.com", Role::Viewer).await;

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
            assert!(
                body.contains(&format!(
                    "This needs the admin role; you are signed in with the {role} role."
                )),
                "{path} for {role}"
            );
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
