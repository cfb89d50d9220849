//! Customers in the dashboard: list, search, filters, sort, pagination, detail, create,
//! edit, actions, referral links and the public redirect, CSV export, exact counts.

use diesel::prelude::*;
use macro_rules_attribute::apply;
use referdesk::db::schema::{audit_events, customers, referral_clicks, referral_links, retired_keys};
use referdesk::domain::customers::listing::{CustomerFilter, CustomerList};
use referdesk::domain::customers::{self as domain, Customer, CustomerInput, NewCustomer};
use referdesk::domain::programs::{self};
use referdesk::domain::team::Role;
use referdesk::domain::Actor;

use crate::helpers::{assert_refused, list_page, location, TestApp};
use crate::integration_test;

// --- helpers -------------------------------------------------------------------------

fn input(email: &str) -> CustomerInput {
    CustomerInput {
        email: Some(email.to_string()),
        ..Default::default()
    }
}

fn make_named(app: &TestApp, email: &str, key: &str, referrer_key: Option<&str>) -> Customer {
    app.create_customer(CustomerInput {
        email: Some(email.to_string()),
        key: Some(key.to_string()),
        referrer_key: referrer_key.map(str::to_string),
        ..Default::default()
    })
}

fn reload(app: &TestApp, id: i64) -> Customer {
    domain::find(&mut app.conn(), app.default_program().id, id).expect("customer")
}

/// `value` as the templates escape it inside HTML.
fn attr(value: &str) -> String {
    value
        .replace('&', "&#38;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
}

/// Keys of the customers listed on a list page, in order.
fn listed_keys(body: &str) -> Vec<String> {
    let tbody = match body.find("<tbody>") {
        Some(at) => &body[at..],
        None => return Vec::new(),
    };
    tbody
        .split("<td data-label=\"Key\" class=\"mono\">")
        .skip(1)
        .map(|rest| rest[..rest.find('<').unwrap()].to_string())
        .collect()
}

async fn list(app: &TestApp, query: &str) -> Vec<String> {
    let (status, body) = app.browser.get_html(&format!("/customers{query}")).await;
    assert_eq!(status, 200, "GET /customers{query}: {body}");
    listed_keys(&body)
}

fn audit_count(app: &TestApp, action: &str, customer_id: i64) -> i64 {
    audit_events::table
        .filter(audit_events::action.eq(action))
        .filter(audit_events::customer_id.eq(customer_id))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

/// Every customer's stored count equals a fresh COUNT(*) of its active referrals.
fn assert_counts_exact(app: &TestApp) {
    let mut conn = app.conn();
    let stored: Vec<(i64, i32)> = customers::table
        .select((customers::id, customers::referrals_count))
        .load(&mut conn)
        .unwrap();
    for (id, count) in stored {
        let actual: i64 = customers::table
            .filter(customers::referrer_id.eq(id))
            .filter(customers::status.eq("active"))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(i64::from(count), actual, "referrals_count of customer {id}");
    }
    // The list's total (from customer_tallies) agrees with a fresh count too.
    let listed = list_page(
        &mut conn,
        &CustomerList::default(),
        app.default_program().id,
        &CustomerFilter::default(),
        1,
        15,
    )
    .total;
    let active: i64 = customers::table
        .filter(customers::status.eq("active"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(
        listed,
        domain::Total::Exact(active),
        "the list's total of active customers"
    );
}

// --- list ------------------------------------------------------------------------------

#[apply(integration_test!)]
async fn list_paginates_and_page_links_keep_every_filter() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    for i in 0..40 {
        make_named(
            &app,
            &format!("user{i:02}@acme.test"),
            &format!("key{i:02}"),
            None,
        );
    }
    let (status, body) = app.browser.get_html("/customers").await;
    assert_eq!(status, 200);
    assert_eq!(listed_keys(&body).len(), 15, "15 per page by default");
    assert!(body.contains("Showing 1–15 of 40"));
    // Newest first by default.
    assert_eq!(listed_keys(&body)[0], "key39");

    let query = "?q=acme&status=all&approved=yes&refer_status=non_referred&from=2000-01-01&sort=email&dir=asc&per_page=15";
    let (status, body) = app.browser.get_html(&format!("/customers{query}")).await;
    assert_eq!(status, 200);
    assert_eq!(listed_keys(&body)[0], "key00");
    let next = "/customers?q=acme&refer_status=non_referred&approved=yes&from=2000-01-01&status=all&sort=email&dir=asc&page=2";
    assert!(
        body.contains(&format!("href=\"{}\"", attr(next))),
        "next page keeps every filter: {body}"
    );
    let (_, page3) = app
        .browser
        .get_html("/customers?q=acme&refer_status=non_referred&approved=yes&from=2000-01-01&status=all&sort=email&dir=asc&page=3")
        .await;
    assert_eq!(
        listed_keys(&page3),
        (30..40).map(|i| format!("key{i:02}")).collect::<Vec<_>>()
    );
    assert!(page3.contains("Showing 31–40 of 40"));
    // The sort links keep the filters too and start again on page 1.
    let sort = "/customers?q=acme&refer_status=non_referred&approved=yes&from=2000-01-01&status=all&sort=referrals&dir=desc";
    assert!(page3.contains(&format!("href=\"{}\"", attr(sort))));
}

#[apply(integration_test!)]
async fn odd_page_numbers_never_fail() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    for i in 0..20 {
        make_named(&app, &format!("p{i}@example.com"), &format!("p{i:02}"), None);
    }
    for page in [
        "0",
        "-1",
        "abc",
        "1.5",
        "99999999999999999999999",
        "9223372036854775807",
        "%00",
    ] {
        let (status, body) = app.browser.get_html(&format!("/customers?page={page}")).await;
        assert_eq!(status, 200, "page={page}");
        assert!(!listed_keys(&body).is_empty(), "page={page} shows rows");
    }
    // Past the end: the last page.
    let keys = list(&app, "?page=5").await;
    assert_eq!(keys.len(), 5);
}

#[apply(integration_test!)]
async fn search_finds_partial_emails_names_keys_and_ids() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    app.create_customer(CustomerInput {
        email: Some("Ada@ACME.io".into()),
        name: Some("Ada".into()),
        surname: Some("Lovelace".into()),
        key: Some("ada-key".into()),
        id: Some("acct-1001".into()),
        ..Default::default()
    });
    make_named(&app, "grace@acme.io", "grace-key", None);
    make_named(&app, "bob@other.org", "bob-key", None);

    let mut found = list(&app, "?q=%40acme").await;
    found.sort();
    assert_eq!(
        found,
        vec!["ada-key", "grace-key"],
        "partial email, case-insensitive"
    );
    assert_eq!(list(&app, "?q=LOVELACE").await, vec!["ada-key"], "surname");
    assert_eq!(
        list(&app, "?q=ada+love").await,
        vec!["ada-key"],
        "name and surname"
    );
    assert_eq!(list(&app, "?q=BOB-K").await, vec!["bob-key"], "partial key");
    assert_eq!(list(&app, "?q=acct-10").await, vec!["ada-key"], "partial id");
    assert!(list(&app, "?q=nobody").await.is_empty());

    let (_, body) = app.browser.get_html("/customers?q=LOVELACE").await;
    assert!(
        body.contains("1 customer matches these filters"),
        "singular verb for one"
    );
    let (_, body) = app.browser.get_html("/customers?q=%40acme").await;
    assert!(
        body.contains("2 customers match these filters"),
        "plural verb for two"
    );
}

/// A partial email search looks up only its rare part in the trigram index when the
/// sample of emails says that is cheaper (which part: `listing::email_samples`' own tests),
/// and still finds exactly what contains the whole term: not the rows holding just the
/// part, `_` taken literally, any case — in the list and in the export.
#[apply(integration_test!)]
async fn a_search_by_its_rare_part_finds_exactly_the_whole_terms_matches() {
    use diesel::sql_types::{BigInt, Text};
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let program_id = programs::find_by_slug(&mut app.conn(), "default").unwrap().id;
    // 20,000 emails starting with "linus": its trigrams are in every one of them.
    diesel::sql_query(
        "INSERT INTO customers (program_id, external_id, key, email)
         SELECT $1, 'bulk-' || n, 'bulk' || n, 'linus' || n || '@example.org'
         FROM generate_series(1, 20000) AS n",
    )
    .bind::<BigInt, _>(program_id)
    .execute(&mut app.conn())
    .unwrap();
    for (key, email) in [
        ("match", "linus.25000@y.test"),
        ("longer", "xlinus.250001@w.test"),
        ("caps", "Linus.25000@CAPS.test"),
        ("part-only", "ada.25000@x.test"),
        ("underscore", "linus_25000@z.test"),
        ("one-word", "linus25000@d.test"),
    ] {
        make_named(&app, email, key, None);
    }

    let mut found = list(&app, "?q=linus.25000").await;
    found.sort();
    assert_eq!(found, vec!["caps", "longer", "match"]);
    assert_eq!(list(&app, "?q=LINUS_25000").await, vec!["underscore"]);
    assert_eq!(list(&app, "?q=linus25000").await, vec!["one-word"]);
    assert_eq!(list(&app, "?q=s.2500").await.len(), 3);
    let export = app
        .get("/customers/export.csv?q=linus.25000")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(export.lines().count(), 4, "{export}");
    assert!(!export.contains("part-only") && !export.contains("underscore"));

    // The same matches as the whole term looked up whole, in the export's walk.
    #[derive(QueryableByName)]
    struct Key {
        #[diesel(sql_type = Text)]
        key: String,
    }
    let containing = |term: &str| -> Vec<String> {
        diesel::sql_query(
            "SELECT key FROM customers WHERE status = 'active' AND (
                 strpos(lower(email), lower($1)) > 0 OR strpos(lower(key), lower($1)) > 0
                 OR strpos(lower(external_id), lower($1)) > 0
                 OR strpos(lower(coalesce(name, '') || ' ' || coalesce(surname, '')), lower($1)) > 0)
             ORDER BY key",
        )
        .bind::<Text, _>(term)
        .load::<Key>(&mut app.conn())
        .unwrap()
        .into_iter()
        .map(|row| row.key)
        .collect()
    };
    let customer_list = CustomerList::default();
    for term in [
        "linus.25000",
        "LINUS_25000",
        "us.250",
        "ada.25000",
        "nobody.25000",
    ] {
        let filter = CustomerFilter {
            search: Some(term.into()),
            ..CustomerFilter::default()
        };
        let mut walk = customer_list.export(program_id, filter);
        let mut exported: Vec<String> = walk
            .next_batch(&mut app.conn(), 100)
            .unwrap()
            .into_iter()
            .map(|row| row.key)
            .collect();
        exported.sort();
        assert_eq!(exported, containing(term), "{term}");
    }
}

