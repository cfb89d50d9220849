//! Importing customers from CSV: the per-row report, all-or-nothing, upserts, exact
//! referral counts, the command and the dashboard's pages.

use std::time::Duration;

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::config::{Config, JobSettings};
use referdesk::db::schema::{
    audit_events, customer_imports, customers, job_phases, jobs, referral_links, referral_standings,
};
use referdesk::domain::customers::listing::CustomerList;
use referdesk::domain::customers::CustomerInput;
use referdesk::domain::imports::{self, CsvFile, Mode, Options, Policy, Report, Unwatched};
use referdesk::domain::jobs::{self as job_domain, phases::Recorded, RunSettings};
use referdesk::domain::team::Role;
use referdesk::domain::Actor;

use crate::bulk::{job_counts, job_id_of};
use crate::helpers::{fresh_database, location, test_config, TestApp};
use crate::integration_test;

fn run(app: &TestApp, text: &[u8], mode: Mode, policy: Policy, dry_run: bool) -> Report {
    let file = CsvFile::parse(text.to_vec()).expect("a readable file");
    let mapping = file.guess_mapping();
    let options = Options {
        mode,
        policy,
        dry_run,
        source: "test.csv".into(),
    };
    imports::import(
        &mut app.conn(),
        &app.default_program(),
        &Actor::system(),
        &file,
        &mapping,
        &options,
        &Unwatched,
    )
    .expect("the import runs")
}

fn refusals(report: &Report) -> Vec<(i32, String, String)> {
    report
        .refusals
        .iter()
        .map(|(line, column, message)| (line, column.to_string(), message.to_string()))
        .collect()
}

fn customer_count(app: &TestApp) -> i64 {
    customers::table.count().get_result(&mut app.conn()).unwrap()
}

fn row(line: i32, column: &str, message: &str) -> (i32, String, String) {
    (line, column.to_string(), message.to_string())
}

