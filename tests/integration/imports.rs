//! Importing customers from CSV: the per-row report, all-or-nothing, upserts, exact
//! referral counts, the command and the dashboard's pages.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, customers, referral_links, referral_standings};
use referdesk::domain::customers::CustomerInput;
use referdesk::domain::imports::{self, CsvFile, Mode, Options, Policy, Report, Unwatched};
use referdesk::domain::team::Role;
use referdesk::domain::Actor;

use crate::helpers::{location, TestApp};
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

    let first = app.post_form(&at, &fields("import")).await;
    let second = app.post_form(&at, &fields("import")).await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (303, 303));
    assert_eq!(customer_count(&app), 2, "imported once");
    let (_, page) = app.browser.get_html(&at).await;
    assert!(
        page.contains("<progress id=\"import-progress\" max=\"3\" value=\"3\">"),
        "{page}"
    );
    let csv = app.get(&format!("{at}/refused.csv")).await;
    assert_eq!(csv.status(), 200);
    assert_eq!(
        csv.text().await.unwrap(),
        "E-mail,First name,Referred by,line,errors\nbad,Cy,,4,E-mail: Enter a valid email address.\n"
    );

    let support = app.new_browser();
    app.create_member("support@example.com", Role::Support, crate::helpers::PASSWORD);
    support
        .login("support@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(support.get("/customers/import").await.status(), 403);
    assert_eq!(support.get(&at).await.status(), 403);
}
