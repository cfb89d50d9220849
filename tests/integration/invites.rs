//! Invites: the forms, the list, and delivery by the mail worker over SMTP or to files.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, customers, invites, mail_outbox};
use referdesk::domain::team::Role;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::helpers::{assert_refused, fresh_database, location, test_config, TestApp};
use crate::integration_test;
use crate::ledger::insert_customer;

/// One message as the SMTP server received it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) from: String,
    pub(crate) to: Vec<String>,
    pub(crate) data: String,
}

/// A tiny SMTP server: enough of RFC 5321 for a client to hand over messages.
pub(crate) struct SmtpStub {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpStub {
    /// Listens on `port` (0: any free port). `delay` slows each accepted message down.
    pub(crate) async fn start(port: u16, delay: Duration) -> SmtpStub {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind SMTP stub");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, store, delay).await;
                });
            }
        });
        SmtpStub { port, received, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub(crate) fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn serve(
    socket: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Received>>>,
    delay: Duration,
) -> std::io::Result<()> {
    let (reader, mut writer) = socket.into_split();
    let mut reader = BufReader::new(reader);
    writer.write_all(b"220 stub.test ESMTP ready\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            writer.write_all(b"250-stub.test\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = command["MAIL FROM:".len()..].trim().to_string();
            to.clear();
            writer.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(command["RCPT TO:".len()..].trim().to_string());
            writer.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            writer
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                // Dot-stuffing: a leading "." was doubled by the client.
                data.push_str(if line.starts_with("..") { &line[1..] } else { &line });
            }
            tokio::time::sleep(delay).await;
            store.lock().unwrap().push(Received {
                from: from.clone(),
                to: to.clone(),
                data,
            });
            writer.write_all(b"250 OK queued\r\n").await?;
        } else if upper == "QUIT" {
            writer.write_all(b"221 Bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            writer.write_all(b"250 OK\r\n").await?;
        } else {
            writer.write_all(b"502 Command not implemented\r\n").await?;
        }
    }
}

/// A port on which nothing listens (for "the SMTP server is down").
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Decodes quoted-printable soft breaks and escapes, enough to search a body for text.
fn unfold_quoted_printable(data: &str) -> String {
    let joined = data.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn spawn_with_smtp(url: &str, max_attempts: u32, retry_secs: u64) -> TestApp {
    let mut config = test_config(&fresh_database());
    config.smtp_url = Some(url.to_string());
    config.mail_max_attempts = max_attempts;
    config.mail_retry_base_secs = retry_secs;
    TestApp::spawn_with(config).await
}

/// Polls until `check` holds (or fails the test after 20 s).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn invite_state(app: &TestApp, email: &str) -> Option<(i64, String, Option<String>)> {
    invites::table
        .filter(invites::email.eq(email))
        .order(invites::id.desc())
        .select((invites::id, invites::status, invites::last_error))
        .first(&mut app.conn())
        .optional()
        .unwrap()
}

fn status_of(app: &TestApp, email: &str) -> String {
    invite_state(app, email)
        .map(|(_, status, _)| status)
        .unwrap_or_default()
}

async fn invite(app: &TestApp, path: &str, email: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut fields = vec![("email", email), ("name", "Bob")];
    fields.extend_from_slice(extra);
    app.post_form(path, &fields).await
}

#[apply(integration_test!)]
async fn customer_invite_is_delivered_over_smtp() {
    let smtp = SmtpStub::start(0, Duration::ZERO).await;
    let app = spawn_with_smtp(&smtp.url(), 5, 30).await;
    app.login_as(Role::Support).await;
    let customer_id = insert_customer(&app, "ada123", "Ada");

    let (status, html) = app.browser.get_html("/customers/ada123/invite").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("https://example.com/?ref=ada123"),
        "the form shows the link the email carries"
    );

    let response = invite(
        &app,
        "/customers/ada123/invite",
        "friend@example.com",
        &[
            ("personalization[0][key]", "message"),
            ("personalization[0][value]", "Come <b>join</b> us & save"),
            ("personalization[1][key]", "coupon"),
            ("personalization[1][value]", "WELCOME10"),
        ],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/customers/ada123#invites");

    eventually("the invite is sent", || {
        status_of(&app, "friend@example.com") == "sent"
    })
    .await;
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.to, vec!["<friend@example.com>".to_string()]);
    assert_eq!(message.from, "<referdesk@test.invalid>");
    let data = unfold_quoted_printable(&message.data);
    assert!(
        data.contains("Subject: Ada invites you to join Default program"),
        "{data}"
    );
    assert!(data.contains("To: friend@example.com"));
    assert!(
        data.contains("https://example.com/?ref=ada123"),
        "the referral link is in the body: {data}"
    );
    assert!(data.contains("Hello Bob,"));
    assert!(
        data.contains("Come <b>join</b> us & save"),
        "the text part is plain text"
    );
    assert!(
        data.contains("Come &#60;b&#62;join&#60;/b&#62; us &#38; save")
            || data.contains("Come &lt;b&gt;join&lt;/b&gt; us &amp; save"),
        "the HTML part escapes personalization values"
    );
    assert!(!data.contains("<b>join</b> us &#38;"), "no raw HTML from input");
    assert!(data.contains("WELCOME10"));

    let (invite_customer, sent_at, personalization): (
        Option<i64>,
        Option<chrono::DateTime<chrono::Utc>>,
        serde_json::Value,
    ) = invites::table
        .select((invites::customer_id, invites::sent_at, invites::personalization))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(invite_customer, Some(customer_id));
    assert!(sent_at.is_some());
    assert_eq!(personalization["coupon"], "WELCOME10");
    let outbox: (String, i32) = mail_outbox::table
        .select((mail_outbox::status, mail_outbox::attempts))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(outbox, ("sent".to_string(), 1));
    let audited: i64 = audit_events::table
        .filter(audit_events::action.eq("invite.create"))
        .filter(audit_events::customer_id.eq(customer_id))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(audited, 1);

    let (_, html) = app.browser.get_html("/customers/ada123/invite").await;
    assert!(html.contains("Invite to friend@example.com queued"), "flash");
    assert!(html.contains("badge-green\">sent"), "the panel shows the status");
}