#[apply(integration_test!)]
async fn search_takes_wildcards_quotes_and_unicode_literally() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    make_named(&app, "plain@example.com", "plain", None);
    make_named(&app, "under_score@example.com", "under_score", None);
    app.create_customer(CustomerInput {
        email: Some("zoe@example.com".into()),
        name: Some("Zoë".into()),
        surname: Some("O'Brien".into()),
        key: Some("zoe".into()),
        ..Default::default()
    });
    assert!(list(&app, "?q=%25").await.is_empty(), "% is literal");
    assert_eq!(list(&app, "?q=_").await, vec!["under_score"], "_ is literal");
    assert_eq!(list(&app, "?q=o%27brien").await, vec!["zoe"], "quotes");
    assert_eq!(list(&app, "?q=Zo%C3%AB").await, vec!["zoe"], "unicode");
    for odd in [
        "%27%3B+DROP+TABLE+customers%3B--",
        "%3Cscript%3E",
        "%F0%9F%98%80",
        "%5C",
        "%00",
    ] {
        let (status, body) = app.browser.get_html(&format!("/customers?q={odd}")).await;
        assert_eq!(status, 200, "q={odd}");
        assert!(!body.contains("<script>"), "search term is escaped");
    }
    assert_eq!(list(&app, "").await.len(), 3, "nothing was dropped");
}