const BAD_ROWS: &str = "key,email,name,date_of_birth,referrer,plan
ok1,ok1@example.com,Ada,1990-02-28,ok2,pro
ok2,ok2@example.com,Bob,,,
bad-email,not-an-email,Cy,,,
ok1,dup@example.com,Dup,,,
taken,taken2@example.com,Taken,,,
orphan,orphan@example.com,Orphan,,nobody@example.com,
c1,c1@example.com,C1,,c2,
c2,c2@example.com,C2,,c1,
date,date@example.com,Date,1990-02-30,,
long,long@example.com,LONGNAME,,,
formula,formula@example.com,=HYPERLINK(\"http://x\"),,,@SUM(1)
self,self@example.com,Self,,self,
child,child@example.com,Child,,c1,
";

/// Every kind of bad row gets its line, column and message, and all or nothing writes
/// nothing: no customer, no link, no audit event.
#[apply(integration_test!)]
async fn every_kind_of_bad_row_is_reported_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    app.create_customer(CustomerInput {
        key: Some("taken".into()),
        email: Some("taken@example.com".into()),
        ..Default::default()
    });
    let before = customer_count(&app);
    let text = BAD_ROWS.replace("LONGNAME", &"x".repeat(10_000));
    let report = run(&app, text.as_bytes(), Mode::Create, Policy::AllOrNothing, false);
    assert_eq!(report.rows, 13);
    assert!(!report.written);
    let formula = |cell: &str| imports::formula_message(cell);
    assert_eq!(
        refusals(&report),
        vec![
            row(4, "email", "Enter a valid email address."),
            row(5, "key", "The key \"ok1\" is also on line 2."),
            row(6, "key", "This key is already taken by another customer."),
            row(
                7,
                "referrer",
                "No customer with the key or email \"nobody@example.com\" in this program or in this file."
            ),
            row(
                8,
                "referrer",
                "These rows refer each other in a circle: lines 8 → 9 → 8."
            ),
            row(
                9,
                "referrer",
                "These rows refer each other in a circle: lines 8 → 9 → 8."
            ),
            row(
                10,
                "date_of_birth",
                "Enter a real date in the past as YYYY-MM-DD."
            ),
            row(
                11,
                "name",
                "Use at most 200 characters, without control characters."
            ),
            row(12, "name", &formula("=HYPERLINK(\"http://x\")")),
            row(12, "plan", &formula("@SUM(1)")),
            row(13, "referrer", "A customer cannot refer themselves."),
            row(
                14,
                "referrer",
                "The referrer on line 8 is refused, so this row is too."
            ),
        ]
    );
    assert_eq!(customer_count(&app), before);
    let links: i64 = referral_links::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(links, before);
    let events: i64 = audit_events::table
        .filter(audit_events::action.eq("customer.import"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(events, 0);

    // The valid rows only: the two good ones, the first referred by the second (a later row).
    let report = run(&app, text.as_bytes(), Mode::Create, Policy::ValidRows, false);
    assert!(report.written);
    assert_eq!((report.created, report.refusals.rows()), (2, 11));
    let mut conn = app.conn();
    let (ok2_id, ok2_count): (i64, i32) = customers::table
        .filter(customers::key.eq("ok2"))
        .select((customers::id, customers::referrals_count))
        .first(&mut conn)
        .unwrap();
    let ok1_referrer: Option<i64> = customers::table
        .filter(customers::key.eq("ok1"))
        .select(customers::referrer_id)
        .first(&mut conn)
        .unwrap();
    assert_eq!((ok1_referrer, ok2_count), (Some(ok2_id), 1));
    let events: i64 = audit_events::table
        .filter(audit_events::action.eq("customer.import"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(events, 1, "one event for the whole import");

    // A file in another encoding is refused as a whole.
    let error = CsvFile::parse(b"email,name\nrene@example.com,Ren\xe9\n".to_vec()).unwrap_err();
    let message = &error.field_errors().unwrap()["file"][0];
    assert!(
        message.contains("not UTF-8") && message.contains("line 2"),
        "{message}"
    );
}

/// An upsert changes only the columns in the file; a blank cell clears its field.
#[apply(integration_test!)]
async fn upsert_changes_only_the_named_fields() {
    let app = TestApp::spawn().await;
    let ada = app.create_customer(CustomerInput {
        key: Some("ada".into()),
        id: Some("ext-1".into()),
        email: Some("ada@example.com".into()),
        name: Some("Ada".into()),
        surname: Some("Lovelace".into()),
        date_of_birth: Some("1990-02-28".into()),
        custom_fields: Some(vec![("plan".into(), "pro".into()), ("team".into(), "red".into())]),
        ..Default::default()
    });
    let text = b"\xEF\xBB\xBFkey;name;team\nada;Adeline;\nnewbie;New;blue\n";
    let report = run(&app, text, Mode::UpsertByKey, Policy::AllOrNothing, false);
    assert_eq!(
        (report.created, report.updated, report.refusals.rows()),
        (1, 1, 0)
    );
    let after =
        referdesk::domain::customers::find(&mut app.conn(), app.default_program().id, ada.id).unwrap();
    assert_eq!(after.name.as_deref(), Some("Adeline"));
    assert_eq!(after.surname.as_deref(), Some("Lovelace"));
    assert_eq!(after.email.as_deref(), Some("ada@example.com"));
    assert_eq!(after.external_id, "ext-1");
    assert_eq!(after.metadata, ada.metadata);
    assert_eq!(after.custom_fields, serde_json::json!({"plan": "pro"}));
    assert_eq!(after.created_at, ada.created_at);

    // By email: a key that differs is refused, not changed.
    let report = run(
        &app,
        b"email,key\nADA@example.com,other\n",
        Mode::UpsertByEmail,
        Policy::AllOrNothing,
        false,
    );
    assert_eq!(
        refusals(&report),
        vec![row(2, "key", "This customer's key is \"ada\"; a key is changed on the customer's page (which keeps the old one for their links), not by an import.")]
    );
}

/// 10,000 referred rows (referrers in the database and earlier and later in the file):
/// every count, standing and tally is exact afterwards, and each new customer has its
/// default link.
#[apply(integration_test!)]
async fn referral_counts_are_exact_after_importing_10000_referred_rows() {
    let app = TestApp::spawn().await;
    app.create_customer(CustomerInput {
        key: Some("root".into()),
        ..Default::default()
    });
    let mut text = String::from("key,email,referrer\n");
    for i in 0..10_000 {
        let referrer = match i {
            0..=99 => "root".to_string(),
            // Some referrers come later in the file.
            _ if i % 7 == 0 && i < 9_000 => format!("k{}", i + 500),
            _ => format!("k{}@example.com", i % 100),
        };
        text.push_str(&format!("k{i},k{i}@example.com,{referrer}\n"));
    }
    let report = run(&app, text.as_bytes(), Mode::Create, Policy::AllOrNothing, false);
    assert_eq!(
        (report.created, report.refusals.rows()),
        (10_000, 0),
        "{:?}",
        refusals(&report)
    );
    let mut conn = app.conn();
    let wrong: i64 = diesel::sql_query(
        "SELECT count(*) AS n FROM customers c
         WHERE c.referrals_count <> (SELECT count(*) FROM customers r
                                     WHERE r.referrer_id = c.id AND r.status = 'active')",
    )
    .get_result::<Count>(&mut conn)
    .unwrap()
    .n;
    assert_eq!(wrong, 0);
    let root: i32 = customers::table
        .filter(customers::key.eq("root"))
        .select(customers::referrals_count)
        .first(&mut conn)
        .unwrap();
    assert_eq!(root, 100);
    let standings_off: i64 = diesel::sql_query(
        "SELECT count(*) AS n FROM customers c JOIN referral_standings s ON s.customer_id = c.id
         WHERE s.referrals_count <> c.referrals_count OR s.referrer_id IS DISTINCT FROM c.referrer_id",
    )
    .get_result::<Count>(&mut conn)
    .unwrap()
    .n;
    assert_eq!(standings_off, 0);
    let standings: i64 = referral_standings::table.count().get_result(&mut conn).unwrap();
    assert_eq!(standings, 10_001);
    let tallied: i64 = diesel::sql_query(
        "SELECT sum(customers)::bigint AS n FROM customer_tallies WHERE status = 'active' AND referred",
    )
    .get_result::<Count>(&mut conn)
    .unwrap()
    .n;
    assert_eq!(tallied, 10_000);
    let without_link: i64 = diesel::sql_query(
        "SELECT count(*) AS n FROM customers c WHERE NOT EXISTS
             (SELECT 1 FROM referral_links l WHERE l.customer_id = c.id AND l.is_default AND l.code = c.key)",
    )
    .get_result::<Count>(&mut conn)
    .unwrap()
    .n;
    assert_eq!(without_link, 0);
    // The dashboard's list shows them, with the exact total.
    app.login_as(Role::Viewer).await;
    let (status, body) = app.browser.get_html("/customers?refer_status=referred").await;
    assert_eq!(status, 200);
    assert!(body.contains("10,000"), "the referred total");
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_referdesk"))
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env(
            "REFERDESK_DATA_DIR",
            std::env::temp_dir().join("referdesk-cli-test"),
        )
        .output()
        .unwrap()
}

/// The command prints the report on stdout and exits 0 only when every row was imported.
#[apply(integration_test!)]
async fn the_command_reports_and_exits_0_only_when_every_row_is_imported() {
    let app = TestApp::spawn().await;
    let dir = std::env::temp_dir().join(format!("referdesk-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join(format!("bad-{}.csv", app.default_program().id + rand_suffix()));
    std::fs::write(&bad, "email,name\nada@example.com,Ada\nnope,Bob\n").unwrap();
    let output = cli(
        &app,
        &[
            "import",
            "customers",
            bad.to_str().unwrap(),
            "--program",
            "default",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "2 rows: 1 created, 0 updated, 1 refused; nothing written (all or nothing).\n\
         line 3, email: Enter a valid email address.\n"
    );
    assert_eq!(customer_count(&app), 0);

    let refused = dir.join(format!("refused-{}.csv", rand_suffix()));
    let output = cli(
        &app,
        &[
            "import",
            "customers",
            bad.to_str().unwrap(),
            "--valid-rows",
            "--refused",
            refused.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(customer_count(&app), 1);
    assert_eq!(
        std::fs::read_to_string(&refused).unwrap(),
        "email,name,line,errors\nnope,Bob,3,email: Enter a valid email address.\n"
    );

    let good = dir.join(format!("good-{}.csv", rand_suffix()));
    std::fs::write(&good, "email,name\ncy@example.com,Cy\ndee@example.com,Dee\n").unwrap();
    let output = cli(
        &app,
        &["import", "customers", good.to_str().unwrap(), "--dry-run"],
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "2 rows: 2 created, 0 updated, 0 refused; dry run, nothing written.\n"
    );
    assert_eq!(customer_count(&app), 1);
    let output = cli(&app, &["import", "customers", good.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "2 rows: 2 created, 0 updated, 0 refused; imported.\n"
    );
    assert_eq!(customer_count(&app), 3);

    let latin1 = dir.join(format!("latin1-{}.csv", rand_suffix()));
    std::fs::write(&latin1, b"email,name\nrene@example.com,Ren\xe9\n").unwrap();
    let output = cli(&app, &["import", "customers", latin1.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not UTF-8"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn rand_suffix() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static NEXT: AtomicI64 = AtomicI64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst) * 1000 + i64::from(std::process::id() % 1000)
}

/// `multipart/form-data` with one file field, as a browser sends an upload.
fn multipart(name: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----referdesk-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The dashboard: upload, the guessed mapping, a dry run, the import (once, though sent
/// twice), the refused rows' download; support may not import.
#[apply(integration_test!)]
async fn the_dashboard_imports_once_and_offers_the_refused_rows() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let (status, page) = app.browser.get_html("/customers/import").await;
    assert_eq!(status, 200);
    let csrf = app.browser.csrf().await;
    let (content_type, body) = multipart(
        "people.csv",
        b"E-mail;First name;Referred by\nada@example.com;Ada;\nbob@example.com;Bob;ada@example.com\nbad;Cy;\n",
    );
    assert!(page.contains("enctype=\"multipart/form-data\""));
    let upload = |token: String, body: Vec<u8>| {
        app.browser
            .client
            .post(app.browser.url(&format!("/customers/import?csrf_token={token}")))
            .header("Content-Type", content_type.clone())
            .body(body)
            .send()
    };
    assert_eq!(upload("wrong".into(), body.clone()).await.unwrap().status(), 403);
    let response = upload(csrf.clone(), body).await.unwrap();
    assert_eq!(response.status(), 303);
    let at = location(&response);
    let (status, page) = app.browser.get_html(&at).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<option value=\"email\" selected>"),
        "email guessed"
    );
    assert!(
        page.contains("<option value=\"referrer\" selected>"),
        "referrer guessed"
    );

    let fields = |action: &'static str| {
        vec![
            ("column_0", "email"),
            ("column_1", "name"),
            ("column_2", "referrer"),
            ("mode", "create"),
            ("policy", "valid_rows"),
            ("action", action),
        ]
    };
    let response = app.post_form(&at, &fields("dry_run")).await;
    assert_eq!(response.status(), 303);
    let (_, page) = app.browser.get_html(&at).await;
    assert!(
        page.contains("Dry run: 3 rows, 2 would be created, 0 updated, 1 refused."),
        "{page}"
    );
    assert!(page.contains("<td data-label=\"Line\">4</td><td data-label=\"Column\">E-mail</td><td data-label=\"Message\">Enter a valid email address.</td>"));
    assert_eq!(customer_count(&app), 0);

    // The import is a background job: the form answers at once with the job's page, and
    // sent twice it starts one job.
    let first = app.post_form(&at, &fields("import")).await;
    let second = app.post_form(&at, &fields("import")).await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (303, 303));
    let job_at = location(&first);
    assert_eq!(location(&second), job_at, "sent twice, one job");
    let job_id = job_id_of(&job_at);
    wait_for_job(&app, job_id).await;
    assert_eq!(customer_count(&app), 2, "imported once");
    assert_eq!(job_counts(&app, job_id), ("done".into(), 2, 1, 3));
    assert_eq!(import_status(&app, &at), "imported");
    let (_, page) = app.browser.get_html(&job_at).await;
    assert!(
        page.contains("<progress max=\"100\" value=\"100\""),
        "the bar at 100%: {page}"
    );
    assert!(
        page.contains("Imported: 2 created, 0 updated, 1 refused."),
        "{page}"
    );
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "a finished job's page stays"
    );
    let refused_href = format!("{at}/refused.csv");
    assert!(
        page.contains(&format!("href=\"{refused_href}\"")),
        "the job page offers the refused rows: {page}"
    );
    assert!(page.contains("E-mail: Enter a valid email address."), "{page}");
    let (_, page) = app.browser.get_html(&at).await;
    assert!(
        page.contains(&format!("href=\"{job_at}\"")),
        "the upload names its job"
    );
    let csv = app.get(&refused_href).await;
    assert_eq!(csv.status(), 200);
    assert_eq!(
        csv.text().await.unwrap(),
        "E-mail,First name,Referred by,line,errors\nbad,Cy,,4,E-mail: Enter a valid email address.\n"
    );
    let third = app.post_form(&at, &fields("import")).await;
    assert_eq!(location(&third), job_at, "an imported file is not imported again");
    assert_eq!(customer_count(&app), 2);

    let support = app.new_browser();
    app.create_member("support@example.com", Role::Support, crate::helpers::PASSWORD);
    support
        .login("support@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(support.get("/customers/import").await.status(), 403);
    assert_eq!(support.get(&at).await.status(), 403);
    let jobs_before = job_total(&app);
    let (_, viewer) = app.signed_in_browser("viewer@example.com", Role::Viewer).await;
    for browser in [&support, &viewer] {
        let response = browser
            .post_form(
                &at,
                &[
                    ("column_0", "email"),
                    ("column_1", "name"),
                    ("column_2", "referrer"),
                    ("mode", "create"),
                    ("policy", "valid_rows"),
                    ("action", "import"),
                ],
            )
            .await;
        assert_eq!(response.status(), 403, "only admins import");
    }
    assert_eq!(job_total(&app), jobs_before, "no job queued by a refused role");
}

fn job_total(app: &TestApp) -> i64 {
    jobs::table.count().get_result(&mut app.conn()).unwrap()
}

/// The status of the upload at `/customers/import/{id}`.
fn import_status(app: &TestApp, at: &str) -> String {
    let id: i64 = at.rsplit('/').next().unwrap().parse().unwrap();
    customer_imports::table
        .find(id)
        .select(customer_imports::status)
        .first(&mut app.conn())
        .unwrap()
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

/// Waits until the job thread has finished job `job_id`.
async fn wait_for_job(app: &TestApp, job_id: i64) {
    eventually("the import job finishes", Duration::from_secs(120), || {
        matches!(job_counts(app, job_id).0.as_str(), "done" | "failed")
    })
    .await;
}

/// Uploads `content` as `name` through the dashboard; returns the upload's page.
async fn upload(app: &TestApp, name: &str, content: &[u8]) -> String {
    let csrf = app.browser.csrf().await;
    let (content_type, body) = multipart(name, content);
    let response = app
        .browser
        .client
        .post(app.browser.url(&format!("/customers/import?csrf_token={csrf}")))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    location(&response)
}

/// All or nothing with a refused row: the job ends at 100% having written nothing, says
/// so, lists the refused row, and the file can be fixed and imported again. Choices no
/// row can be imported with are refused by the form, before any job is queued.
#[apply(integration_test!)]
async fn an_all_or_nothing_import_job_that_refuses_a_row_writes_nothing() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let at = upload(
        &app,
        "strict.csv",
        b"email,name\nada@example.com,Ada\nnot-an-email,Cy\nbob@example.com,Bob\n",
    )
    .await;
    let fields = |mode: &'static str| {
        vec![
            ("column_0", "email"),
            ("column_1", "name"),
            ("mode", mode),
            ("policy", "all_or_nothing"),
            ("action", "import"),
        ]
    };
    let response = app.post_form(&at, &fields("upsert_key")).await;
    assert_eq!(response.status(), 422, "no key column to match by");
    let page = response.text().await.unwrap();
    assert!(
        page.contains("To update customers by key, choose the column that holds it."),
        "{page}"
    );
    assert_eq!(job_total(&app), 0, "nothing queued");
    assert_eq!(import_status(&app, &at), "uploaded");

    let response = app.post_form(&at, &fields("create")).await;
    assert_eq!(response.status(), 303);
    let job_at = location(&response);
    let job_id = job_id_of(&job_at);
    wait_for_job(&app, job_id).await;
    assert_eq!(job_counts(&app, job_id), ("done".into(), 0, 1, 3));
    assert_eq!(customer_count(&app), 0, "all or nothing");
    assert_eq!(import_status(&app, &at), "uploaded", "it can be imported again");
    let (_, page) = app.browser.get_html(&job_at).await;
    assert!(
        page.contains("Nothing was imported: 1 rows are refused (all or nothing)."),
        "{page}"
    );
    assert!(page.contains("<progress max=\"100\" value=\"100\""), "{page}");
    assert!(page.contains("email: Enter a valid email address."), "{page}");
    let skipped = app
        .get(&format!("{job_at}/skipped.csv"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        skipped,
        "line,customer_key,email,reason\n3,,,email: Enter a valid email address.\n"
    );
}

/// A server with a job thread or without, on short leases.
fn job_config(database_url: &str, worker: bool) -> Config {
    Config {
        jobs: JobSettings {
            worker,
            batch_size: 200,
            lease_secs: 1,
        },
        ..test_config(database_url)
    }
}

/// A process dies in the middle of an import (its connection is cut while the import
/// writes): nothing of it is committed, no other process may take the job while it runs
/// (even with its lease run out), and the next servers — two of them, on one database —
/// run it again from the start, once: every customer written once, referral counts exact.
#[apply(integration_test!)]
async fn an_import_cut_off_mid_way_is_run_again_once_by_the_next_server() {
    const ROWS: usize = 3000;
    let database_url = fresh_database();
    let first = TestApp::spawn_with(job_config(&database_url, false)).await;
    first.login_as(Role::Admin).await;
    let program_id = first.default_program().id;
    crate::fixtures::insert_customer(
        &first,
        program_id,
        crate::fixtures::seed("boss", chrono::Utc::now()),
    );
    // Odd rows are referred by the next row (later in the file), the others by "boss".
    let mut file = String::from("key,email,referrer\n");
    let mut boss_referrals = 0;
    for i in 0..ROWS {
        let referrer = if i % 2 == 1 && i + 1 < ROWS {
            format!("k{}", i + 1)
        } else {
            boss_referrals += 1;
            "boss".to_string()
        };
        file.push_str(&format!("k{i},k{i}@example.com,{referrer}\n"));
    }
    let at = upload(&first, "many.csv", file.as_bytes()).await;
    let response = first
        .post_form(
            &at,
            &[
                ("column_0", "key"),
                ("column_1", "email"),
                ("column_2", "referrer"),
                ("mode", "create"),
                ("policy", "all_or_nothing"),
                ("action", "import"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let job_id = job_id_of(&location(&response));
    assert_eq!(
        job_counts(&first, job_id).0,
        "queued",
        "the first server runs no job"
    );

    // Something else holds the referrer's row: the import will wait when it writes.
    let mut holder = PgConnection::establish(&database_url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("SELECT id FROM customers WHERE key = 'boss' FOR UPDATE")
        .execute(&mut holder)
        .unwrap();

    // "The doomed process" claims the job and imports until it waits for that row.
    let settings = RunSettings {
        lease: chrono::Duration::seconds(1),
        ..Default::default()
    };
    let doomed_url = database_url.clone();
    let (pid_sender, pid_receiver) = std::sync::mpsc::channel::<i32>();
    let doomed = std::thread::spawn(move || {
        #[derive(QueryableByName)]
        struct Pid {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            pid: i32,
        }
        let mut conn = PgConnection::establish(&doomed_url).unwrap();
        let pid: Pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result(&mut conn)
            .unwrap();
        pid_sender.send(pid.pid).unwrap();
        let claimed = job_domain::claim_next(&mut conn, "doomed", &settings, chrono::Utc::now())
            .unwrap()
            .expect("the queued job is claimed");
        assert_eq!(claimed.id, job_id);
        let side = referdesk::db::build_pool(&doomed_url, 1);
        // Cut off mid-way: this returns an error (or never gets to commit).
        let _ = job_domain::run_batch_reporting(
            &mut conn,
            &CustomerList::default(),
            job_id,
            "doomed",
            &settings,
            &Recorded::new(&side),
        );
    });
    let doomed_pid = pid_receiver.recv().unwrap();
    let step = |app: &TestApp| -> (i32, String) {
        job_phases::table
            .find(job_id)
            .select((job_phases::step, job_phases::label))
            .first(&mut app.conn())
            .unwrap()
    };
    eventually(
        "the import reaches its writing step",
        Duration::from_secs(60),
        || step(&first).0 == 5,
    )
    .await;
    assert_eq!(step(&first).1, "Writing customers");
    let (_, page) = first.browser.get_html(&format!("/jobs/{job_id}")).await;
    assert!(page.contains("Step 5 of 6: Writing customers …"), "{page}");
    assert!(
        page.contains("http-equiv=\"refresh\""),
        "a running job's page refreshes itself"
    );
    // Its lease runs out while it works; nobody else takes the job it holds.
    eventually("the doomed lease runs out", Duration::from_secs(30), || {
        let until: Option<chrono::DateTime<chrono::Utc>> = jobs::table
            .find(job_id)
            .select(jobs::lease_until)
            .first(&mut first.conn())
            .unwrap();
        until.is_some_and(|until| until < chrono::Utc::now())
    })
    .await;
    assert!(
        job_domain::claim_next(&mut first.conn(), "other", &settings, chrono::Utc::now())
            .unwrap()
            .is_none(),
        "a running import is not claimed twice"
    );

    // The process dies.
    diesel::sql_query(format!("SELECT pg_terminate_backend({doomed_pid})"))
        .execute(&mut first.conn())
        .unwrap();
    doomed.join().expect("the doomed thread ends");
    diesel::sql_query("ROLLBACK").execute(&mut holder).unwrap();
    assert_eq!(
        customer_count(&first),
        1,
        "nothing of the cut-off import is committed"
    );
    assert_eq!(import_status(&first, &at), "importing");
    assert_eq!(job_counts(&first, job_id).0, "running");
    let (_, page) = first.browser.get_html(&at).await;
    assert!(
        page.contains("This file is being imported in the background."),
        "{page}"
    );
    assert!(page.contains(&format!("href=\"/jobs/{job_id}\"")), "{page}");
    assert!(
        !page.contains("Dry run</button>"),
        "no second import from the page: {page}"
    );
    first.stop().await;

    // Two servers with job threads on the one database: one of them imports, once.
    let second = TestApp::spawn_with(job_config(&database_url, true)).await;
    let third = TestApp::spawn_with(job_config(&database_url, true)).await;
    wait_for_job(&second, job_id).await;
    assert_eq!(
        job_counts(&second, job_id),
        ("done".into(), ROWS as i64, 0, ROWS as i64)
    );
    assert_eq!(customer_count(&second), ROWS as i64 + 1);
    assert_eq!(import_status(&second, &at), "imported");
    let imports: i64 = audit_events::table
        .filter(audit_events::action.eq("customer.import"))
        .count()
        .get_result(&mut second.conn())
        .unwrap();
    assert_eq!(imports, 1, "imported once");
    let count_of = |key: &str| -> i32 {
        customers::table
            .filter(customers::key.eq(key))
            .select(customers::referrals_count)
            .first(&mut second.conn())
            .unwrap()
    };
    assert_eq!(count_of("boss"), boss_referrals);
    assert_eq!(count_of("k2"), 1, "k1 is referred by the later row k2");
    assert_eq!(count_of("k1"), 0);
    let referred: i64 = customers::table
        .filter(customers::referrer_id.is_not_null())
        .count()
        .get_result(&mut second.conn())
        .unwrap();
    assert_eq!(referred, ROWS as i64);
    let links: i64 = referral_links::table
        .filter(referral_links::is_default)
        .filter(referral_links::code.like("k%"))
        .count()
        .get_result(&mut second.conn())
        .unwrap();
    assert_eq!(links, ROWS as i64, "each imported customer has one default link");
    second.login_as(Role::Viewer).await;
    let (_, page) = second.browser.get_html(&format!("/jobs/{job_id}")).await;
    assert!(
        page.contains(&format!("Imported: {ROWS} created, 0 updated, 0 refused.")),
        "{page}"
    );
    third.stop().await;
    second.stop().await;
}

/// An import job whose file turns out not importable (here its stored mapping, changed
/// behind the form's back, names one field twice) fails at once with the message — a
/// retry would be refused the same — and gives the upload back: it is not left
/// "importing", and a second try starts a new job.
#[apply(integration_test!)]
async fn a_failed_import_job_gives_the_upload_back() {
    let database_url = fresh_database();
    let app = TestApp::spawn_with(job_config(&database_url, false)).await;
    app.login_as(Role::Admin).await;
    let at = upload(&app, "two.csv", b"email,name\nada@example.com,Ada\n").await;
    let fields = [
        ("column_0", "email"),
        ("column_1", "name"),
        ("mode", "create"),
        ("policy", "all_or_nothing"),
        ("action", "import"),
    ];
    let response = app.post_form(&at, &fields).await;
    assert_eq!(response.status(), 303);
    let job_id = job_id_of(&location(&response));
    assert_eq!(import_status(&app, &at), "importing");
    let upload_id: i64 = at.rsplit('/').next().unwrap().parse().unwrap();
    diesel::update(customer_imports::table.find(upload_id))
        .set(customer_imports::mapping.eq(serde_json::json!([{"field": "email"}, {"field": "email"}])))
        .execute(&mut app.conn())
        .unwrap();

    let settings = RunSettings::default();
    let mut conn = app.conn();
    job_domain::claim_next(&mut conn, "worker", &settings, chrono::Utc::now())
        .unwrap()
        .expect("the job is claimed");
    let result =
        job_domain::run_batch(&mut conn, &CustomerList::default(), job_id, "worker", &settings).unwrap();
    assert_eq!(
        result,
        job_domain::BatchResult::Finished(job_domain::JobStatus::Failed),
        "failed at the first try"
    );
    drop(conn);
    let (failures, error): (i32, Option<String>) = jobs::table
        .find(job_id)
        .select((jobs::failures, jobs::last_error))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(failures, 1);
    assert_eq!(error.as_deref(), Some("Email is chosen for two columns."));
    assert_eq!(import_status(&app, &at), "uploaded", "the upload is given back");
    assert_eq!(customer_count(&app), 0);
    let (_, page) = app.browser.get_html(&format!("/jobs/{job_id}")).await;
    assert!(
        page.contains("Last error: Email is chosen for two columns."),
        "{page}"
    );

    let response = app.post_form(&at, &fields).await;
    assert_eq!(response.status(), 303);
    let again = job_id_of(&location(&response));
    assert_ne!(again, job_id, "tried again: a new job");
    assert_eq!(import_status(&app, &at), "importing");
}
