//! Bulk actions on the customers list and the background jobs that run them.

use std::time::Duration;

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::config::{Config, JobSettings};
use referdesk::db::schema::{audit_events, balance_transactions, customers, invites, jobs};
use referdesk::domain::customers::listing::CustomerList;
use referdesk::domain::jobs::{self as job_domain, BatchResult, JobStatus, RunSettings};
use referdesk::domain::team::Role;

use crate::fixtures::{insert_customer, seed};
use crate::helpers::{form_token_in, fresh_database, location, test_config, TestApp};
use crate::integration_test;

/// A server whose job thread is on or off, with short leases and small batches.
fn config(database_url: &str, worker: bool, batch_size: i64) -> Config {
    Config {
        jobs: JobSettings {
            worker,
            batch_size,
            lease_secs: 1,
        },
        ..test_config(database_url)
    }
}

/// `n` customers `{prefix}{i}` of the default program, approved or not, in one statement.
fn insert_many(app: &TestApp, prefix: &str, n: i64, approved: bool) {
    let program_id = app.default_program().id;
    diesel::sql_query(format!(
        "INSERT INTO customers (program_id, external_id, key, email, name, approved, created_at) \
         SELECT {program_id}, 'ext-{prefix}' || i, '{prefix}' || i, '{prefix}' || i || '@example.com', \
         'Name {prefix}' || i, {approved}, now() - (i || ' seconds')::interval \
         FROM generate_series(1, {n}) AS i"
    ))
    .execute(&mut app.conn())
    .unwrap();
}

fn approved_count(app: &TestApp, prefix: &str, approved: bool) -> i64 {
    customers::table
        .filter(customers::key.like(format!("{prefix}%")))
        .filter(customers::approved.eq(approved))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

/// (status, done, skipped, total) of a job (also read by the import tests).
pub(crate) fn job_counts(app: &TestApp, job_id: i64) -> (String, i64, i64, i64) {
    jobs::table
        .find(job_id)
        .select((jobs::status, jobs::done, jobs::skipped, jobs::total))
        .first(&mut app.conn())
        .unwrap()
}

/// The job id of a `/jobs/{id}` redirect target.
pub(crate) fn job_id_of(target: &str) -> i64 {
    target
        .strip_prefix("/jobs/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a job page: {target}"))
}

fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Posts the bulk form to `/customers/bulk` (the confirmation), then confirms it; returns
/// the job's id.
async fn confirm_and_run(app: &TestApp, fields: &[(&str, &str)]) -> i64 {
    let response = app.post_form("/customers/bulk", fields).await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let token = form_token_in(&body).expect("the confirmation carries a form token");
    let mut confirmed = owned(fields);
    confirmed.push(("form_token".into(), token));
    let confirmed: Vec<(&str, &str)> = confirmed.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let response = app.post_form("/customers/bulk/run", &confirmed).await;
    assert_eq!(response.status(), 303);
    job_id_of(&location(&response))
}

async fn post(app: &TestApp, path: &str, fields: &[(String, String)]) -> reqwest::Response {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    app.post_form(path, &fields).await
}

