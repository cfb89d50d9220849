//! The dashboard at a phone's width, its forms' errors and focus, Back after a form, and
//! axe-core on every main page.

use std::path::PathBuf;

use referdesk::domain::{team, Actor};

use super::*;
use crate::fixtures::{failed_delivery, finished_job, uploaded_import};
use crate::reward_fixtures::{insert_reward, insert_rule, pending};

/// Where axe-core is: `AXE_CORE` (a path to `axe.min.js`), else what `npm ci` installs
/// under `tests/browser-tools/`.
fn axe_path() -> PathBuf {
    match std::env::var_os("AXE_CORE").filter(|path| !path.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser-tools/node_modules/axe-core/axe.min.js")
        }
    }
}

fn axe_available() -> Result<(), (String, &'static str)> {
    let path = axe_path();
    if path.is_file() {
        Ok(())
    } else {
        Err((
            format!("axe-core was not found at {}", path.display()),
            "npm ci --prefix tests/browser-tools",
        ))
    }
}

/// Makes an `async fn(&TestApp, &Tab)` a browser scenario that also needs axe-core.
macro_rules! axe_scenario {
    ($(#[$meta:meta])* async fn $name:ident($($params:tt)*) -> $output:ty $body:block) => {
        $(#[$meta])*
        async fn $name($($params)*) -> $output $body

        inventory::submit! {
            crate::helpers::IntegrationTest(|| trial_needing(stringify!($name), |app, tab| Box::pin($name(app, tab)), axe_available))
        }
    };
}

/// A program with enough in it that every page has rows, long words and a ledger: Ada
/// referred 12 friends with long addresses, has credits, a link of her own and an invite.
async fn busy_program(app: &TestApp) -> anyhow::Result<()> {
    let api = ApiClient::new(app);
    api.post(
        "/customers",
        serde_json::json!({"key": "ada", "email": "ada.lovelace.countess.of.lovelace@analytical-engine-society.example",
                           "name": "Augusta Ada", "surname": "King-Noel, Countess of Lovelace"}),
    )
    .await?;
    for n in 1..=12 {
        let key = format!("friend-with-a-rather-long-key-{n:02}");
        api.post(
            "/customers",
            serde_json::json!({"key": key, "email": format!("{key}@a-very-long-domain-name-for-mail.example"),
                               "name": "Friend", "surname": format!("Number {n:02}"), "referring_customer": {"key": "ada"}}),
        )
        .await?;
    }
    for (amount, units, currency) in [(250_000.0, "points", false), (1234.5, "EUR", true)] {
        api.post(
            "/customers/ada/balance/credit",
            serde_json::json!({"amount": amount, "amount_units": units, "is_currency": currency}),
        )
        .await?;
    }
    Ok(())
}

/// The addresses of the main pages, with data in them.
fn main_pages() -> Vec<&'static str> {
    vec![
        "/",
        "/customers",
        "/customers?q=friend",
        "/customers/new",
        "/customers/ada",
        "/customers/friend-with-a-rather-long-key-01",
        "/customers/ada/edit",
        "/customers/ada/credit",
        "/customers/ada/invite",
        "/invites",
        "/invites/new",
        "/transactions",
        "/rules",
        "/rules/new",
        "/rewards",
        "/api",
        "/api-tokens",
        "/team",
        "/team/new",
        "/webhooks",
        "/webhooks/new",
        "/programs",
        "/programs/new",
        "/audit",
        "/profile",
    ]
}

/// How far the page scrolls sideways (0 when it fits the window).
const OVERFLOW: &str = "return document.scrollingElement.scrollWidth - window.innerWidth;";

/// The right edge of every element matching the selector, against the window's width:
/// the elements that end past it.
const PAST_RIGHT_EDGE: &str = r#"
const [selector] = arguments;
const width = window.innerWidth;
return [...document.querySelectorAll(selector)]
  .filter(element => element.getClientRects().length > 0)
  .filter(element => element.getBoundingClientRect().right > width + 0.5)
  .map(element => element.outerHTML.slice(0, 120));
"#;

/// The chart shown (of the two drawn): the smallest rendered size of its labels, and the
/// labels that end outside its card.
const CHART_LABELS: &str = r#"
const figure = [...document.querySelectorAll('figure.chart')].find(f => f.getClientRects().length > 0);
if (!figure) return {smallest: 0, outside: ['no chart shown'], zeros: 0};
const svg = figure.querySelector('svg');
const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
const card = figure.closest('.card').getBoundingClientRect();
const labels = [...svg.querySelectorAll('text.label')];
const smallest = Math.min(...labels.map(text => parseFloat(getComputedStyle(text).fontSize) * scale));
const outside = labels.filter(text => {
  const box = text.getBoundingClientRect();
  return box.left < card.left || box.right > card.right;
}).map(text => text.textContent);
const zeros = labels.filter(text => text.textContent.trim() === '0').length;
return {smallest, outside, zeros};
"#;

impl Tab {
    async fn overflow(&self) -> anyhow::Result<i64> {
        Ok(self
            .client
            .execute(OVERFLOW, vec![])
            .await?
            .as_i64()
            .unwrap_or(i64::MAX))
    }

    async fn past_right_edge(&self, selector: &str) -> anyhow::Result<Vec<String>> {
        let found = self
            .client
            .execute(PAST_RIGHT_EDGE, vec![selector.into()])
            .await?;
        Ok(serde_json::from_value(found)?)
    }

    /// The id of the element that has the keyboard focus.
    async fn focused_id(&self) -> anyhow::Result<String> {
        let id = self
            .client
            .execute(
                "return document.activeElement ? document.activeElement.id : ''",
                vec![],
            )
            .await?;
        Ok(id.as_str().unwrap_or_default().to_string())
    }
}

/// Every main page at a phone's width (390 and 360 px): nothing scrolls sideways, tables
/// are cards whose Copy buttons and amounts are in view, the customer filters wait behind a
/// "Filters" button, and the dashboard chart's labels are readable and inside their card.
#[apply(browser_scenario!)]
async fn main_pages_fit_a_phone(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    busy_program(app).await?;
    signed_in(app, tab, Role::Admin).await?;
    for width in [390, 360] {
        tab.client.set_window_size(width, 800).await?;
        for path in main_pages() {
            tab.visit(path).await?;
            tab.does_not_see("Internal Server Error").await?;
            let overflow = tab.overflow().await?;
            if overflow > 0 {
                let found = tab.client.execute(LAYOUT_CHECK, vec![]).await?;
                bail!("{path} at {width} px scrolls {overflow} px sideways: {found}");
            }
        }
        tab.visit("/customers/ada").await?;
        let hidden = tab.past_right_edge("#links .copy, #balance td.num").await?;
        anyhow::ensure!(hidden.is_empty(), "out of view at {width} px: {hidden:?}");
        let ledger = tab.text_of("#balance tbody").await?;
        assert!(
            ledger.contains("+250"),
            "the ledger's amounts are shown: {ledger}"
        );

        // The list's results start on the first screen; the filters open with a button.
        tab.visit("/customers").await?;
        let first_row: f64 = tab
            .client
            .execute(
                "return document.querySelector('table.data tbody tr').getBoundingClientRect().top",
                vec![],
            )
            .await?
            .as_f64()
            .unwrap_or(f64::MAX);
        anyhow::ensure!(first_row < 800.0, "the first result starts at {first_row} px");
        anyhow::ensure!(
            !tab.field("Referred").await?.is_displayed().await?,
            "the filters start closed"
        );
        tab.client
            .find(Locator::Css(".filter-panel > summary"))
            .await?
            .click()
            .await?;
        tab.choose("Referred", "Referred").await?;
        tab.press("Apply").await?;
        tab.sees("match these filters").await?;
        anyhow::ensure!(
            tab.field("Referred").await?.is_displayed().await?,
            "a filtered list shows its filters"
        );

        tab.visit("/").await?;
        let chart = tab.client.execute(CHART_LABELS, vec![]).await?;
        let smallest = chart["smallest"].as_f64().unwrap_or(0.0);
        anyhow::ensure!(
            smallest >= 11.0,
            "chart labels render at {smallest:.1} px at {width} px"
        );
        anyhow::ensure!(
            chart["outside"].as_array().is_some_and(Vec::is_empty),
            "labels outside the card: {chart}"
        );
    }
    // At a desktop's width the filters are shown without a button, and the wide chart too.
    tab.client.set_window_size(1280, 1000).await?;
    tab.visit("/customers").await?;
    anyhow::ensure!(
        tab.field("Referred").await?.is_displayed().await?,
        "filters shown on a desktop"
    );
    tab.visit("/").await?;
    let chart = tab.client.execute(CHART_LABELS, vec![]).await?;
    anyhow::ensure!(chart["smallest"].as_f64().unwrap_or(0.0) >= 11.0, "{chart}");
    anyhow::ensure!(chart["outside"].as_array().is_some_and(Vec::is_empty), "{chart}");
    Ok(())
}

/// A program without referrals: its chart has one 0 on the axis, not one at each end.
#[apply(browser_scenario!)]
async fn an_empty_chart_has_one_zero(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    signed_in(app, tab, Role::Viewer).await?;
    for width in [1280, 390] {
        tab.client.set_window_size(width, 900).await?;
        tab.visit("/").await?;
        let chart = tab.client.execute(CHART_LABELS, vec![]).await?;
        assert_eq!(chart["zeros"].as_i64(), Some(1), "at {width} px: {chart}");
    }
    Ok(())
}

/// The new-customer form with a taken email and an unknown referrer: both messages in one
/// round, the cursor in the first field in error; fixed, the customer is created, and Back
/// shows the form's page rather than a "Confirm Form Resubmission" error.
#[apply(browser_scenario!)]
async fn a_form_shows_every_problem_at_once_and_back_does_not_resubmit(
    app: &TestApp,
    tab: &Tab,
) -> anyhow::Result<()> {
    ada(app);
    signed_in(app, tab, Role::Support).await?;
    tab.visit("/customers/new").await?;
    tab.fill("First name", "Mia").await?;
    tab.fill("Email", "ada.lovelace@analytical.example").await?;
    tab.fill("Referred by", "linus").await?;
    tab.press("Create customer").await?;
    assert_eq!(
        tab.message_next_to("Email").await?,
        "A customer with this email already exists."
    );
    assert_eq!(
        tab.message_next_to("Referred by").await?,
        "No customer with the key or email \"linus\" in this program."
    );
    assert_eq!(
        tab.focused_id().await?,
        "field-email",
        "the cursor is in the first field in error"
    );

    tab.fill("Email", "mia@friends.example").await?;
    tab.fill("Referred by", "ada").await?;
    tab.press("Create customer").await?;
    assert_eq!(tab.text_of("h1").await?, "Mia");
    tab.client.back().await?;
    let url = tab.client.current_url().await?;
    anyhow::ensure!(url.scheme() == "http", "Back led to {url}");
    tab.sees("New customer").await?;
    tab.does_not_see("Confirm Form Resubmission").await?;
    tab.does_not_see("ERR_CACHE_MISS").await?;

    // The credit and invite forms start with the cursor in their first field.
    tab.visit("/customers/ada/credit").await?;
    assert_eq!(tab.focused_id().await?, "amount");
    tab.visit("/customers/ada/invite").await?;
    assert_eq!(tab.focused_id().await?, "email");
    Ok(())
}

/// axe-core's serious and critical findings on a page, one line each.
const AXE_RUN: &str = r#"
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ['violations']}).then(results => {
  done({
    rules: results.passes.length + results.violations.length + results.incomplete.length,
    found: results.violations
      .filter(violation => violation.impact === 'serious' || violation.impact === 'critical')
      .map(violation => violation.impact + ' ' + violation.id + ': ' + violation.help + ' — '
        + violation.nodes.slice(0, 3).map(node => node.target.join(' ')).join(' | ')),
  });
}, error => done({rules: 0, found: ['axe failed: ' + error]}));
"#;