#[apply(integration_test!)]
async fn program_invite_is_written_as_a_readable_eml_file() {
    let config = test_config(&fresh_database());
    let folder = config.data_dir.join("mail");
    let app = TestApp::spawn_with(config).await;
    app.login_as(Role::Admin).await;
    let (status, html) = app.browser.get_html("/invites/new").await;
    assert_eq!(status, 200);
    assert!(html.contains("personalization[0][key]"));

    let response = invite(&app, "/invites/new", "reader@example.org", &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/invites");
    eventually("the invite is written", || {
        status_of(&app, "reader@example.org") == "sent"
    })
    .await;

    let outbox_id: i64 = mail_outbox::table
        .select(mail_outbox::id)
        .first(&mut app.conn())
        .unwrap();
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&folder)
        .expect("the mail folder exists")
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with(&format!("{outbox_id}-")) && name.ends_with(".eml"),
        "{name}"
    );
    let eml = std::fs::read_to_string(&files[0]).expect("a text file");
    assert!(eml.contains("To: reader@example.org"));
    assert!(eml.contains("From: Referdesk <referdesk@test.invalid>"));
    assert!(eml.contains("Subject: You are invited to join Default program"));
    let body = unfold_quoted_printable(&eml);
    assert!(
        body.contains("https://example.com/"),
        "the program's link: {body}"
    );

    let (_, html) = app.browser.get_html("/invites").await;
    assert!(html.contains("reader@example.org"));
    assert!(html.contains("badge-green\">sent"));
}