async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[apply(integration_test!)]
async fn approving_all_matching_resumes_after_a_crash_and_a_restart_and_approves_each_once() {
    let database_url = fresh_database();
    // The first server runs no job: the job is started through its pages, then run
    // partly by "a process that dies" holding the lease.
    let first = TestApp::spawn_with(config(&database_url, false, 100)).await;
    insert_many(&first, "pending", 2500, false);
    insert_many(&first, "done", 10, true);
    first.login_as(Role::Support).await;
    let fields = [("action", "approve"), ("scope", "all"), ("approved", "no")];
    let page = first
        .post_form("/customers/bulk", &fields)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Approve 2,500 customers?"), "{page}");
    assert!(page.contains("runs in the background"), "{page}");
    let job_id = confirm_and_run(&first, &fields).await;
    let (_, body) = first.browser.get_html(&format!("/jobs/{job_id}")).await;
    assert!(body.contains("being handled in the background"), "{body}");
    assert!(
        body.contains("http-equiv=\"refresh\""),
        "a running job's page refreshes itself"
    );
    assert_eq!(job_counts(&first, job_id), ("queued".into(), 0, 0, 2500));
    let started: i64 = audit_events::table
        .filter(audit_events::action.eq("job.start"))
        .filter(audit_events::subject_id.eq(job_id.to_string()))
        .filter(
            audit_events::after
                .retrieve_as_text("selection")
                .like("%approved=no%"),
        )
        .count()
        .get_result(&mut first.conn())
        .unwrap();
    assert_eq!(started, 1, "the job start is audited with its filter");

    let settings = RunSettings {
        batch_size: 100,
        lease: chrono::Duration::seconds(1),
        max_failures: 5,
    };
    {
        let mut conn = first.conn();
        let list = CustomerList::default();
        let claimed = job_domain::claim_next(&mut conn, "doomed", &settings, chrono::Utc::now())
            .unwrap()
            .expect("the queued job is claimed");
        assert_eq!(claimed.id, job_id);
        for _ in 0..3 {
            let result = job_domain::run_batch(&mut conn, &list, job_id, "doomed", &settings).unwrap();
            assert_eq!(result, BatchResult::Progress);
        }
        // The lease is held: nobody else may claim the job now.
        assert!(
            job_domain::claim_next(&mut conn, "other", &settings, chrono::Utc::now())
                .unwrap()
                .is_none()
        );
    }
    let (status, done, skipped, _) = job_counts(&first, job_id);
    assert_eq!((status.as_str(), done, skipped), ("running", 300, 0));
    assert_eq!(approved_count(&first, "pending", true), 300);
    first.stop().await;

    // A server with its job thread, on small batches: it takes the job over once the
    // dead process's lease has expired, and is stopped part-way.
    let second = TestApp::spawn_with(config(&database_url, true, 10)).await;
    eventually(
        "the second server resumes the job",
        Duration::from_secs(60),
        || job_counts(&second, job_id).1 > 400,
    )
    .await;
    second.stop().await;
    let (status, done, lease): (String, i64, Option<String>) = jobs::table
        .find(job_id)
        .select((jobs::status, jobs::done, jobs::lease_owner))
        .first(&mut referdesk::db::build_pool(&database_url, 1).get().unwrap())
        .unwrap();
    assert!(done >= 400);
    println!("the second server was stopped with the job {status} at {done} of 2,500");
    if status == "running" {
        assert_eq!(lease, None, "a stopping server gives its job back at once");
    }

    let resumed_at = std::time::Instant::now();
    let third = TestApp::spawn_with(config(&database_url, true, 200)).await;
    eventually("the job finishes", Duration::from_secs(120), || {
        job_counts(&third, job_id).0 == "done"
    })
    .await;
    println!(
        "the third server approved the last {} customers in {:.1} s (start-up and first poll included)",
        2500 - done,
        resumed_at.elapsed().as_secs_f64()
    );
    assert_eq!(job_counts(&third, job_id), ("done".into(), 2500, 0, 2500));
    assert_eq!(approved_count(&third, "pending", false), 0);
    let (approvals, customers_approved): (i64, i64) = {
        let mut conn = third.conn();
        let approvals = audit_events::table
            .filter(audit_events::action.eq("customer.approve"))
            .count()
            .get_result(&mut conn)
            .unwrap();
        let approved: std::collections::BTreeSet<Option<i64>> = audit_events::table
            .filter(audit_events::action.eq("customer.approve"))
            .select(audit_events::customer_id)
            .load(&mut conn)
            .unwrap()
            .into_iter()
            .collect();
        (approvals, approved.len() as i64)
    };
    assert_eq!(
        (approvals, customers_approved),
        (2500, 2500),
        "each customer approved once"
    );
    third.login_as(Role::Viewer).await;
    let (_, body) = third.browser.get_html(&format!("/jobs/{job_id}")).await;
    assert!(
        body.contains("100%") && body.contains("2,500 of 2,500 rows"),
        "{body}"
    );
    assert!(
        !body.contains("http-equiv=\"refresh\""),
        "a finished job's page stays still"
    );
}

#[apply(integration_test!)]
async fn a_viewer_cannot_start_any_bulk_action_and_support_cannot_delete() {
    let app = TestApp::spawn_with(config(&fresh_database(), false, 100)).await;
    let program_id = app.default_program().id;
    for key in ["v1", "v2"] {
        let mut row = seed(key, chrono::Utc::now());
        row.approved = false;
        insert_customer(&app, program_id, row);
    }
    let (_, viewer) = app.signed_in_browser("viewer@example.com", Role::Viewer).await;
    for action in ["approve", "unapprove", "delete", "restore", "invite", "credit"] {
        for path in ["/customers/bulk", "/customers/bulk/run"] {
            let response = viewer
                .post_form(
                    path,
                    &[
                        ("action", action),
                        ("scope", "all"),
                        ("form_token", "6f7a9b52-3f0e-4a52-9d7e-0f1e2d3c4b5a"),
                        ("amount", "5"),
                        ("units", "points"),
                    ],
                )
                .await;
            assert_eq!(response.status(), 403, "viewer on {path} {action}");
        }
    }
    let (_, support) = app.signed_in_browser("support@example.com", Role::Support).await;
    for action in ["delete", "restore"] {
        let response = support
            .post_form("/customers/bulk", &[("action", action), ("scope", "all")])
            .await;
        assert_eq!(
            response.status(),
            403,
            "support {action}s one customer at a time neither"
        );
    }
    let jobs_made: i64 = jobs::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(jobs_made, 0);
    assert_eq!(approved_count(&app, "v", true), 0);

    // A viewer may export a selection, which is reading.
    let response = viewer
        .post_form("/customers/bulk/export", &[("scope", "selected"), ("key", "v2")])
        .await;
    assert_eq!(response.status(), 200);
    let csv = response.text().await.unwrap();
    assert!(csv.starts_with("id,key,email"), "{csv}");
    assert!(
        csv.contains("v2@example.com") && !csv.contains("v1@example.com"),
        "{csv}"
    );
    let (_, list) = viewer.get_html("/customers").await;
    assert!(
        list.contains("bulk-export") && !list.contains("bulk-continue"),
        "a viewer gets export only"
    );
}

