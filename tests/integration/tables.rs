//! Tables become stacked cards on a phone, each cell naming its column with `data-label`:
//! the templates write that label on every cell, so the phone layout needs no script.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::domain::customers::CustomerInput;
use referdesk::domain::team::Role;
use serde_json::json;

use crate::api::Api;
use crate::fixtures::{failed_delivery, finished_job, uploaded_import};
use crate::helpers::form_token_in;
use crate::integration_test;
use crate::reward_fixtures::{insert_reward, pending};
use crate::transactions::{add_rule, referral, sale};

/// One tag of a page: its name (lower case, `/` first for an end tag), its attributes'
/// text, and where it starts and ends.
struct Tag<'a> {
    name: String,
    attributes: &'a str,
    start: usize,
    end: usize,
}

fn tags(html: &str) -> Vec<Tag<'_>> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = html[at..].find('<') {
        let start = at + offset;
        let Some(length) = html[start..].find('>') else {
            break;
        };
        let end = start + length + 1;
        let inner = &html[start + 1..end - 1];
        let name_end = inner
            .find(|c: char| c.is_whitespace() || c == '>')
            .unwrap_or(inner.len());
        found.push(Tag {
            name: inner[..name_end].to_ascii_lowercase(),
            attributes: &inner[name_end..],
            start,
            end,
        });
        at = end;
    }
    found
}

/// The value of `name="…"` among a tag's attributes.
fn attribute<'a>(attributes: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!(" {name}=\"");
    let at = attributes.find(&marker)? + marker.len();
    let length = attributes[at..].find('"')?;
    Some(&attributes[at..at + length])
}

/// A header's text as a reader sees it: tags dropped, and nothing for a header whose only
/// words are for screen readers (an "Actions" column, a column of check boxes).
fn header_text(inner: &str) -> String {
    if inner.contains("sr-only") {
        return String::new();
    }
    let mut text = String::new();
    let mut in_tag = false;
    for c in inner.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.trim().to_string()
}

/// A table being read: its column headers and where the current row is.
#[derive(Default)]
struct Table {
    headers: Vec<String>,
    in_head: bool,
    column: usize,
}

/// How many cells of tables with headers the page has, and every cell whose `data-label`
/// is missing or differs from its column's header (a cell spanning columns has an empty one).
fn check_labels(html: &str) -> (usize, Vec<String>) {
    let tags = tags(html);
    let mut open: Vec<Table> = Vec::new();
    let mut cells = 0;
    let mut wrong = Vec::new();
    for (index, tag) in tags.iter().enumerate() {
        match tag.name.as_str() {
            "table" => open.push(Table::default()),
            "/table" => {
                open.pop();
            }
            "thead" => {
                if let Some(table) = open.last_mut() {
                    table.in_head = true;
                }
            }
            "/thead" => {
                if let Some(table) = open.last_mut() {
                    table.in_head = false;
                }
            }
            "tr" => {
                if let Some(table) = open.last_mut() {
                    table.column = 0;
                }
            }
            "th" => {
                let Some(table) = open.last_mut() else { continue };
                if !table.in_head {
                    table.column += 1;
                    continue;
                }
                let close = tags[index..]
                    .iter()
                    .find(|later| later.name == "/th")
                    .expect("every header is closed");
                table.headers.push(header_text(&html[tag.end..close.start]));
            }
            "td" => {
                let Some(table) = open.last_mut() else { continue };
                if table.headers.is_empty() {
                    continue;
                }
                let span: usize = attribute(tag.attributes, "colspan")
                    .map(|span| span.parse().expect("a number"))
                    .unwrap_or(1);
                let expected = if span > 1 {
                    ""
                } else {
                    table.headers.get(table.column).map(String::as_str).unwrap_or("?")
                };
                cells += 1;
                let label = attribute(tag.attributes, "data-label");
                if label != Some(expected) {
                    let shown: String = html[tag.start..].chars().take(tag.end - tag.start + 60).collect();
                    wrong.push(format!("{label:?} where {expected:?} is due: {shown}"));
                }
                table.column += span;
            }
            _ => {}
        }
    }
    (cells, wrong)
}