#[apply(integration_test!)]
async fn smtp_down_marks_the_invite_failed_and_a_retry_delivers_it() {
    let port = closed_port().await;
    let app = spawn_with_smtp(&format!("smtp://127.0.0.1:{port}"), 1, 30).await;
    app.login_as(Role::Support).await;
    assert_eq!(
        invite(&app, "/invites/new", "late@example.com", &[])
            .await
            .status(),
        303
    );

    eventually("the invite fails", || {
        status_of(&app, "late@example.com") == "failed"
    })
    .await;
    let (invite_id, _, error) = invite_state(&app, "late@example.com").unwrap();
    let error = error.expect("the error is recorded");
    assert!(error.starts_with("SMTP:"), "{error}");

    let (_, html) = app.browser.get_html("/invites?status=failed").await;
    assert!(html.contains("late@example.com"));
    assert!(html.contains("badge-red\">failed"));
    assert!(
        html.contains(&format!("/invites/{invite_id}/retry")),
        "a retry button"
    );

    // The server comes back; a retry delivers.
    let smtp = SmtpStub::start(port, Duration::ZERO).await;
    let response = app
        .post_form(
            &format!("/invites/{invite_id}/retry"),
            &[("next", "/invites?status=failed")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/invites?status=failed");
    eventually("the retried invite is sent", || {
        status_of(&app, "late@example.com") == "sent"
    })
    .await;
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, vec!["<late@example.com>".to_string()]);
    let (_, _, error) = invite_state(&app, "late@example.com").unwrap();
    assert_eq!(error, None, "the old error is cleared");
    let retried: i64 = audit_events::table
        .filter(audit_events::action.eq("invite.retry"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(retried, 1);

    // A sent invite cannot be retried.
    let response = app.post_form(&format!("/invites/{invite_id}/retry"), &[]).await;
    assert_eq!(response.status(), 303);
    let (_, html) = app.browser.get_html("/invites").await;
    assert!(html.contains("Only a failed invite can be retried"));
    assert_eq!(smtp.messages().len(), 1);
}

#[apply(integration_test!)]
async fn a_temporary_failure_is_retried_after_a_backoff() {
    let port = closed_port().await;
    let app = spawn_with_smtp(&format!("smtp://127.0.0.1:{port}"), 5, 2).await;
    app.login_as(Role::Support).await;
    assert_eq!(
        invite(&app, "/invites/new", "patient@example.com", &[])
            .await
            .status(),
        303
    );

    eventually("the first attempt fails", || {
        matches!(invite_state(&app, "patient@example.com"), Some((_, status, Some(_))) if status == "queued")
    })
    .await;
    let (attempts, next_at, created): (i32, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        mail_outbox::table
            .select((
                mail_outbox::attempts,
                mail_outbox::next_attempt_at,
                mail_outbox::created_at,
            ))
            .first(&mut app.conn())
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(
        next_at > created + chrono::Duration::milliseconds(1500),
        "waits before the next try"
    );
    let (_, html) = app.browser.get_html("/invites").await;
    assert!(html.contains("next try"), "the list shows the pending retry");

    let smtp = SmtpStub::start(port, Duration::ZERO).await;
    eventually("the worker tries again by itself", || {
        status_of(&app, "patient@example.com") == "sent"
    })
    .await;
    assert_eq!(smtp.messages().len(), 1);
    let attempts: i32 = mail_outbox::table
        .select(mail_outbox::attempts)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(attempts, 2);
}

#[apply(integration_test!)]
async fn invalid_and_duplicate_pending_invites_are_refused() {
    // The SMTP server is down and retries are far apart: invites stay queued.
    let port = closed_port().await;
    let app = spawn_with_smtp(&format!("smtp://127.0.0.1:{port}"), 5, 3600).await;
    app.login_as(Role::Support).await;
    let count = |app: &TestApp| -> (i64, i64) {
        let mut conn = app.conn();
        (
            invites::table.count().get_result(&mut conn).unwrap(),
            mail_outbox::table.count().get_result(&mut conn).unwrap(),
        )
    };

    let response = invite(&app, "/invites/new", "not-an-email", &[]).await;
    let html = assert_refused(response, &["Enter a valid email address."]).await;
    assert!(html.contains("value=\"not-an-email\""), "input is kept");

    let response = invite(&app, "/invites/new", "", &[]).await;
    assert_refused(response, &["Enter the email address to invite."]).await;

    let long_name = "n".repeat(201);
    let response = app
        .post_form(
            "/invites/new",
            &[("email", "a@example.com"), ("name", &long_name)],
        )
        .await;
    assert_refused(response, &["Keep the name to 200 characters."]).await;

    let response = invite(
        &app,
        "/invites/new",
        "a@example.com",
        &[
            ("personalization[0][key]", "bad key!"),
            ("personalization[0][value]", "x"),
        ],
    )
    .await;
    let html = assert_refused(response, &["letters, digits or underscores"]).await;
    assert!(html.contains("value=\"bad key!\""), "the row is kept");

    let long_value = "v".repeat(501);
    let response = invite(
        &app,
        "/invites/new",
        "a@example.com",
        &[
            ("personalization[0][key]", "note"),
            ("personalization[0][value]", &long_value),
        ],
    )
    .await;
    assert_refused(response, &["Keep note to 500 characters."]).await;

    let names: Vec<(String, String)> = (0..21)
        .flat_map(|i| {
            [
                (format!("personalization[{i}][key]"), format!("k{i}")),
                (format!("personalization[{i}][value]"), "v".to_string()),
            ]
        })
        .collect();
    let mut fields: Vec<(&str, &str)> = names.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    fields.push(("email", "a@example.com"));
    let response = app.post_form("/invites/new", &fields).await;
    assert_refused(response, &["Use at most 20 personalization values."]).await;
    assert_eq!(count(&app), (0, 0), "nothing was queued");

    assert_eq!(
        invite(&app, "/invites/new", "twice@example.com", &[])
            .await
            .status(),
        303
    );
    let response = invite(&app, "/invites/new", "TWICE@example.com", &[]).await;
    assert_refused(
        response,
        &["An invite to this address is already waiting to be sent."],
    )
    .await;
    assert_eq!(count(&app), (1, 1));
}

#[apply(integration_test!)]
async fn a_restart_sends_nothing_twice_and_loses_nothing() {
    // Each message takes a while, so the stop comes while some are still queued.
    let smtp = SmtpStub::start(0, Duration::from_millis(300)).await;
    let first = spawn_with_smtp(&smtp.url(), 5, 30).await;
    first.login_as(Role::Support).await;
    let recipients: Vec<String> = (0..5).map(|i| format!("guest{i}@example.com")).collect();
    for email in &recipients {
        assert_eq!(invite(&first, "/invites/new", email, &[]).await.status(), 303);
    }
    eventually("some mail is sent", || !smtp.messages().is_empty()).await;
    let database_url = first.database_url.clone();
    first.stop().await;
    let sent_before = smtp.messages().len();

    let mut config = test_config(&database_url);
    config.smtp_url = Some(smtp.url());
    let second = TestApp::spawn_with(config).await;
    eventually("every invite is sent", || {
        recipients.iter().all(|email| status_of(&second, email) == "sent")
    })
    .await;
    // Give a duplicate the chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = smtp.messages();
    let mut delivered: Vec<String> = messages.iter().flat_map(|message| message.to.clone()).collect();
    delivered.sort();
    let mut expected: Vec<String> = recipients.iter().map(|email| format!("<{email}>")).collect();
    expected.sort();
    assert_eq!(
        delivered, expected,
        "each invite exactly once ({sent_before} before the restart)"
    );
}

#[apply(integration_test!)]
async fn the_list_filters_by_status_and_viewers_may_only_read() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    for email in ["one@example.com", "two@example.com", "three@example.com"] {
        assert_eq!(invite(&app, "/invites/new", email, &[]).await.status(), 303);
    }
    // Shows (and so clears) the three "queued" messages, which name the addresses.
    app.browser.get_html("/").await;
    eventually("all are written", || {
        status_of(&app, "three@example.com") == "sent" && status_of(&app, "one@example.com") == "sent"
    })
    .await;
    diesel::update(invites::table.filter(invites::email.eq("two@example.com")))
        .set((
            invites::status.eq("failed"),
            invites::last_error.eq("mailbox <full>"),
        ))
        .execute(&mut app.conn())
        .unwrap();

    let (status, html) = app.browser.get_html("/invites?status=failed").await;
    assert_eq!(status, 200);
    assert!(html.contains("two@example.com"));
    assert!(!html.contains("one@example.com"));
    assert!(
        html.contains("mailbox &#60;full&#62;") || html.contains("mailbox &lt;full&gt;"),
        "errors are escaped"
    );
    assert!(html.contains("failed (1)"));
    let (_, html) = app.browser.get_html("/invites?email=THREE").await;
    assert!(html.contains("three@example.com"));
    assert!(!html.contains("two@example.com"));
    let (_, html) = app.browser.get_html("/invites?status=bogus").await;
    assert!(
        html.contains("one@example.com") && html.contains("two@example.com"),
        "unknown status shows all"
    );

    let viewer = app.new_browser();
    let email = "viewer-only@example.com";
    app.create_member(email, Role::Viewer, crate::helpers::PASSWORD);
    assert_eq!(viewer.login(email, crate::helpers::PASSWORD).await.status(), 303);
    let (status, html) = viewer.get_html("/invites").await;
    assert_eq!(status, 200);
    assert!(html.contains("two@example.com"));
    assert!(!html.contains("/retry"), "viewers get no retry button");
    assert!(!html.contains("href=\"/invites/new\""), "nor a new-invite button");
    assert_eq!(viewer.get("/invites/new").await.status(), 403);
    let response = viewer
        .post_form("/invites/new", &[("email", "x@example.com")])
        .await;
    assert_eq!(response.status(), 403);
    let invite_id: i64 = invites::table
        .filter(invites::email.eq("two@example.com"))
        .select(invites::id)
        .first(&mut app.conn())
        .unwrap();
    let response = viewer
        .post_form(&format!("/invites/{invite_id}/retry"), &[])
        .await;
    assert_eq!(response.status(), 403);
    insert_customer(&app, "zed", "Zed");
    assert_eq!(viewer.get("/customers/zed/invite").await.status(), 403);
    assert_eq!(
        status_of(&app, "two@example.com"),
        "failed",
        "the viewer changed nothing"
    );
    assert_eq!(status_of(&app, "x@example.com"), "");
}

#[apply(integration_test!)]
async fn deleted_customer_cannot_invite() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let customer_id = insert_customer(&app, "gone", "Gone");
    diesel::update(customers::table.find(customer_id))
        .set((
            customers::status.eq("deleted"),
            customers::deleted_at.eq(diesel::dsl::now),
        ))
        .execute(&mut app.conn())
        .unwrap();
    let response = invite(&app, "/customers/gone/invite", "pal@example.com", &[]).await;
    assert_refused(response, &["This customer is deleted"]).await;
    assert_eq!(status_of(&app, "pal@example.com"), "");
    assert_eq!(app.get("/customers/nobody/invite").await.status(), 404);
}