/// A term with a character plain ids (names) never hold is looked up only among the rows
/// the partial indexes list as unusual (the SQL functions `customer_id_is_unusual` and
/// `customer_name_is_unusual`); those tests must agree with the server's idea of "plain", or
/// such customers could not be found at all.
#[apply(integration_test!)]
async fn unusual_ids_and_names_are_found_by_their_unusual_characters() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    for (id, name, surname, key) in [
        ("acct.7", "Ada", "Lovelace", "dotted-id"),
        ("ada@corp.example", "Ada", "Byron", "email-as-id"),
        ("naïve-7", "Grace", "Hopper", "accented-id"),
        ("acct-7", "J. R.", "Smith", "dotted-name"),
        ("acct-8", "Zoë", "Brontë", "accented-name"),
        ("acct-9", "Anne-Marie", "O'Neil", "plain-name"),
    ] {
        app.create_customer(CustomerInput {
            email: Some(format!("{key}@example.com")),
            name: Some(name.into()),
            surname: Some(surname.into()),
            key: Some(key.into()),
            id: Some(id.into()),
            ..Default::default()
        });
    }
    for (query, expected) in [
        ("acct.7", vec!["dotted-id"]),
        ("T.7", vec!["dotted-id"]),
        ("%40CORP", vec!["email-as-id"]),
        ("%C3%AFve", vec!["accented-id"]),
        ("j.+r.+sm", vec!["dotted-name"]),
        ("%C3%AB+br", vec!["accented-name"]),
        ("%C3%AB", vec!["accented-name"]),
        ("anne-marie+o%27n", vec!["plain-name"]),
        ("acct-", vec!["dotted-name", "accented-name", "plain-name"]),
    ] {
        let mut found = list(&app, &format!("?q={query}")).await;
        found.sort();
        let mut expected: Vec<&str> = expected;
        expected.sort();
        assert_eq!(found, expected, "q={query}");
    }
}

/// A term holding an address is looked up by the email's reversed local part (a btree
/// range) and domain; it must find exactly what "the email contains the term" finds, also
/// once PostgreSQL reuses the statement's generic plan.
#[apply(integration_test!)]
async fn whole_address_search_finds_what_contains_would() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    for (email, key) in [
        ("Ada_1@Acme.io", "exact"),
        ("xada_1@acme.io.uk", "longer-both-ways"),
        ("bada_1@acme.iot", "longer-domain"),
        ("adax1@acme.io", "underscore-is-literal"),
        ("ada_10@acme.io", "local-goes-on"),
        ("ada_1@acme-io.com", "other-domain"),
        ("50%off@deals.io", "percent"),
        ("5x0%off@deals.io", "percent-elsewhere"),
        ("~ada_1@acme.io", "tilde"),
    ] {
        make_named(&app, email, key, None);
    }
    let contains = |term: &str| -> Vec<String> {
        let mut keys: Vec<String> = customers::table
            .filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("strpos(lower(email), lower(")
                    .bind::<diesel::sql_types::Text, _>(term.to_string())
                    .sql(")) > 0"),
            )
            .select(customers::key)
            .load(&mut app.conn())
            .unwrap();
        keys.sort();
        keys
    };
    for (term, query) in [
        ("ADA_1@acme.IO", "ADA_1%40acme.IO"),
        ("50%off@deals.io", "50%25off%40deals.io"),
        ("0%off@deals", "0%25off%40deals"),
        ("1@acme.io", "1%40acme.io"),
    ] {
        let expected = contains(term);
        assert!(!expected.is_empty(), "{term} finds someone");
        // Enough times for every pooled connection to switch to the reusable plan.
        for _ in 0..25 {
            let mut found = list(&app, &format!("?q={query}")).await;
            found.sort();
            assert_eq!(found, expected, "q={term}");
        }
    }
    assert_eq!(
        contains("ADA_1@acme.IO"),
        vec!["exact", "longer-both-ways", "longer-domain", "tilde"]
    );
}

#[apply(integration_test!)]
async fn filters_by_refer_status_status_approved_and_dates() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    let referrer = make_named(&app, "ref@example.com", "referrer", None);
    let referred = make_named(&app, "friend@example.com", "friend", Some("referrer"));
    let gone = make_named(&app, "gone@example.com", "gone", None);
    domain::delete(&mut app.conn(), &app.default_program(), &Actor::system(), gone.id).unwrap();
    domain::set_approved(
        &mut app.conn(),
        &app.default_program(),
        &Actor::system(),
        referred.id,
        false,
    )
    .unwrap();
    diesel::update(customers::table.find(referrer.id))
        .set(customers::created_at.eq(chrono::Utc::now() - chrono::Duration::days(40)))
        .execute(&mut app.conn())
        .unwrap();

    assert_eq!(list(&app, "?refer_status=referred").await, vec!["friend"]);
    assert_eq!(list(&app, "?refer_status=non_referred").await, vec!["referrer"]);
    let mut default = list(&app, "").await;
    default.sort();
    assert_eq!(default, vec!["friend", "referrer"], "active by default");
    assert_eq!(list(&app, "?status=deleted").await, vec!["gone"]);
    assert_eq!(list(&app, "?status=all").await.len(), 3);
    assert_eq!(list(&app, "?approved=no").await, vec!["friend"]);
    assert_eq!(list(&app, "?approved=yes").await, vec!["referrer"]);
    let recent = (chrono::Utc::now() - chrono::Duration::days(10)).format("%Y-%m-%d");
    assert_eq!(list(&app, &format!("?from={recent}")).await, vec!["friend"]);
    assert_eq!(list(&app, &format!("?to={recent}")).await, vec!["referrer"]);
    let today = chrono::Utc::now().format("%Y-%m-%d");
    assert_eq!(
        list(&app, &format!("?from={today}&to={today}&status=all"))
            .await
            .len(),
        2,
        "the end day is included"
    );
}

#[apply(integration_test!)]
async fn sorts_by_referrals_and_combines_with_filters() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    make_named(&app, "one@acme.io", "one", None);
    make_named(&app, "two@acme.io", "two", None);
    make_named(&app, "three@other.io", "three", None);
    for i in 0..2 {
        make_named(&app, &format!("t{i}@x.io"), &format!("t{i}"), Some("two"));
    }
    for i in 0..3 {
        make_named(&app, &format!("h{i}@x.io"), &format!("h{i}"), Some("three"));
    }
    make_named(&app, "o0@x.io", "o0", Some("one"));
    let keys = list(&app, "?sort=referrals&dir=desc&refer_status=non_referred").await;
    assert_eq!(keys, vec!["three", "two", "one"]);
    let keys = list(&app, "?sort=referrals&dir=asc&refer_status=non_referred").await;
    assert_eq!(keys, vec!["one", "two", "three"]);
    let keys = list(&app, "?q=acme&sort=referrals&dir=desc").await;
    assert_eq!(keys, vec!["two", "one"], "search + sort");
    let keys = list(&app, "?q=acme&sort=email&dir=desc").await;
    assert_eq!(keys, vec!["two", "one"]);
    let keys = list(&app, "?sort=name&dir=asc&q=acme").await;
    assert_eq!(keys.len(), 2);
}