/// The pages beyond the main ones, with something in them: a webhook's delivery log, a
/// finished job, an import waiting for its columns, a reward's deny page; returns their
/// addresses and the set-password link of a member (a page seen signed out).
async fn pages_beyond_the_main(app: &TestApp) -> anyhow::Result<(Vec<String>, String)> {
    let mut pages = vec![failed_delivery(app), format!("/jobs/{}", finished_job(app))];
    app.login_as(Role::Admin).await;
    pages.push(uploaded_import(app).await);
    let id_of = |key: &str| -> anyhow::Result<i64> {
        use diesel::prelude::*;
        use referdesk::db::schema::customers;
        Ok(customers::table
            .filter(customers::key.eq(key))
            .select(customers::id)
            .first(&mut app.conn())?)
    };
    let rule = insert_rule(app, "Signup bonus");
    let friend = id_of("friend-with-a-rather-long-key-01")?;
    let reward = insert_reward(app, rule, (id_of("ada")?, friend), pending("5.00"));
    pages.push(format!("/rewards/{reward}/deny"));
    let member = app.create_member("lin@team.example", Role::Viewer, PASSWORD);
    let token = team::issue_password_link(&mut app.conn(), &Actor::system(), member)?;
    Ok((pages, format!("/set-password?token={token}")))
}

