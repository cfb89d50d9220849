//! What keeps Referdesk quick at a million customers, checked for the behaviour it must
//! not change: exact tallied totals, estimated totals said to be estimates, far page links
//! that continue from the rows shown (keyset), deep pages by number, page views that do
//! not rewrite the session, the cached program list, and pooled connections handed out
//! without a ping. (Speed itself is measured by `benches/loadtest.sh`, never asserted.)

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use macro_rules_attribute::apply;
use referdesk::db::schema::{
    self, audit_events, customer_tallies, customers, referral_links, sessions, team_members,
};
use referdesk::domain::customers::listing::{CustomerFilter, CustomerList, StatusFilter};
use referdesk::domain::customers::Total;
use referdesk::domain::programs;
use referdesk::domain::team::Role;

use crate::helpers::{fresh_database, list_page, TestApp};
use crate::integration_test;

/// `count` customers straight in SQL (like `referdesk seed`): keys `{prefix}0000`…, emails
/// `{prefix}N@{domain}`, the higher the number the newer (one second apart).
fn bulk_insert(app: &TestApp, prefix: &str, domain: &str, count: i64) {
    diesel::sql_query(
        "INSERT INTO customers (program_id, external_id, key, email, created_at, updated_at)
         SELECT $1, $2 || '-' || n, $2 || lpad(n::text, 4, '0'), $2 || n || '@' || $3,
                now() - interval '1 day' + n * interval '1 second',
                now() - interval '1 day' + n * interval '1 second'
         FROM generate_series(0, $4 - 1) AS n",
    )
    .bind::<BigInt, _>(app.default_program().id)
    .bind::<Text, _>(prefix)
    .bind::<Text, _>(domain)
    .bind::<BigInt, _>(count)
    .execute(&mut app.conn())
    .expect("bulk insert");
    diesel::sql_query("ANALYZE customers")
        .execute(&mut app.conn())
        .expect("analyze");
}

/// Keys of the customers listed on a list page, in order.
fn listed_keys(body: &str) -> Vec<String> {
    let Some(at) = body.find("<tbody>") else {
        return Vec::new();
    };
    body[at..]
        .split("<td data-label=\"Key\" class=\"mono\">")
        .skip(1)
        .map(|rest| rest[..rest.find('<').unwrap()].to_string())
        .collect()
}

/// The `href` of the first link whose text is `text`, unescaped.
fn link(body: &str, text: &str) -> Option<String> {
    let text_at = body.find(&format!(">{text}</a>"))?;
    let tag = &body[body[..text_at].rfind("<a ")?..text_at];
    let start = tag.find("href=\"")? + "href=\"".len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].replace("&#38;", "&"))
}

async fn page(app: &TestApp, path: &str) -> String {
    let (status, body) = app.browser.get_html(path).await;
    assert_eq!(status, 200, "GET {path}");
    body
}

#[apply(integration_test!)]
async fn page_views_without_messages_leave_the_session_alone() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    page(&app, "/customers").await;
    let stamps = || -> Vec<chrono::DateTime<chrono::Utc>> {
        sessions::table
            .order(sessions::id)
            .select(sessions::updated_at)
            .load(&mut app.conn())
            .unwrap()
    };
    let before = stamps();
    for path in ["/customers", "/", "/customers?page=2", "/team"] {
        page(&app, path).await;
    }
    assert_eq!(stamps(), before, "viewing pages rewrote the session");

    // A message is still shown once, and then gone.
    let response = app
        .post_form("/customers", &[("email", "flash@example.com"), ("key", "flashy")])
        .await;
    assert_eq!(response.status(), 303);
    let shown = page(&app, "/customers/flashy").await;
    assert!(shown.contains("flash"), "the flash after creating: {shown}");
    let again = page(&app, "/customers/flashy").await;
    let flash_count = |body: &str| body.matches("class=\"flash").count();
    assert!(
        flash_count(&shown) > flash_count(&again),
        "the message is shown once"
    );
}