#[apply(integration_test!)]
async fn per_page_is_clamped() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    for i in 0..60 {
        make_named(&app, &format!("pp{i}@example.com"), &format!("pp{i:02}"), None);
    }
    assert_eq!(list(&app, "?per_page=50").await.len(), 50);
    assert_eq!(list(&app, "?per_page=9999").await.len(), 60, "clamped to 250");
    assert_eq!(list(&app, "?per_page=20").await.len(), 15, "clamped down to 15");
    assert_eq!(list(&app, "?per_page=-5").await.len(), 15);
    assert_eq!(list(&app, "?per_page=lots").await.len(), 15);
}

#[apply(integration_test!)]
async fn empty_list_says_what_to_do() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let (status, body) = app.browser.get_html("/customers").await;
    assert_eq!(status, 200);
    assert!(body.contains("No customers in Default program yet."));
    assert!(body.contains("href=\"/customers/new\""));
    let (_, body) = app.browser.get_html("/customers?q=zzz").await;
    assert!(body.contains("No customers match these filters."));
}

// --- create -----------------------------------------------------------------------------

#[apply(integration_test!)]
async fn create_with_referrer_counts_the_referral() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let referrer = make_named(&app, "boss@example.com", "boss", None);

    // By key.
    let response = app
        .post_form(
            "/customers",
            &[
                ("email", "new@example.com"),
                ("name", "New"),
                ("surname", "Person"),
                ("key", "newbie"),
                ("id", "acct-77"),
                ("metadata.date_of_birth", "1990-05-17"),
                ("referring_customer", "boss"),
                ("custom_fields[0][key]", "plan"),
                ("custom_fields[0][value]", "pro"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/customers/newbie");
    let (_, body) = app.browser.get_html("/customers/newbie").await;
    assert!(body.contains("Customer New Person created."));
    assert!(body.contains("href=\"/customers/boss\""), "referrer is linked");
    // By email, case-insensitively.
    let response = app
        .post_form(
            "/customers",
            &[
                ("email", "second@example.com"),
                ("referring_customer", "BOSS@example.com"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);

    assert_eq!(reload(&app, referrer.id).referrals_count, 2);
    let created = domain::find_by_key(&mut app.conn(), app.default_program().id, "newbie").unwrap();
    assert_eq!(created.referrer_id, Some(referrer.id));
    assert_eq!(created.external_id, "acct-77");
    assert_eq!(created.metadata["date_of_birth"], "1990-05-17");
    assert_eq!(created.custom_fields["plan"], "pro");
    assert!(created.approved, "approved unless the program requires approval");
    assert_eq!(audit_count(&app, "customer.create", created.id), 1);

    let (_, body) = app.browser.get_html("/customers/boss").await;
    assert!(
        body.contains("href=\"/customers/newbie\""),
        "referral listed on the referrer's page"
    );
    assert!(body.contains("2 referrals"));
}

#[apply(integration_test!)]
async fn create_with_unknown_referrer_changes_nothing() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let response = app
        .post_form(
            "/customers",
            &[("email", "orphan@example.com"), ("referring_customer", "ghost")],
        )
        .await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(
        body.contains(&attr(
            "No customer with the key or email \"ghost\" in this program."
        )),
        "{body}"
    );
    assert!(body.contains("value=\"orphan@example.com\""));
    assert!(body.contains("value=\"ghost\""));
    // A referrer that cannot exist in any form (NUL) is the same clear message.
    let response = app
        .post_form(
            "/customers",
            &[("email", "orphan@example.com"), ("referring_customer", "gh\0st")],
        )
        .await;
    assert_eq!(response.status(), 422);
    let count: i64 = customers::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(count, 0);

    // The same rule for the API's input: an unknown referrer by id is a field error.
    let error = domain::create(
        &mut app.conn(),
        &app.default_program(),
        &Actor::system(),
        NewCustomer::parse(CustomerInput {
            referrer_id: Some("nope".into()),
            referrer_key: Some("also-nope".into()),
            ..Default::default()
        })
        .unwrap(),
    )
    .unwrap_err();
    let fields = error.field_errors().expect("a field error");
    assert!(
        fields["referring_customer.id"][0].contains("\"nope\""),
        "id wins over key"
    );
}

#[apply(integration_test!)]
async fn blank_key_and_id_are_generated() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let response = app.post_form("/customers", &[("email", "gen@example.com")]).await;
    assert_eq!(response.status(), 303);
    let second = app.create_customer(input("gen2@example.com"));
    let first = domain::find_by_ident(&mut app.conn(), app.default_program().id, "gen@example.com").unwrap();
    for customer in [&first, &second] {
        assert_eq!(customer.key.len(), 10);
        assert!(customer
            .key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_eq!(customer.external_id.len(), 10);
    }
    assert_ne!(first.key, second.key);
    assert_eq!(location(&response), format!("/customers/{}", first.key));
    let code: String = referral_links::table
        .filter(referral_links::customer_id.eq(first.id))
        .filter(referral_links::is_default.eq(true))
        .select(referral_links::code)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(code, first.key, "the default link's code is the key");
}

#[apply(integration_test!)]
async fn invalid_input_rerenders_with_typed_values() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let response = app
        .post_form(
            "/customers",
            &[
                ("email", "not an email"),
                ("name", "<b>Ada</b>"),
                ("key", "bad key!"),
                ("metadata.date_of_birth", "2999-01-01"),
                ("custom_fields[0][key]", ""),
                ("custom_fields[0][value]", "orphan value"),
                ("surname", "nul\0byte"),
                ("id", "tab\tid"),
            ],
        )
        .await;
    let body = assert_refused(
        response,
        &[
            "Enter a valid email address.",
            "Use 1 to 64 letters, digits",
            "Enter a real date in the past as YYYY-MM-DD.",
            "a field name.",
            "without control characters.",
        ],
    )
    .await;
    assert!(body.contains("value=\"not an email\""));
    assert!(body.contains(&format!("value=\"{}\"", attr("<b>Ada</b>"))));
    assert!(!body.contains("<b>Ada</b>"), "escaped");
    assert!(body.contains("value=\"orphan value\""));
    let count: i64 = customers::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(count, 0);
}

// --- edit -------------------------------------------------------------------------------

#[apply(integration_test!)]
async fn edit_with_invalid_email_rerenders_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let customer = make_named(&app, "keep@example.com", "keeper", None);
    let (status, body) = app.browser.get_html("/customers/keeper/edit").await;
    assert_eq!(status, 200);
    assert!(body.contains("value=\"keep@example.com\""));
    let response = app
        .post_form(
            "/customers/keeper/edit",
            &[
                ("email", "broken@"),
                ("name", "Typed Name"),
                ("surname", ""),
                ("key", "keeper"),
                ("metadata.date_of_birth", ""),
            ],
        )
        .await;
    let body = assert_refused(response, &["Enter a valid email address."]).await;
    assert!(body.contains("value=\"broken@\""));
    assert!(body.contains("value=\"Typed Name\""), "typed values are kept");
    let after = reload(&app, customer.id);
    assert_eq!(after.email.as_deref(), Some("keep@example.com"));
    assert_eq!(after.name, None);
    assert_eq!(audit_count(&app, "customer.update", customer.id), 0);
}

#[apply(integration_test!)]
async fn duplicate_email_is_refused_case_insensitively() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    make_named(&app, "Taken@Example.com", "first", None);
    let second = make_named(&app, "free@example.com", "second", None);

    let response = app
        .post_form("/customers", &[("email", "taken@EXAMPLE.com"), ("key", "third")])
        .await;
    assert_refused(response, &["A customer with this email already exists."]).await;

    let response = app
        .post_form(
            "/customers/second/edit",
            &[
                ("email", "TAKEN@example.com"),
                ("key", "second"),
                ("name", "Changed"),
            ],
        )
        .await;
    let body = assert_refused(response, &["A customer with this email already exists."]).await;
    assert!(body.contains("value=\"TAKEN@example.com\""));
    let after = reload(&app, second.id);
    assert_eq!(after.email.as_deref(), Some("free@example.com"));
    assert_eq!(after.name, None, "nothing changed");

    // Duplicate key and id are refused next to their fields, all at once.
    let response = app
        .post_form(
            "/customers",
            &[
                ("email", "x@example.com"),
                ("key", "first"),
                ("id", &second.external_id),
            ],
        )
        .await;
    assert_refused(
        response,
        &[
            "This key is already taken by another customer.",
            "A customer with this id already exists.",
        ],
    )
    .await;
    let count: i64 = customers::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(count, 2);
}