/// axe-core on every main page and the pages beyond them, signed in as an admin, at a
/// desktop's and a phone's width; on a refused form, a bulk confirmation, and the pages
/// seen signed out (sign-in, set-password): no serious or critical violation.
#[apply(axe_scenario!)]
async fn axe_finds_nothing_serious(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    let axe = std::fs::read_to_string(axe_path())?;
    busy_program(app).await?;
    let (more, set_password) = pages_beyond_the_main(app).await?;
    signed_in(app, tab, Role::Admin).await?;
    let mut found = Vec::new();
    for (width, height) in [(1280, 1000), (390, 844)] {
        tab.client.set_window_size(width, height).await?;
        let pages = main_pages()
            .into_iter()
            .map(String::from)
            .chain(more.iter().cloned());
        for path in pages {
            tab.visit(&path).await?;
            found.extend(axe_findings(tab, &axe, &format!("{path} at {width} px")).await?);
        }
        tab.visit("/customers/new").await?;
        tab.fill("Email", "not an email").await?;
        tab.press("Create customer").await?;
        found.extend(axe_findings(tab, &axe, &format!("a refused form at {width} px")).await?);
        tab.visit("/rewards").await?;
        tab.press("Approve all matching…").await?;
        tab.sees("Approve").await?;
        found.extend(
            axe_findings(
                tab,
                &axe,
                &format!("a bulk approval's confirmation at {width} px"),
            )
            .await?,
        );

        tab.press("Sign out").await?;
        for path in ["/login", set_password.as_str()] {
            tab.visit(path).await?;
            found.extend(axe_findings(tab, &axe, &format!("{path} signed out at {width} px")).await?);
        }
        tab.sign_in("admin@team.example", PASSWORD).await?;
    }
    anyhow::ensure!(found.is_empty(), "axe-core found:\n{}", found.join("\n"));
    Ok(())
}

async fn axe_findings(tab: &Tab, axe: &str, page: &str) -> anyhow::Result<Vec<String>> {
    tab.client
        .execute(&format!("{axe}\n;return true;"), vec![])
        .await?;
    let answer = tab.client.execute_async(AXE_RUN, vec![]).await?;
    // A run that checked nothing would pass anything.
    anyhow::ensure!(
        answer["rules"].as_u64().unwrap_or(0) > 20,
        "{page}: axe-core checked almost nothing: {answer}"
    );
    let found: Vec<String> = serde_json::from_value(answer["found"].clone())?;
    Ok(found.into_iter().map(|line| format!("{page}: {line}")).collect())
}