/// A signed-in page reads its member in the same statement as its session
/// (`web::session_store`): what it reads is the member as they are now — a change written
/// straight to the database (as another server would) counts on the next page — and the
/// copy handed to the access check is never written into the session's row.
#[apply(integration_test!)]
async fn the_member_read_with_the_session_is_current_and_never_stored() {
    let app = TestApp::spawn().await;
    let member_id = app.login_as(Role::Admin).await;
    let stored_states = || -> Vec<String> {
        sessions::table
            .select(sessions::state)
            .load::<serde_json::Value>(&mut app.conn())
            .unwrap()
            .iter()
            .map(|state| state.to_string())
            .collect()
    };
    // A page that changes the session (its message), then the page showing the message.
    let response = app
        .post_form("/customers", &[("email", "kept@example.com"), ("key", "kept")])
        .await;
    assert_eq!(response.status(), 303);
    assert!(page(&app, "/customers/kept").await.contains("kept@example.com"));
    let states = stored_states();
    assert!(!states.is_empty());
    for state in &states {
        assert!(state.contains("member_id"), "{state}");
        assert!(!state.contains("loaded_member"), "{state}");
        assert!(
            !state.contains("last_sign_in_at"),
            "no member fields stored: {state}"
        );
    }

    // Demoted in the database: the next page already refuses what only an admin may see.
    assert_eq!(app.get("/api-tokens").await.status(), 200);
    diesel::update(team_members::table.find(member_id))
        .set(team_members::role.eq("viewer"))
        .execute(&mut app.conn())
        .unwrap();
    assert_eq!(app.get("/api-tokens").await.status(), 403);
    assert_eq!(app.get("/customers").await.status(), 200);
    // Renamed: shown at once.
    diesel::update(team_members::table.find(member_id))
        .set(team_members::name.eq("Renamed Member"))
        .execute(&mut app.conn())
        .unwrap();
    assert!(page(&app, "/customers").await.contains("Renamed Member"));
    // Disabled: signed out on the next page, and the session row is gone.
    diesel::update(team_members::table.find(member_id))
        .set(team_members::disabled.eq(true))
        .execute(&mut app.conn())
        .unwrap();
    let response = app.get("/customers").await;
    assert_eq!(response.status(), 303);
    assert!(response.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/login"));
    let left: i64 = sessions::table
        .filter(sessions::member_id.eq(member_id))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(left, 0);
}

/// The tallies agree with a fresh count for every status and refer status.
/// Creates customers through the dashboard's form: (email, key, referrer's key).
async fn sign_up(app: &TestApp, customers: &[(&str, &str, Option<&str>)]) {
    for &(email, key, referrer) in customers {
        let mut fields = vec![("email", email), ("key", key)];
        if let Some(referrer) = referrer {
            fields.push(("referring_customer", referrer));
        }
        assert_eq!(app.post_form("/customers", &fields).await.status(), 303);
    }
}

fn assert_tallies_exact(app: &TestApp) {
    let mut conn = app.conn();
    let program = app.default_program().id;
    for status in ["active", "deleted"] {
        for referred in [true, false] {
            let mut query = customers::table
                .filter(customers::program_id.eq(program))
                .filter(customers::status.eq(status))
                .into_boxed();
            query = if referred {
                query.filter(customers::referrer_id.is_not_null())
            } else {
                query.filter(customers::referrer_id.is_null())
            };
            let counted: i64 = query.count().get_result(&mut conn).unwrap();
            let tallied: Option<bigdecimal::BigDecimal> = customer_tallies::table
                .filter(customer_tallies::program_id.eq(program))
                .filter(customer_tallies::status.eq(status))
                .filter(customer_tallies::referred.eq(referred))
                .select(diesel::dsl::sum(customer_tallies::customers))
                .first(&mut conn)
                .unwrap();
            let tallied = tallied.map(|sum| sum.to_string()).unwrap_or_else(|| "0".into());
            assert_eq!(tallied, counted.to_string(), "{status}, referred {referred}");
        }
    }
}

#[apply(integration_test!)]
async fn tallies_follow_every_change() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let program = app.default_program().id;
    assert_tallies_exact(&app);
    sign_up(
        &app,
        &[
            ("a@example.com", "aa", None),
            ("b@example.com", "bb", Some("aa")),
            ("c@example.com", "cc", Some("aa")),
            ("d@example.com", "dd", None),
        ],
    )
    .await;
    assert_tallies_exact(&app);
    assert_eq!(app.post_form("/customers/bb/delete", &[]).await.status(), 303);
    assert_tallies_exact(&app);
    assert_eq!(
        app.post_form(
            "/customers/dd/referrer",
            &[("referring_customer", "aa"), ("confirm", "1")],
        )
        .await
        .status(),
        303
    );
    assert_tallies_exact(&app);
    assert_eq!(app.post_form("/customers/bb/restore", &[]).await.status(), 303);
    assert_eq!(app.post_form("/customers/cc/approve", &[]).await.status(), 303);
    bulk_insert(&app, "bulk", "bulk.test", 50);
    assert_tallies_exact(&app);

    // The list and the API report the tallied totals.
    let mut conn = app.conn();
    let list = CustomerList::default();
    let active = list_page(&mut conn, &list, program, &CustomerFilter::default(), 1, 15).total;
    assert_eq!(active, Total::Exact(54));
    let body = page(&app, "/customers").await;
    assert!(body.contains("54 customers"), "{body}");
    assert!(page(&app, "/customers?refer_status=referred")
        .await
        .contains("3 customers match these filters"));
    let filter = CustomerFilter {
        status: StatusFilter::Deleted,
        ..CustomerFilter::default()
    };
    assert_eq!(
        list_page(&mut conn, &list, program, &filter, 1, 15).total,
        Total::Exact(0)
    );
}