#[apply(integration_test!)]
async fn edit_saves_every_field_and_records_before_and_after() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let customer = app.create_customer(CustomerInput {
        email: Some("old@example.com".into()),
        key: Some("editme".into()),
        custom_fields: Some(vec![("plan".into(), "basic".into()), ("team".into(), "a".into())]),
        ..Default::default()
    });
    let response = app
        .post_form(
            "/customers/editme/edit",
            &[
                ("email", "new@example.com"),
                ("name", "Grace"),
                ("surname", "Hopper"),
                ("key", "editme"),
                ("metadata.date_of_birth", "1906-12-09"),
                ("custom_fields[0][key]", "plan"),
                ("custom_fields[0][value]", "pro"),
                ("custom_fields[1][key]", ""),
                ("custom_fields[1][value]", ""),
                ("custom_fields[2][key]", "seats"),
                ("custom_fields[2][value]", "5"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let after = reload(&app, customer.id);
    assert_eq!(after.email.as_deref(), Some("new@example.com"));
    assert_eq!(after.name.as_deref(), Some("Grace"));
    assert_eq!(after.surname.as_deref(), Some("Hopper"));
    assert_eq!(after.metadata["date_of_birth"], "1906-12-09");
    assert_eq!(
        after.custom_fields,
        serde_json::json!({"plan": "pro", "seats": "5"})
    );
    let (before, after_json): (Option<serde_json::Value>, Option<serde_json::Value>) = audit_events::table
        .filter(audit_events::action.eq("customer.update"))
        .filter(audit_events::customer_id.eq(customer.id))
        .select((audit_events::before, audit_events::after))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(before.unwrap()["email"], "old@example.com");
    assert_eq!(after_json.unwrap()["email"], "new@example.com");
    let (_, body) = app.browser.get_html("/customers/editme").await;
    assert!(body.contains("Customer saved."));
    assert!(body.contains("1906-12-09"));
    assert!(body.contains("customer.update"), "activity panel");
    assert!(body.contains("old@example.com"), "activity shows the old value");
}

#[apply(integration_test!)]
async fn key_change_moves_the_default_link_and_old_links_still_work() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let customer = make_named(&app, "mover@example.com", "oldkey", None);
    let response = app
        .post_form(
            "/customers/oldkey/edit",
            &[("email", "mover@example.com"), ("key", "newkey")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/customers/newkey");
    let codes: Vec<String> = referral_links::table
        .filter(referral_links::customer_id.eq(customer.id))
        .filter(referral_links::is_default.eq(true))
        .select(referral_links::code)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(codes, vec!["newkey"]);
    let retired: Vec<(String, i64)> = retired_keys::table
        .select((retired_keys::key, retired_keys::customer_id))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(retired, vec![("oldkey".to_string(), customer.id)]);

    let visitor = app.new_browser();
    for code in ["oldkey", "newkey"] {
        let response = visitor.get(&format!("/r/default/{code}")).await;
        assert_eq!(response.status(), 302, "/r/default/{code}");
        assert_eq!(location(&response), "https://example.com/?ref=newkey");
    }
    let (status, _) = app.browser.get_html("/customers/oldkey").await;
    assert_eq!(status, 404);
    let (_, body) = app.browser.get_html("/customers/newkey").await;
    assert!(body.contains("/r/default/newkey"));
    assert!(body.contains("https://example.com/?ref=newkey"));

    // Taking the old key back is allowed for the same customer.
    let response = app
        .post_form(
            "/customers/newkey/edit",
            &[("email", "mover@example.com"), ("key", "oldkey")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(reload(&app, customer.id).key, "oldkey");
}

#[apply(integration_test!)]
async fn retired_key_of_another_customer_cannot_be_reused() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    make_named(&app, "a@example.com", "shared", None);
    app.post_form(
        "/customers/shared/edit",
        &[("email", "a@example.com"), ("key", "a-new")],
    )
    .await;
    let other = make_named(&app, "b@example.com", "bkey", None);
    let response = app
        .post_form(
            "/customers/bkey/edit",
            &[("email", "b@example.com"), ("key", "shared")],
        )
        .await;
    assert_refused(response, &["cannot be reused"]).await;
    assert_eq!(reload(&app, other.id).key, "bkey");
    let response = app
        .post_form("/customers", &[("email", "c@example.com"), ("key", "shared")])
        .await;
    assert_eq!(response.status(), 422);
}

// --- actions ----------------------------------------------------------------------------

#[apply(integration_test!)]
async fn delete_and_restore_adjust_the_referrers_count() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let referrer = make_named(&app, "r@example.com", "rr", None);
    let friend = make_named(&app, "f@example.com", "ff", Some("rr"));
    assert_eq!(reload(&app, referrer.id).referrals_count, 1);

    let response = app.post_form("/customers/ff/delete", &[]).await;
    assert_eq!(response.status(), 303);
    let after = reload(&app, friend.id);
    assert_eq!(after.status.as_str(), "deleted");
    assert!(after.deleted_at.is_some());
    assert_eq!(reload(&app, referrer.id).referrals_count, 0);
    assert!(
        list(&app, "").await.iter().all(|key| key != "ff"),
        "gone from the default list"
    );
    // Deleting twice changes nothing.
    app.post_form("/customers/ff/delete", &[]).await;
    assert_eq!(reload(&app, referrer.id).referrals_count, 0);
    let (_, body) = app.browser.get_html("/customers/ff").await;
    assert!(body.contains("This customer is deleted"));
    assert!(body.contains("/customers/ff/restore"));

    let response = app.post_form("/customers/ff/restore", &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(reload(&app, friend.id).status.as_str(), "active");
    assert_eq!(reload(&app, referrer.id).referrals_count, 1);
    assert_eq!(audit_count(&app, "customer.delete", friend.id), 1);
    assert_eq!(audit_count(&app, "customer.restore", friend.id), 1);
    assert_counts_exact(&app);
}

#[apply(integration_test!)]
async fn approve_and_unapprove() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    diesel::update(referdesk::db::schema::programs::table)
        .set(referdesk::db::schema::programs::require_approval.eq(true))
        .execute(&mut app.conn())
        .unwrap();
    let response = app.post_form("/customers", &[("key", "pending")]).await;
    assert_eq!(response.status(), 303);
    let customer = domain::find_by_key(&mut app.conn(), app.default_program().id, "pending").unwrap();
    assert!(!customer.approved, "the program requires approval");
    assert_eq!(list(&app, "?approved=no").await, vec!["pending"]);

    assert_eq!(
        app.post_form("/customers/pending/approve", &[]).await.status(),
        303
    );
    assert!(reload(&app, customer.id).approved);
    assert_eq!(
        app.post_form("/customers/pending/unapprove", &[]).await.status(),
        303
    );
    assert!(!reload(&app, customer.id).approved);
    assert_eq!(audit_count(&app, "customer.approve", customer.id), 1);
    assert_eq!(audit_count(&app, "customer.unapprove", customer.id), 1);
}

#[apply(integration_test!)]
async fn change_referrer_refuses_self_referral_and_cycles() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let a = make_named(&app, "a@example.com", "a", None);
    let b = make_named(&app, "b@example.com", "b", Some("a"));
    let c = make_named(&app, "c@example.com", "c", Some("b"));
    let d = make_named(&app, "d@example.com", "d", None);

    let response = app
        .post_form("/customers/a/referrer", &[("referring_customer", "a")])
        .await;
    assert_refused(response, &["A customer cannot refer themselves."]).await;

    // a → b → c: making c the referrer of a would close a loop.
    let response = app
        .post_form(
            "/customers/a/referrer",
            &[("referring_customer", "c@example.com")],
        )
        .await;
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(body.contains("referral cycle"), "{body}");
    assert!(body.contains("value=\"c@example.com\""));
    assert_eq!(reload(&app, a.id).referrer_id, None);

    // A legal re-attribution asks first, naming the old and the new referrer, and
    // changes nothing until confirmed.
    let response = app
        .post_form("/customers/c/referrer", &[("referring_customer", "d")])
        .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("Change the referrer of c@example.com from <strong>b@example.com</strong> to <strong>d@example.com</strong>"),
        "{body}"
    );
    assert!(body.contains("name=\"confirm\" value=\"1\""));
    assert_eq!(
        reload(&app, c.id).referrer_id,
        Some(b.id),
        "not changed before the confirmation"
    );
    // The confirmed change moves the count.
    let response = app
        .post_form(
            "/customers/c/referrer",
            &[("referring_customer", "d"), ("confirm", "1")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(reload(&app, c.id).referrer_id, Some(d.id));
    assert_eq!(reload(&app, b.id).referrals_count, 0);
    assert_eq!(reload(&app, d.id).referrals_count, 1);
    // An empty field (Enter in it) removes nothing: removal is its own button.
    let response = app
        .post_form(
            "/customers/b/referrer",
            &[("referring_customer", ""), ("confirm", "1")],
        )
        .await;
    assert_refused(response, &["Enter the key or email of the new referrer."]).await;
    assert_eq!(reload(&app, b.id).referrer_id, Some(a.id));
    let response = app.post_form("/customers/b/referrer", &[("remove", "1")]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(reload(&app, b.id).referrer_id, None);
    assert_eq!(reload(&app, a.id).referrals_count, 0);
    assert_eq!(audit_count(&app, "customer.change_referrer", c.id), 1);
    assert_counts_exact(&app);
}

#[apply(integration_test!)]
async fn viewer_and_support_are_refused_server_side() {
    let app = TestApp::spawn().await;
    let customer = make_named(&app, "v@example.com", "victim", None);
    let viewer = app.signed_in_browser("viewer@example.com", Role::Viewer).await.1;
    let _ = viewer.get_html("/customers").await;
    for (path, fields) in [
        ("/customers", vec![("email", "x@example.com")]),
        (
            "/customers/victim/edit",
            vec![("email", "changed@example.com"), ("key", "victim")],
        ),
        ("/customers/victim/approve", vec![]),
        ("/customers/victim/unapprove", vec![]),
        ("/customers/victim/delete", vec![]),
        ("/customers/victim/restore", vec![]),
        ("/customers/victim/referrer", vec![("referring_customer", "")]),
        ("/customers/victim/links", vec![("code", "viewer-link")]),
    ] {
        let response = viewer.post_form(path, &fields).await;
        assert_eq!(response.status(), 403, "viewer POST {path}");
    }
    let (status, _) = viewer.get_html("/customers/new").await;
    assert_eq!(status, 403);
    let (status, _) = viewer.get_html("/customers/victim/edit").await;
    assert_eq!(status, 403);

    let support = app
        .signed_in_browser("support@example.com", Role::Support)
        .await
        .1;
    let _ = support.get_html("/customers").await;
    for path in [
        "/customers/victim/delete",
        "/customers/victim/restore",
        "/customers/victim/referrer",
    ] {
        let response = support.post_form(path, &[]).await;
        assert_eq!(response.status(), 403, "support POST {path}");
    }
    let after = reload(&app, customer.id);
    assert_eq!(after.email.as_deref(), Some("v@example.com"));
    assert_eq!(after.status.as_str(), "active");
    let count: i64 = customers::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(count, 1);
    let links: i64 = referral_links::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(links, 1);
}

#[apply(integration_test!)]
async fn viewer_sees_no_edit_buttons() {
    let app = TestApp::spawn().await;
    make_named(&app, "v@example.com", "seen", None);
    app.login_as(Role::Viewer).await;
    let (_, body) = app.browser.get_html("/customers").await;
    assert!(!body.contains("href=\"/customers/new\""));
    let (status, body) = app.browser.get_html("/customers/seen").await;
    assert_eq!(status, 200);
    for action in [
        "/edit\"",
        "/delete\"",
        "/approve\"",
        "/unapprove\"",
        "/referrer\"",
        "/links\"",
    ] {
        assert!(!body.contains(action), "viewer sees {action}");
    }
}

// --- referral links ---------------------------------------------------------------------

#[apply(integration_test!)]
async fn referral_link_redirect_counts_clicks() {
    let app = TestApp::spawn().await;
    let customer = make_named(&app, "sharer@example.com", "SharerKey", None);
    let visitor = app.new_browser();
    for _ in 0..3 {
        let response = visitor
            .client
            .get(visitor.url("/r/default/SharerKey"))
            .header("Referer", "https://social.example/post/1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
        assert_eq!(location(&response), "https://example.com/?ref=SharerKey");
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    let clicks: i64 = referral_links::table
        .filter(referral_links::customer_id.eq(customer.id))
        .select(referral_links::clicks)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(clicks, 3);
    let rows: Vec<Option<String>> = referral_clicks::table
        .select(referral_clicks::referer)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].as_deref(), Some("https://social.example/post/1"));

    // The program's link parameter and base URL are honoured.
    diesel::update(referdesk::db::schema::programs::table)
        .set((
            referdesk::db::schema::programs::referral_base_url.eq("https://shop.example/join?src=x"),
            referdesk::db::schema::programs::link_param.eq("invite"),
        ))
        .execute(&mut app.conn())
        .unwrap();
    let response = visitor.get("/r/default/SharerKey").await;
    assert_eq!(
        location(&response),
        "https://shop.example/join?src=x&invite=SharerKey"
    );

    // A deleted customer's links stop working.
    domain::delete(
        &mut app.conn(),
        &app.default_program(),
        &Actor::system(),
        customer.id,
    )
    .unwrap();
    assert_eq!(visitor.get("/r/default/SharerKey").await.status(), 404);
}

#[apply(integration_test!)]
async fn unknown_referral_code_gets_a_friendly_404() {
    let app = TestApp::spawn().await;
    make_named(&app, "k@example.com", "known", None);
    let visitor = app.new_browser();
    for path in [
        "/r/default/unknown",
        "/r/nope/known",
        "/r/default/%27%3B--",
        "/r/default/%C3%A9",
    ] {
        let response = visitor.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains("This referral link does not work"), "{path}");
        assert!(body.contains("/static/style.css"));
    }
    let clicks: i64 = referral_clicks::table
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(clicks, 0);
}

#[apply(integration_test!)]
async fn extra_links_can_be_added_and_deleted() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Support).await;
    let customer = make_named(&app, "l@example.com", "linker", None);
    make_named(&app, "o@example.com", "other", None);

    let response = app
        .post_form("/customers/linker/links", &[("code", "summer-sale")])
        .await;
    assert_eq!(response.status(), 303);
    let response = app.post_form("/customers/linker/links", &[("code", "")]).await;
    assert_eq!(response.status(), 303, "blank code is generated");
    for (code, message) in [
        ("summer-sale", "already in use"),
        ("other", "already in use"),
        ("bad code", "Use 1 to 64 letters"),
    ] {
        let response = app.post_form("/customers/linker/links", &[("code", code)]).await;
        assert_eq!(response.status(), 422, "{code}");
        let body = response.text().await.unwrap();
        assert!(body.contains(message), "{code}: {body}");
        assert!(body.contains(&format!("value=\"{code}\"")));
    }
    let links: Vec<(i64, String, bool)> = referral_links::table
        .filter(referral_links::customer_id.eq(customer.id))
        .order(referral_links::id)
        .select((
            referral_links::id,
            referral_links::code,
            referral_links::is_default,
        ))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(links.len(), 3);
    assert!(links[2].1.starts_with("linker-"));

    let visitor = app.new_browser();
    let response = visitor.get("/r/default/summer-sale").await;
    assert_eq!(response.status(), 302);
    assert_eq!(location(&response), "https://example.com/?ref=linker");
    let (_, body) = app.browser.get_html("/customers/linker").await;
    assert!(body.contains("/r/default/summer-sale"));
    assert!(body.contains("data-copy=\"http://127.0.0.1/r/default/summer-sale\""));

    let extra_id = links[1].0;
    let response = app
        .post_form(&format!("/customers/linker/links/{extra_id}/delete"), &[])
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(visitor.get("/r/default/summer-sale").await.status(), 404);
    let response = app
        .post_form("/customers/linker/links", &[("code", "summer-sale")])
        .await;
    assert_eq!(response.status(), 422, "a deleted link's code is not reused");
    // The default link cannot be deleted.
    let response = app
        .post_form(&format!("/customers/linker/links/{}/delete", links[0].0), &[])
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(audit_count(&app, "referral_link.create", customer.id), 2);
    assert_eq!(audit_count(&app, "referral_link.delete", customer.id), 1);
}

#[apply(integration_test!)]
async fn detail_shows_links_referrer_referrals_and_activity() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    app.create_customer(CustomerInput {
        email: Some("star@example.com".into()),
        name: Some("Star".into()),
        key: Some("star".into()),
        custom_fields: Some(vec![("favourite".into(), "<i>tea</i>".into())]),
        ..Default::default()
    });
    for i in 0..20 {
        make_named(
            &app,
            &format!("fan{i:02}@example.com"),
            &format!("fan{i:02}"),
            Some("star"),
        );
    }
    let (status, body) = app.browser.get_html("/customers/star").await;
    assert_eq!(status, 200);
    assert!(body.contains("20 referrals"));
    assert!(
        body.contains("href=\"/customers/fan19\""),
        "newest referral first"
    );
    assert!(!body.contains("href=\"/customers/fan00\""), "paginated");
    assert!(body.contains("href=\"/customers/star?referrals_page=2\""));
    assert!(body.contains(&attr("<i>tea</i>")));
    assert!(body.contains("customer.create"), "activity");
    let (_, body) = app.browser.get_html("/customers/star?referrals_page=2").await;
    assert!(body.contains("href=\"/customers/fan00\""));
    let (status, _) = app.browser.get_html("/customers/star?referrals_page=999").await;
    assert_eq!(status, 200);
    let (_, body) = app.browser.get_html("/customers/fan05").await;
    assert!(body.contains("href=\"/customers/star\""), "referrer linked");
    for missing in ["nobody-here", "%00", "a%20b", "%F0%9F%98%80"] {
        let (status, _) = app.browser.get_html(&format!("/customers/{missing}")).await;
        assert_eq!(status, 404, "/customers/{missing}");
    }
}