#[apply(integration_test!)]
async fn a_bulk_credit_sent_twice_or_run_again_books_once_per_customer() {
    let app = TestApp::spawn_with(config(&fresh_database(), false, 2)).await;
    let program_id = app.default_program().id;
    for key in ["c1", "c2", "c3"] {
        insert_customer(&app, program_id, seed(key, chrono::Utc::now()));
    }
    app.login_as(Role::Support).await;
    let selection = [
        ("action", "credit"),
        ("scope", "selected"),
        ("key", "c1"),
        ("key", "c2"),
        ("key", "c3"),
    ];
    let (status, form) = {
        let response = app.post_form("/customers/bulk", &selection).await;
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(status, 200);
    assert!(form.contains("Amount for each customer"), "{form}");
    let mut review = owned(&selection);
    review.extend(owned(&[
        ("stage", "review"),
        ("amount", "10.005"),
        ("units", "usd"),
        ("is_currency", "1"),
    ]));
    let refused = post(&app, "/customers/bulk", &review).await;
    crate::helpers::assert_refused(refused, &["Currency amounts have at most 2 decimals."]).await;
    for pair in review.iter_mut() {
        if pair.0 == "amount" {
            pair.1 = "10".into();
        }
    }
    let confirm = post(&app, "/customers/bulk", &review).await.text().await.unwrap();
    assert!(
        confirm.contains("10.00 USD each, 30.00 USD in total"),
        "{confirm}"
    );
    let token = form_token_in(&confirm).unwrap();
    let mut run = owned(&selection);
    run.extend(owned(&[
        ("amount", "10"),
        ("units", "usd"),
        ("is_currency", "1"),
        ("form_token", &token),
    ]));
    let run: Vec<(&str, &str)> = run.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let first = app.post_form("/customers/bulk/run", &run).await;
    assert_eq!(first.status(), 303);
    let job_id = job_id_of(&location(&first));
    let again = app.post_form("/customers/bulk/run", &run).await;
    assert_eq!(
        location(&again),
        format!("/jobs/{job_id}"),
        "the same form answers the same job"
    );
    let (_, page) = app.browser.get_html(&format!("/jobs/{job_id}")).await;
    assert!(page.contains("already sent"), "{page}");
    let bookings = |app: &TestApp| -> i64 {
        balance_transactions::table
            .count()
            .get_result(&mut app.conn())
            .unwrap()
    };
    assert_eq!(bookings(&app), 3);
    assert_eq!(job_counts(&app, job_id), ("done".into(), 3, 0, 3));

    // Run again from the start, as a job would after losing its cursor: each booking's
    // idempotency key is the job's and the customer's, so nothing is booked twice.
    diesel::update(jobs::table.find(job_id))
        .set((
            jobs::status.eq(JobStatus::Running),
            jobs::cursor.eq(None::<serde_json::Value>),
            jobs::lease_owner.eq("retry"),
            jobs::finished_at.eq(None::<chrono::DateTime<chrono::Utc>>),
            jobs::done.eq(0),
        ))
        .execute(&mut app.conn())
        .unwrap();
    let settings = RunSettings::default();
    let result = job_domain::run_to_end(
        &mut app.conn(),
        &CustomerList::default(),
        job_id,
        "retry",
        &settings,
        &|_| false,
    )
    .unwrap();
    assert_eq!(result, BatchResult::Finished(JobStatus::Done));
    assert_eq!(bookings(&app), 3, "a job run again books nothing twice");
    assert_eq!(job_counts(&app, job_id), ("done".into(), 0, 3, 3));
}

#[apply(integration_test!)]
async fn selected_rows_the_page_and_all_matching_select_different_customers() {
    let app = TestApp::spawn_with(config(&fresh_database(), false, 7)).await;
    insert_many(&app, "alpha", 20, false);
    insert_many(&app, "beta", 5, false);
    app.login_as(Role::Support).await;

    let job = confirm_and_run(
        &app,
        &[
            ("action", "approve"),
            ("scope", "selected"),
            ("key", "alpha1"),
            ("key", "alpha2"),
        ],
    )
    .await;
    assert_eq!(job_counts(&app, job), ("done".into(), 2, 0, 2));
    assert_eq!(approved_count(&app, "alpha", true), 2);

    // The page of pending customers: its 15 rows, not the 23 pending.
    let (_, list) = app.browser.get_html("/customers?approved=no").await;
    let page_keys: Vec<String> = list
        .split("name=\"page_key\" value=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .collect();
    assert_eq!(page_keys.len(), 15);
    assert!(list.contains("All 23 customers matching these filters"), "{list}");
    let mut fields = vec![("action", "approve"), ("scope", "page"), ("approved", "no")];
    fields.extend(page_keys.iter().map(|key| ("page_key", key.as_str())));
    let job = confirm_and_run(&app, &fields).await;
    assert_eq!(job_counts(&app, job), ("done".into(), 15, 0, 15));
    assert_eq!(
        approved_count(&app, "alpha", true) + approved_count(&app, "beta", true),
        17
    );

    // All matching a search: only the betas, whichever page is shown.
    let alphas_approved = approved_count(&app, "alpha", true);
    let job = confirm_and_run(&app, &[("action", "approve"), ("scope", "all"), ("q", "beta")]).await;
    let (status, done, skipped, _) = job_counts(&app, job);
    assert_eq!(status, "done");
    assert_eq!(done + skipped, 5, "the five betas, approved or already approved");
    assert_eq!(approved_count(&app, "beta", false), 0);
    assert_eq!(
        approved_count(&app, "alpha", true),
        alphas_approved,
        "no alpha touched"
    );

    // Nothing ticked: back to the list with a message, no job.
    let response = app
        .post_form("/customers/bulk", &[("action", "approve"), ("scope", "selected")])
        .await;
    assert_eq!(response.status(), 303);
    let (_, list) = app.browser.get_html(&location(&response)).await;
    assert!(list.contains("Select at least one customer"), "{list}");
}

#[apply(integration_test!)]
async fn skipped_rows_give_their_reasons_on_the_page_and_in_the_csv() {
    let app = TestApp::spawn_with(config(&fresh_database(), false, 100)).await;
    let program_id = app.default_program().id;
    insert_customer(&app, program_id, seed("ok", chrono::Utc::now()));
    let mut gone = seed("gone", chrono::Utc::now());
    gone.deleted = true;
    insert_customer(&app, program_id, gone);
    let silent = insert_customer(&app, program_id, seed("silent", chrono::Utc::now()));
    diesel::update(customers::table.find(silent))
        .set(customers::email.eq(None::<String>))
        .execute(&mut app.conn())
        .unwrap();
    app.login_as(Role::Admin).await;
    let job = confirm_and_run(
        &app,
        &[
            ("action", "invite"),
            ("scope", "selected"),
            ("key", "ok"),
            ("key", "gone"),
            ("key", "silent"),
            ("key", "never-existed"),
        ],
    )
    .await;
    assert_eq!(job_counts(&app, job), ("done".into(), 1, 3, 4));
    let queued: Vec<String> = invites::table
        .select(invites::email)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(queued, vec!["ok@example.com".to_string()]);
    let (_, page) = app.browser.get_html(&format!("/jobs/{job}")).await;
    assert!(
        page.contains("This customer is deleted; restore them first."),
        "{page}"
    );
    assert!(page.contains("This customer has no email address."), "{page}");
    let response = app.get(&format!("/jobs/{job}/skipped.csv")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert_eq!(lines[0], "line,customer_key,email,reason");
    assert!(
        lines[1].starts_with(",gone,gone@example.com,") && lines[1].contains("is deleted"),
        "{csv}"
    );
    assert_eq!(lines[2], ",silent,,This customer has no email address.");
    assert_eq!(lines[3], ",never-existed,,No customer has this key any more.");

    // Delete all matching, then restore them: each customer gets its own audit event.
    let job = confirm_and_run(&app, &[("action", "delete"), ("scope", "all")]).await;
    assert_eq!(job_counts(&app, job), ("done".into(), 2, 0, 2));
    let job = confirm_and_run(
        &app,
        &[("action", "restore"), ("scope", "all"), ("status", "deleted")],
    )
    .await;
    assert_eq!(job_counts(&app, job), ("done".into(), 3, 0, 3));
    let events = |action: &str| -> i64 {
        audit_events::table
            .filter(audit_events::action.eq(action))
            .count()
            .get_result(&mut app.conn())
            .unwrap()
    };
    assert_eq!((events("customer.delete"), events("customer.restore")), (2, 3));
    // Another program's job is not found here.
    assert_eq!(app.get("/jobs/999999").await.status(), 404);
}