/// `referral_standings` (which carries the list's referral order) holds exactly the
/// program's customers with their status, count, referrer and approval.
fn assert_standings_exact(app: &TestApp, when: &str) {
    #[derive(QueryableByName, Debug)]
    struct Differences {
        #[diesel(sql_type = BigInt)]
        missing: i64,
        #[diesel(sql_type = BigInt)]
        extra: i64,
    }
    let differences: Differences = diesel::sql_query(
        "WITH truth AS (SELECT id, program_id, status, referrals_count, referrer_id, approved FROM customers),
              kept AS (SELECT customer_id, program_id, status, referrals_count, referrer_id, approved
                       FROM referral_standings)
         SELECT (SELECT count(*) FROM (SELECT * FROM truth EXCEPT SELECT * FROM kept) m) AS missing,
                (SELECT count(*) FROM (SELECT * FROM kept EXCEPT SELECT * FROM truth) e) AS extra",
    )
    .get_result(&mut app.conn())
    .unwrap();
    assert_eq!((differences.missing, differences.extra), (0, 0), "{when}");
}

/// The keys of a list sorted by referrals, computed from `customers` alone.
fn keys_by_referrals(app: &TestApp, filter: &str, ascending: bool, offset: i64, limit: i64) -> Vec<String> {
    let order = if ascending { "ASC" } else { "DESC" };
    diesel::sql_query(format!(
        "SELECT key FROM customers WHERE program_id = $1 AND {filter}
         ORDER BY referrals_count {order}, id {order} LIMIT $2 OFFSET $3"
    ))
    .bind::<BigInt, _>(app.default_program().id)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(offset)
    .load::<Key>(&mut app.conn())
    .unwrap()
    .into_iter()
    .map(|row| row.key)
    .collect()
}

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    key: String,
}

#[apply(integration_test!)]
async fn referral_order_follows_every_change() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    assert_standings_exact(&app, "empty");
    sign_up(
        &app,
        &[
            ("a@example.com", "aa", None),
            ("b@example.com", "bb", Some("aa")),
            ("c@example.com", "cc", Some("aa")),
            ("d@example.com", "dd", Some("bb")),
            ("e@example.com", "ee", None),
        ],
    )
    .await;
    assert_standings_exact(&app, "after signups");
    assert_eq!(app.post_form("/customers/cc/delete", &[]).await.status(), 303);
    assert_standings_exact(&app, "after a delete");
    assert_eq!(
        app.post_form(
            "/customers/ee/referrer",
            &[("referring_customer", "bb"), ("confirm", "1")],
        )
        .await
        .status(),
        303
    );
    assert_standings_exact(&app, "after a new referrer");
    assert_eq!(app.post_form("/customers/cc/restore", &[]).await.status(), 303);
    diesel::sql_query("UPDATE customers SET approved = FALSE WHERE key IN ('dd', 'ee')")
        .execute(&mut app.conn())
        .unwrap();
    assert_standings_exact(&app, "after a restore and approvals changed by hand");

    // More than the list counts one by one, with counts set by hand: the search and the
    // date range are answered through the standings too.
    bulk_insert(&app, "wide", "wide.test", 1_050);
    diesel::sql_query("UPDATE customers SET referrals_count = (id * 7919) % 13 WHERE key LIKE 'wide%'")
        .execute(&mut app.conn())
        .unwrap();
    diesel::sql_query("DELETE FROM customers WHERE key IN ('wide0003', 'wide0500')")
        .execute(&mut app.conn())
        .unwrap();
    assert_standings_exact(&app, "after a bulk insert, counts and deletes by hand");
    assert_tallies_exact(&app);
    let from = (chrono::Utc::now() - chrono::Duration::days(2)).format("%Y-%m-%d");
    let cases = [
        ("sort=referrals&dir=desc", "status = 'active'", false),
        ("sort=referrals&dir=asc", "status = 'active'", true),
        (
            "sort=referrals&dir=desc&refer_status=referred",
            "status = 'active' AND referrer_id IS NOT NULL",
            false,
        ),
        (
            "sort=referrals&dir=desc&approved=no",
            "status = 'active' AND NOT approved",
            false,
        ),
        ("sort=referrals&dir=desc&status=all", "TRUE", false),
        (
            "sort=referrals&dir=desc&q=wide.test",
            "status = 'active' AND email LIKE '%wide.test%'",
            false,
        ),
        (
            "sort=referrals&dir=asc&status=all&from=FROM",
            "created_at >= current_date - 2",
            true,
        ),
    ];
    for (query, truth, ascending) in cases {
        let query = query.replace("FROM", &from.to_string());
        let mut checked = 0;
        for page_number in [1, 3, 20] {
            // (A page past the end shows the last one; only pages inside the list here.)
            let expected = keys_by_referrals(&app, truth, ascending, (page_number - 1) * 50, 50);
            if expected.is_empty() {
                continue;
            }
            let path = format!("/customers?{query}&per_page=50&page={page_number}");
            let listed = listed_keys(&page(&app, &path).await);
            assert_eq!(listed, expected, "{path}");
            checked += 1;
        }
        assert!(checked > 0, "{query}");
    }
    // The dashboard's top referrers: the biggest counts among active customers.
    let dashboard = page(&app, "/").await;
    let top = keys_by_referrals(&app, "status = 'active' AND referrals_count > 0", false, 0, 1);
    assert!(
        dashboard.contains(&format!("/customers/{}", top[0])),
        "{dashboard}"
    );
}