// --- export ------------------------------------------------------------------------------

#[apply(integration_test!)]
async fn csv_export_streams_the_filtered_list_safely() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Viewer).await;
    app.create_customer(CustomerInput {
        email: Some("evil@acme.io".into()),
        name: Some("=HYPERLINK(\"http://x\")".into()),
        surname: Some("Comma, \"Quote\"".into()),
        key: Some("evil".into()),
        id: Some("@SUM(A1)".into()),
        ..Default::default()
    });
    make_named(&app, "fan@acme.io", "-dash", Some("evil"));
    make_named(&app, "skip@other.io", "skip", None);
    for i in 0..2100 {
        make_named(&app, &format!("bulk{i}@bulk.io"), &format!("bulk{i}"), None);
    }

    let response = app.get("/customers/export.csv?q=acme").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"customers-default-"));
    let body = response.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        "id,key,email,name,surname,status,approved,referring_customer_key,referrals_count,referral_link,date_of_birth,created_at,updated_at"
    );
    assert_eq!(lines.len(), 3, "only the filtered rows: {body}");
    assert!(lines[1].starts_with("'@SUM(A1),evil,evil@acme.io,\"'=HYPERLINK(\"\"http://x\"\")\",\"Comma, \"\"Quote\"\"\",active,true,,1,https://example.com/?ref=evil,,"), "{}", lines[1]);
    assert!(lines[2].contains(",'-dash,fan@acme.io,"), "{}", lines[2]);
    assert!(
        lines[2].contains(",evil,0,https://example.com/?ref=-dash,"),
        "{}",
        lines[2]
    );

    // More rows than one batch: every row once, in creation order.
    let body = app.get("/customers/export.csv").await.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 1 + 2103);
    let keys: std::collections::HashSet<&str> = lines[1..]
        .iter()
        .map(|line| line.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(keys.len(), 2103);
    assert!(lines[4].contains(",bulk0,"));
    assert!(lines[2103].contains(",bulk2099,"));
}