/// The check itself: headers, hidden headers, spans, nested tables.
#[apply(integration_test!)]
async fn the_label_check_reads_headers_spans_and_nested_tables() {
    let html = r#"<table><thead><tr><th>Name</th><th><span class="sr-only">Actions</span></th></tr></thead>
        <tbody><tr><td data-label="Name">A<table><thead><tr><th>Field</th></tr></thead>
        <tr><td data-label="Field">x</td></tr></table></td><td data-label="">go</td></tr>
        <tr><td colspan="2" data-label="">none</td></tr><tr><td>bare</td><td data-label="Name">off</td></tr></tbody></table>"#;
    let (cells, wrong) = check_labels(html);
    assert_eq!(cells, 6);
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    assert!(wrong[0].starts_with("None where \"Name\""), "{wrong:?}");
    assert!(wrong[1].starts_with("Some(\"Name\") where \"\""), "{wrong:?}");
}

/// A program with a row in every table: customers and a referral, a credit, an invite, a
/// sale that earned a reward, a pending reward, a rule, a token, a webhook with a failed
/// delivery, a job that skipped a row, an uploaded import; returns the pages to read.
async fn every_table_filled(api: &Api) -> Vec<String> {
    let app = &api.app;
    app.login_as(Role::Admin).await;
    referral(api, &["mia"]).await;
    add_rule(app, &[("name", "'First sale'")]);
    assert_eq!(sale(api, "mia", "order-1", json!("25.00")).await.0, 201);
    let ids = |key: &str| -> i64 {
        referdesk::db::schema::customers::table
            .filter(referdesk::db::schema::customers::key.eq(key))
            .select(referdesk::db::schema::customers::id)
            .first(&mut app.conn())
            .unwrap()
    };
    let rule = crate::reward_fixtures::insert_rule(app, "Signup bonus");
    insert_reward(app, rule, (ids("ada"), ids("mia")), pending("5.00"));
    app.create_customer(CustomerInput {
        key: Some("zoe".into()),
        email: Some("zoe@example.com".into()),
        referrer_key: Some("ada".into()),
        ..Default::default()
    });

    let (_, form) = app.browser.get_html("/customers/ada/credit").await;
    let token = form_token_in(&form).expect("the credit form's token");
    let credited = app
        .post_form(
            "/customers/ada/credit",
            &[
                ("amount", "250000"),
                ("unit_name", "points"),
                ("note", "welcome"),
                ("form_token", &token),
            ],
        )
        .await;
    assert_eq!(credited.status(), 303);
    let invited = app
        .post_form(
            "/customers/ada/invite",
            &[("email", "friend@example.com"), ("name", "Friend")],
        )
        .await;
    assert_eq!(invited.status(), 303);

    let deliveries = failed_delivery(app);
    let job = finished_job(app);
    let import = uploaded_import(app).await;

    [
        "/",
        "/customers",
        "/customers/ada",
        "/customers/mia",
        "/invites",
        "/transactions",
        "/rewards",
        "/rules",
        "/api-tokens",
        "/team",
        "/webhooks",
        "/webhooks/deliveries?customer=ada",
        "/programs",
        "/audit",
        "/jobs",
    ]
    .into_iter()
    .map(String::from)
    .chain([deliveries, format!("/jobs/{job}"), import])
    .collect()
}

/// Every cell of every table, on every page with one, names its column server-side: the
/// phone layout's labels do not wait for (or need) JavaScript.
#[apply(integration_test!)]
async fn every_table_cell_carries_its_columns_label() {
    let api = Api::spawn().await;
    let pages = every_table_filled(&api).await;
    let mut wrong = Vec::new();
    for path in &pages {
        let (status, html) = api.app.browser.get_html(path).await;
        assert_eq!(status, 200, "{path}");
        let (cells, found) = check_labels(&html);
        assert!(cells > 0, "{path} shows no table rows to check");
        wrong.extend(found.into_iter().map(|line| format!("{path}: {line}")));
    }
    assert!(
        wrong.is_empty(),
        "cells without their column's label:\n{}",
        wrong.join("\n")
    );
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/static/app.js")).unwrap();
    assert!(
        !script.contains("data-label"),
        "the labels are the templates' job"
    );
}