/// A hand-run `TRUNCATE customers CASCADE` fires none of the triggers that keep the
/// tallies and standings; its own trigger empties them, and deep pages start over. The
/// audit log is left whole.
#[apply(integration_test!)]
async fn a_truncated_customers_table_leaves_no_counts_behind() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    sign_up(
        &app,
        &[("a@example.com", "aa", None), ("b@example.com", "bb", Some("aa"))],
    )
    .await;
    bulk_insert(&app, "t", "trunc.test", 600);
    // Deep pages by number take their marks.
    let before = listed_keys(&page(&app, "/customers?page=30").await);
    assert_eq!(before.len(), 15);
    let events = || -> i64 { audit_events::table.count().get_result(&mut app.conn()).unwrap() };
    let logged = events();
    assert!(logged >= 2, "the signups are logged");
    diesel::sql_query("TRUNCATE customers CASCADE")
        .execute(&mut app.conn())
        .unwrap();
    // `audit_events` keeps no foreign keys: it outlives what it names, and
    // shows such events without a link.
    assert_eq!(events(), logged);
    let log = page(&app, "/audit").await;
    assert!(log.contains("b@example.com"), "{log}");
    assert_tallies_exact(&app);
    assert_standings_exact(&app, "after TRUNCATE");
    assert!(page(&app, "/customers").await.contains("0 customers"));
    // New customers are counted from zero, and deep pages follow the new list.
    bulk_insert(&app, "n", "new.test", 500);
    assert_tallies_exact(&app);
    assert_standings_exact(&app, "after new customers");
    let deep = listed_keys(&page(&app, "/customers?page=30").await);
    assert_eq!(deep, keys_at(&app, 29 * 15, 15, true));
}

/// A referral link, a ledger entry and a retired key are filed under their customer's
/// program: the database refuses one under another program (one composite key checks the
/// customer and the program together, e.g. `referral_links_customer_fkey`), and one naming
/// no customer.
#[apply(integration_test!)]
async fn links_ledger_entries_and_old_keys_stay_in_their_customers_program() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    sign_up(&app, &[("a@example.com", "aa", None)]).await;
    let mut conn = app.conn();
    let home = app.default_program().id;
    let other: i64 = diesel::insert_into(schema::programs::table)
        .values((
            schema::programs::slug.eq("other"),
            schema::programs::name.eq("Other"),
            schema::programs::referral_base_url.eq("https://other.example"),
        ))
        .returning(schema::programs::id)
        .get_result(&mut conn)
        .unwrap();
    let customer: i64 = customers::table
        .filter(customers::key.eq("aa"))
        .select(customers::id)
        .first(&mut conn)
        .unwrap();
    let writes = [
        "INSERT INTO referral_links (program_id, customer_id, code) VALUES ($1, $2, 'elsewhere')",
        "INSERT INTO balance_transactions (program_id, customer_id, kind, amount, amount_units, is_currency)
         VALUES ($1, $2, 'credit', 5, 'USD', true)",
        "INSERT INTO retired_keys (program_id, key, customer_id) VALUES ($1, 'elsewhere', $2)",
    ];
    for write in writes {
        for (program, customer, what) in [
            (other, customer, "another program"),
            (home, customer + 1_000, "no customer"),
            (home + other + 1_000, customer, "no program"),
        ] {
            let refused = diesel::sql_query(write)
                .bind::<BigInt, _>(program)
                .bind::<BigInt, _>(customer)
                .execute(&mut conn);
            assert!(
                matches!(
                    refused,
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                        _
                    ))
                ),
                "{write} with {what}: {refused:?}"
            );
        }
        // Under the customer's own program it is taken.
        diesel::sql_query(write)
            .bind::<BigInt, _>(home)
            .bind::<BigInt, _>(customer)
            .execute(&mut conn)
            .unwrap_or_else(|error| panic!("{write}: {error}"));
    }
}