// --- concurrency -----------------------------------------------------------------------

#[apply(integration_test!)]
async fn concurrent_referred_creates_keep_counts_exact() {
    let app = TestApp::spawn().await;
    app.login_as(Role::Admin).await;
    let referrers = ["alpha", "beta", "gamma"];
    for key in referrers {
        make_named(&app, &format!("{key}@example.com"), key, None);
    }
    let _ = app.browser.get_html("/customers").await;
    let posts = (0..50).map(|i| {
        let email = format!("rush{i}@example.com");
        let referrer = referrers[i % referrers.len()].to_string();
        let browser = &app.browser;
        async move {
            browser
                .post_form(
                    "/customers",
                    &[("email", &email), ("referring_customer", &referrer)],
                )
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(posts).await;
    assert!(statuses.iter().all(|status| *status == 303), "{statuses:?}");
    for (index, key) in referrers.iter().enumerate() {
        let expected = (0..50).filter(|i| i % referrers.len() == index).count() as i32;
        let referrer = domain::find_by_key(&mut app.conn(), app.default_program().id, key).unwrap();
        assert_eq!(referrer.referrals_count, expected, "{key}");
    }

    // Deletes, restores and creates at the same time, straight through the domain.
    let referred: Vec<i64> = customers::table
        .filter(customers::referrer_id.is_not_null())
        .select(customers::id)
        .load(&mut app.conn())
        .unwrap();
    let program = app.default_program();
    std::thread::scope(|scope| {
        for (n, id) in referred.iter().take(20).enumerate() {
            let (pool, program) = (app.pool.clone(), program.clone());
            scope.spawn(move || {
                let mut conn = pool.get().unwrap();
                domain::delete(&mut conn, &program, &Actor::system(), *id).unwrap();
                if n % 2 == 0 {
                    domain::restore(&mut conn, &program, &Actor::system(), *id).unwrap();
                }
            });
        }
        for i in 0..10 {
            let (pool, program) = (app.pool.clone(), program.clone());
            scope.spawn(move || {
                let mut conn = pool.get().unwrap();
                let new = NewCustomer::parse(CustomerInput {
                    email: Some(format!("late{i}@example.com")),
                    referrer_key: Some("beta".into()),
                    ..Default::default()
                })
                .unwrap();
                domain::create(&mut conn, &program, &Actor::system(), new).unwrap();
            });
        }
    });
    assert_counts_exact(&app);
    let creates: i64 = audit_events::table
        .filter(audit_events::action.eq("customer.create"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(creates, 3 + 50 + 10, "every create wrote an audit event");
    let deletes: i64 = audit_events::table
        .filter(audit_events::action.eq("customer.delete"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(deletes, 20);
}