#[apply(integration_test!)]
async fn large_searches_show_an_estimate_and_say_so() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    bulk_insert(&app, "wide", "wide.test", 1_200);
    bulk_insert(&app, "narrow", "narrow.test", 3);

    // Few matches: counted exactly.
    let body = page(&app, "/customers?q=narrow.test").await;
    assert!(body.contains("3 customers match these filters"), "{body}");
    assert!(body.contains("Showing 1–3 of 3<"), "{body}");
    assert!(!body.contains("about"));

    // Many: an estimate, said to be one, never below what was counted.
    let body = page(&app, "/customers?q=wide.test").await;
    let marker = "<p class=\"subtitle\">about ";
    let at = body.find(marker).expect("the total says about") + marker.len();
    let estimate: i64 = body[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap();
    assert!(estimate > 1_000, "more than are counted one by one: {estimate}");
    assert!(body.contains("(estimated"), "{body}");
    assert!(body.contains("Showing 1–15 of about "), "{body}");
    assert_eq!(listed_keys(&body)[0], "wide1199", "newest first");
    // Without a known last page the pager ends in a gap and a Next link.
    assert!(link(&body, "Next ›").is_some());

    // Following the pages to the end finds the last row, and there is no Next.
    let last = page(&app, "/customers?q=wide.test&page=80").await;
    assert_eq!(
        listed_keys(&last),
        vec![
            "wide0014", "wide0013", "wide0012", "wide0011", "wide0010", "wide0009", "wide0008", "wide0007",
            "wide0006", "wide0005", "wide0004", "wide0003", "wide0002", "wide0001", "wide0000"
        ]
    );
    assert!(last.contains("Showing 1,186–1,200 of about"), "{last}");
}

#[apply(integration_test!)]
async fn far_page_links_continue_from_the_rows_shown() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    bulk_insert(&app, "k", "keyset.test", 1_500);

    // Page 70 by number (offset 1,035): its links beyond row 1,000 carry cursors.
    let body = page(&app, "/customers?page=70").await;
    let keys = listed_keys(&body);
    assert_eq!(keys.first().map(String::as_str), Some("k0464"));
    assert_eq!(keys.last().map(String::as_str), Some("k0450"));
    let next = link(&body, "Next ›").expect("a next link");
    assert!(next.starts_with("/customers?page=71&after=70_"), "{next}");
    let previous = link(&body, "‹ Previous").expect("a previous link");
    assert!(
        previous.starts_with("/customers?page=69&before=70_"),
        "{previous}"
    );

    // Following them gives exactly the neighbouring pages.
    let after = listed_keys(&page(&app, &next).await);
    assert_eq!(after.first().map(String::as_str), Some("k0449"));
    assert_eq!(after.len(), 15);
    let before = listed_keys(&page(&app, &previous).await);
    assert_eq!(before.first().map(String::as_str), Some("k0479"));
    assert_eq!(before.last().map(String::as_str), Some("k0465"));
    // Two pages on (a page-number link): skips one page from the cursor.
    let two_on = link(&body, "72").expect("a link to page 72");
    assert!(two_on.contains("after=70_"), "{two_on}");
    assert_eq!(listed_keys(&page(&app, &two_on).await)[0], "k0434");

    // Other sorts continue the same way; sorted by email they use page numbers only.
    let by_referrals = page(&app, "/customers?sort=referrals&dir=desc&page=70").await;
    let next = link(&by_referrals, "Next ›").unwrap();
    assert!(next.contains("after=70_"), "{next}");
    let continued = listed_keys(&page(&app, &next).await);
    let counted = listed_keys(&page(&app, "/customers?sort=referrals&dir=desc&page=71").await);
    assert_eq!(continued, counted);
    let by_email = page(&app, "/customers?sort=email&dir=asc&page=70").await;
    let next = link(&by_email, "Next ›").unwrap();
    assert_eq!(next, "/customers?sort=email&dir=asc&page=71");

    // A cursor that does not fit (wrong page, unknown customer) falls back to the number.
    let odd = listed_keys(&page(&app, "/customers?page=71&after=3_999999999").await);
    assert_eq!(odd, after);
    let odd = listed_keys(&page(&app, "/customers?page=71&after=70_999999999").await);
    assert_eq!(odd, after);
}

#[apply(integration_test!)]
async fn deep_pages_by_number_match_the_keyset_pages() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    bulk_insert(&app, "d", "deep.test", 1_010);
    // Every page by number (the second half is read from the end) against one walk of
    // Next links from page 1.
    let mut walked = Vec::new();
    let mut path = "/customers?per_page=50".to_string();
    while walked.len() < 30 {
        let body = page(&app, &path).await;
        walked.push(listed_keys(&body));
        match link(&body, "Next ›") {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(walked.len(), 21);
    for (index, keys) in walked.iter().enumerate() {
        let number = index + 1;
        let body = page(&app, &format!("/customers?per_page=50&page={number}")).await;
        assert_eq!(&listed_keys(&body), keys, "page {number}");
    }
    assert_eq!(
        walked[20],
        vec!["d0009", "d0008", "d0007", "d0006", "d0005", "d0004", "d0003", "d0002", "d0001", "d0000"]
    );
    let all: std::collections::HashSet<&String> = walked.iter().flatten().collect();
    assert_eq!(all.len(), 1_010, "every customer once");

    // The API's list pages the same way, with an exact total.
    let program = programs::find_by_slug(&mut app.conn(), "default").unwrap();
    let mut conn = app.conn();
    let list = CustomerList::default();
    let last = list_page(&mut conn, &list, program.id, &CustomerFilter::default(), 21, 50);
    assert_eq!(last.total, Total::Exact(1_010));
    assert_eq!(last.rows.len(), 10);
    assert_eq!(last.rows[0].key, "d0009");
}

/// Keys of the active customers at `offset..offset + limit` of the list by creation date
/// (newest first, or oldest first), straight from SQL: what a page must show.
fn keys_at(app: &TestApp, offset: i64, limit: i64, newest_first: bool) -> Vec<String> {
    let query = customers::table
        .filter(customers::program_id.eq(app.default_program().id))
        .filter(customers::status.eq("active"))
        .select(customers::key)
        .offset(offset)
        .limit(limit);
    let mut conn = app.conn();
    if newest_first {
        query
            .order((customers::created_at.desc(), customers::id.desc()))
            .load(&mut conn)
    } else {
        query
            .order((customers::created_at.asc(), customers::id.asc()))
            .load(&mut conn)
    }
    .unwrap()
}

#[apply(integration_test!)]
async fn deep_page_numbers_from_marks_follow_every_change() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let token = referdesk::domain::tokens::create(
        &mut app.conn(),
        app.default_program().id,
        "marks",
        &referdesk::domain::Actor::system(),
    )
    .unwrap()
    .1;
    bulk_insert(&app, "m", "marks.test", 2_600);
    // Which mark a page starts from is checked in `listing::page_marks`' own tests; here,
    // that the pages read from the marks are the right ones.
    let api = reqwest::Client::new();
    // Pages deep enough to start from a mark (MARK_EVERY customers apart), in both
    // halves of the list, by the dashboard and by the API.
    let check = |label: &'static str| {
        let app = &app;
        let api = &api;
        let token = &token;
        async move {
            for number in [7, 12, 26, 31, 40, 46] {
                let expected = keys_at(app, (number - 1) * 50, 50, true);
                let body = page(app, &format!("/customers?per_page=50&page={number}")).await;
                assert_eq!(listed_keys(&body), expected, "{label}: page {number}");
                let answer: serde_json::Value = api
                    .get(format!("{}/v1/customers?limit=50&page={number}", app.address))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let keys: Vec<String> = answer["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|customer| customer["key"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(keys, expected, "{label}: API page {number}");
            }
            // The oldest first, too.
            let expected = keys_at(app, 6 * 50, 50, false);
            let body = page(app, "/customers?per_page=50&page=7&sort=created&dir=asc").await;
            assert_eq!(listed_keys(&body), expected, "{label}: oldest first");
        }
    };
    check("first views").await;
    check("marks known").await;

    // Every way the list's order can change moves the pages with it.
    assert_eq!(
        app.post_form("/customers", &[("email", "new@marks.test"), ("key", "newest")])
            .await
            .status(),
        303
    );
    check("after a new customer").await;
    assert_eq!(app.post_form("/customers/m1500/delete", &[]).await.status(), 303);
    check("after a delete").await;
    assert_eq!(app.post_form("/customers/m1500/restore", &[]).await.status(), 303);
    check("after a restore").await;
    diesel::sql_query("UPDATE customers SET created_at = now() - interval '3 days' WHERE key = 'm2000'")
        .execute(&mut app.conn())
        .unwrap();
    check("after a creation time changed by hand").await;
    diesel::sql_query(
        "DELETE FROM referral_links WHERE customer_id IN (SELECT id FROM customers WHERE key = 'm0100')",
    )
    .execute(&mut app.conn())
    .unwrap();
    diesel::sql_query("DELETE FROM customers WHERE key = 'm0100'")
        .execute(&mut app.conn())
        .unwrap();
    check("after a row removed by hand").await;
}

#[apply(integration_test!)]
async fn estimated_list_past_its_end_shows_the_real_last_page() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    bulk_insert(&app, "far", "far.test", 1_100);
    let body = page(&app, "/customers?q=far.test&page=5000").await;
    assert_eq!(listed_keys(&body).len(), 5);
    assert!(body.contains("Showing 1,096–1,100 of 1,100<"), "{body}");
}

#[apply(integration_test!)]
async fn programs_changed_in_the_database_show_at_once() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    assert!(!page(&app, "/customers").await.contains("Second program"));
    // Written straight to the database (as another server would): the next page shows it.
    diesel::sql_query(
        "INSERT INTO programs (slug, name, referral_base_url) VALUES ('second', 'Second program', 'https://second.test/')",
    )
    .execute(&mut app.conn())
    .unwrap();
    assert!(page(&app, "/customers").await.contains("Second program"));
    diesel::sql_query("UPDATE programs SET name = 'Renamed program' WHERE slug = 'second'")
        .execute(&mut app.conn())
        .unwrap();
    let body = page(&app, "/").await;
    assert!(body.contains("Renamed program"), "{body}");
    assert!(!body.contains("Second program"));
}

#[apply(integration_test!)]
async fn a_connection_whose_server_went_away_is_not_handed_out_again() {
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let pid_of = |conn: &mut PgConnection| -> QueryResult<i32> {
        diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(conn)
            .map(|row| row.pid)
    };
    let url = fresh_database();
    let mut admin = PgConnection::establish(&url).unwrap();
    let pool = referdesk::db::build_pool(&url, 1);
    let first = pid_of(&mut pool.get().unwrap()).unwrap();
    // The server ends that connection; the pool does not know yet.
    diesel::sql_query(format!("SELECT pg_terminate_backend({first})"))
        .execute(&mut admin)
        .unwrap();
    // A connection that answered within the last second is handed out without a ping,
    // so this may fail once (a slower machine pings it and connects anew instead)...
    let _ = pid_of(&mut pool.get().unwrap());
    // ...but the ended connection is never handed out again.
    for _ in 0..3 {
        let next = pid_of(&mut pool.get().unwrap()).expect("a working connection");
        assert_ne!(next, first);
    }
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

fn setting(conn: &mut PgConnection, name: &str) -> String {
    diesel::sql_query("SELECT current_setting($1) AS value")
        .bind::<Text, _>(name)
        .get_result::<Setting>(conn)
        .unwrap()
        .value
}

fn plan_cache_mode(conn: &mut PgConnection) -> String {
    setting(conn, "plan_cache_mode")
}

/// Every pooled connection plans without parallel workers (see `db::SESSION_SETTINGS`),
/// also one opened after the first ones.
#[apply(integration_test!)]
async fn pooled_connections_plan_without_parallel_workers() {
    let app = TestApp::spawn().await;
    let (mut first, mut second) = (app.conn(), app.conn());
    assert_eq!(setting(&mut first, "max_parallel_workers_per_gather"), "0");
    assert_eq!(setting(&mut second, "max_parallel_workers_per_gather"), "0");
}

#[apply(integration_test!)]
async fn generic_plans_last_only_for_the_work_that_asked() {
    let app = TestApp::spawn().await;
    let mut conn = app.conn();
    assert_eq!(plan_cache_mode(&mut conn), "auto");
    let inside = referdesk::db::with_generic_plans(&mut conn, |conn| Ok(plan_cache_mode(conn))).unwrap();
    assert_eq!(inside, "force_generic_plan");
    assert_eq!(plan_cache_mode(&mut conn), "auto", "after the work");
    let failed: Result<(), _> =
        referdesk::db::with_generic_plans(&mut conn, |_| Err(referdesk::error::Error::NotFound));
    assert!(failed.is_err());
    assert_eq!(plan_cache_mode(&mut conn), "auto", "after failed work");
}

#[derive(QueryableByName)]
struct PreparedStatement {
    #[diesel(sql_type = Text)]
    statement: String,
}

/// A signup's writes — the customer, their link, the event and the referrer's count — go
/// as one statement, kept prepared on its connection, outside any transaction; each of
/// them is made, and when one part fails none is.
#[apply(integration_test!)]
async fn a_signups_writes_are_one_prepared_statement_all_or_nothing() {
    use referdesk::domain::customers::{self as domain, NewCustomer, ReferrerRef};
    use referdesk::domain::Actor;
    let app = TestApp::spawn().await;
    let mut conn = app.conn();
    let program = programs::find_by_slug(&mut conn, "default").unwrap();
    let new = |id: &str, referrer: Option<&str>| NewCustomer {
        external_id: Some(id.to_string()),
        referrer: referrer.map(|id| ReferrerRef::Id(id.to_string())),
        ..NewCustomer::default()
    };
    let referrer_key = domain::create(&mut conn, &program, &Actor::system(), new("ref", None))
        .unwrap()
        .key;
    // The customer, the referrer's count, the default link and the audit event: one
    // statement, prepared once (Diesel would send a `diesel::update` unprepared every time).
    let referrer_updates = |conn: &mut PgConnection| {
        let statements: Vec<String> = diesel::sql_query("SELECT statement FROM pg_prepared_statements")
            .load::<PreparedStatement>(conn)
            .unwrap()
            .into_iter()
            .map(|row| row.statement)
            .filter(|statement| statement.contains("SET referrals_count"))
            .collect();
        for statement in &statements {
            assert!(
                statement.contains("INSERT INTO customers")
                    && statement.contains("INSERT INTO audit_events")
                    && statement.contains("INSERT INTO referral_links"),
                "{statement}"
            );
        }
        statements.len()
    };
    assert_eq!(referrer_updates(&mut conn), 0);
    for n in 0..3 {
        let id = format!("friend-{n}");
        domain::create(&mut conn, &program, &Actor::system(), new(&id, Some("ref"))).unwrap();
        assert_eq!(referrer_updates(&mut conn), 1, "after signup {n}");
    }
    let count: i32 = customers::table
        .filter(customers::external_id.eq("ref"))
        .select(customers::referrals_count)
        .first(&mut conn)
        .unwrap();
    assert_eq!(count, 3);
    let friends: Vec<i64> = customers::table
        .filter(customers::external_id.like("friend-%"))
        .select(customers::id)
        .load(&mut conn)
        .unwrap();
    let default_links: i64 = referral_links::table
        .filter(referral_links::customer_id.eq_any(&friends))
        .filter(referral_links::is_default.eq(true))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(default_links, 3);
    let creations: i64 = audit_events::table
        .filter(audit_events::customer_id.assume_not_null().eq_any(&friends))
        .filter(audit_events::action.eq("customer.create"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(creations, 3);
    // The event records the customer as the row holds them, and who referred them.
    let (friend_id, friend_key): (i64, String) = customers::table
        .filter(customers::external_id.eq("friend-0"))
        .select((customers::id, customers::key))
        .first(&mut conn)
        .unwrap();
    let (subject_id, actor_label, after): (Option<String>, String, Option<serde_json::Value>) =
        audit_events::table
            .filter(audit_events::customer_id.eq(friend_id))
            .filter(audit_events::action.eq("customer.create"))
            .select((
                audit_events::subject_id,
                audit_events::actor_label,
                audit_events::after,
            ))
            .first(&mut conn)
            .unwrap();
    assert_eq!(subject_id, Some(friend_id.to_string()));
    assert_eq!(actor_label, "system");
    assert_eq!(
        after,
        Some(serde_json::json!({
            "id": "friend-0", "key": friend_key, "email": null, "name": null, "surname": null,
            "metadata": {}, "custom_fields": {}, "status": "active", "approved": true,
            "referring_customer": referrer_key,
        }))
    );

    // The event is written last here: when it fails, the customer, their link and the
    // referrer's count written before it in the same statement are not kept either.
    conn.batch_execute(
        "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused for the test'; END $$;
         CREATE TRIGGER refuse_event BEFORE INSERT ON audit_events
             FOR EACH ROW WHEN (NEW.actor_label = 'refused') EXECUTE FUNCTION refuse_event()",
    )
    .unwrap();
    let refused = Actor {
        label: "refused".to_string(),
        ..Actor::system()
    };
    let outcome = domain::create(&mut conn, &program, &refused, new("friend-refused", Some("ref")));
    assert!(outcome.is_err(), "{outcome:?}");
    let kept: i64 = customers::table
        .filter(customers::external_id.eq("friend-refused"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(kept, 0);
    let count: i32 = customers::table
        .filter(customers::external_id.eq("ref"))
        .select(customers::referrals_count)
        .first(&mut conn)
        .unwrap();
    assert_eq!(count, 3);
    let links: i64 = referral_links::table.count().get_result(&mut conn).unwrap();
    assert_eq!(links, 4);
    drop(conn);
    assert_standings_exact(&app, "after a refused signup");
    assert_tallies_exact(&app);
}

/// A page a short way into a list (page 3), and one just past a page mark (page 12 of 25,
/// after the mark at place 250), show the right customers, also once PostgreSQL reuses
/// their statements' plans (from the sixth execution on one connection).
#[apply(integration_test!)]
async fn pages_near_the_start_or_a_mark_show_the_right_rows_on_every_call() {
    let app = TestApp::spawn().await;
    bulk_insert(&app, "skip", "skip.test", 600);
    let mut conn = app.conn();
    let program = programs::find_by_slug(&mut conn, "default").unwrap();
    let list = CustomerList::default();
    let filter = CustomerFilter::default();
    for _ in 0..8 {
        for number in [3, 12] {
            let shown = list_page(&mut conn, &list, program.id, &filter, number, 25);
            let keys: Vec<String> = shown.rows.into_iter().map(|row| row.key).collect();
            assert_eq!(keys, keys_at(&app, (number - 1) * 25, 25, true), "page {number}");
        }
    }
}

/// A partial email search finds exactly what contains the whole term, with an exact total,
/// whether its term is rare (one holder) or in every email, also once PostgreSQL reuses
/// its statements' plans.
#[apply(integration_test!)]
async fn partial_email_searches_find_exactly_their_matches_on_every_call() {
    let app = TestApp::spawn().await;
    diesel::sql_query(
        "INSERT INTO customers (program_id, external_id, key, email)
         SELECT $1, 'seed-' || n, 'k' || n, 'ada.' || n || '@example.org'
         FROM generate_series(1, 600) AS n",
    )
    .bind::<BigInt, _>(app.default_program().id)
    .execute(&mut app.conn())
    .unwrap();
    let mut conn = app.conn();
    let program = app.default_program().id;
    let list = CustomerList::default();
    let search = |conn: &mut PgConnection, term: &str| {
        let filter = CustomerFilter {
            search: Some(term.to_string()),
            ..CustomerFilter::default()
        };
        let found = list_page(conn, &list, program, &filter, 1, 25);
        let keys: Vec<String> = found.rows.into_iter().map(|row| row.key).collect();
        (found.total, keys)
    };
    for _ in 0..8 {
        assert_eq!(
            search(&mut conn, "ada.123"),
            (Total::Exact(1), vec!["k123".to_string()])
        );
        let (total, keys) = search(&mut conn, "example.org");
        assert_eq!(total, Total::Exact(600));
        assert_eq!(keys.len(), 25);
    }
}
