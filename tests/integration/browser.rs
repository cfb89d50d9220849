//! End-to-end tests in a real browser: headless Chromium, driven through WebDriver
//! (`chromedriver`) with `fantoccini`, against the real server on a free port with its own
//! database. Each scenario asserts what a person sees: page text, field messages, values.
//!
//! - One `chromedriver` serves the whole run: started on a free port by the first scenario
//!   that needs it, stopped by [`finish`] (called from `main` after the run). Every scenario
//!   gets its own browser session with a fresh profile directory, removed afterwards.
//! - A failing scenario (an error or a panic) saves a screenshot and the page source under
//!   `target/browser-failures/<scenario>.{png,html}` before its session closes, and names
//!   both files in the failure message.
//! - Without `chromium` and `chromedriver` the scenarios are reported as ignored with how to
//!   install them, except under `CI=true`, where a missing browser fails the run.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use diesel::RunQueryDsl;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use libtest_mimic::{Completion, Failed, Trial};
use macro_rules_attribute::apply;
use referdesk::domain::customers::{Customer, CustomerInput};
use referdesk::domain::team::Role;

use crate::helpers::{TestApp, PASSWORD};

/// What a developer without a browser sees next to each scenario.
const SKIPPED: &str =
    "skipped: install chromium and chromium-driver (apt-get install -y chromium chromium-driver) to run the browser tests";
/// How long a person would wait for a page before calling it broken.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long a pressed button may take to leave the page before we assume it does not
/// submit anything.
const NAVIGATION_PATIENCE: Duration = Duration::from_secs(5);
/// The mail worker polls every second; a queued invite is sent well within this.
const MAIL_PATIENCE: Duration = Duration::from_secs(30);

type Scenario = for<'a> fn(&'a TestApp, &'a Tab) -> BoxFuture<'a, anyhow::Result<()>>;

/// Makes an `async fn(&TestApp, &Tab)` a browser scenario of this binary, run as
/// `browser::name` in its own browser session.
macro_rules! browser_scenario {
    ($(#[$meta:meta])* async fn $name:ident($($params:tt)*) -> $output:ty $body:block) => {
        $(#[$meta])*
        async fn $name($($params)*) -> $output $body

        inventory::submit! {
            crate::helpers::IntegrationTest(|| trial(stringify!($name), |app, tab| Box::pin($name(app, tab))))
        }
    };
}

fn trial(name: &'static str, scenario: Scenario) -> Trial {
    trial_needing(name, scenario, || Ok(()))
}

/// What a scenario needs besides the browser: `Err((what is missing, how to install it))`.
type Needs = fn() -> Result<(), (String, &'static str)>;

/// [`trial`] for a scenario that also needs what `needs` checks (e.g. axe-core): without
/// it the scenario is ignored, except under `CI=true`, where it fails.
fn trial_needing(name: &'static str, scenario: Scenario, needs: Needs) -> Trial {
    Trial::ignorable_test(format!("browser::{name}"), move || {
        let ready = tools()
            .map_err(|missing| (missing, "apt-get install -y chromium chromium-driver"))
            .and_then(|tools| needs().map(|()| tools));
        match ready {
            Ok(tools) => {
                let mut outcome = Ok(());
                crate::helpers::run(async { outcome = in_browser(tools, name, scenario).await });
                outcome.map(|()| Completion::Completed)
            }
            Err((missing, install)) if in_ci() => {
                Err(format!("{missing}, and CI is set: the browser tests must run in CI ({install})").into())
            }
            Err((_, install)) if install.starts_with("apt-get") => Ok(Completion::ignored_with(SKIPPED)),
            Err((missing, install)) => Ok(Completion::ignored_with(format!(
                "skipped: {missing} ({install})"
            ))),
        }
    })
}

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|value| matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        .unwrap_or(false)
}

// --- the browser and its driver ---------------------------------------------------------

struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// Chromium and chromedriver from `PATH` (or the `CHROMIUM` / `CHROMEDRIVER` variables).
fn tools() -> Result<&'static Tools, String> {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            let chromium = find_program("CHROMIUM", &["chromium", "chromium-browser"]);
            let chromedriver = find_program("CHROMEDRIVER", &["chromedriver"]);
            match (chromium, chromedriver) {
                (Some(chromium), Some(chromedriver)) => Ok(Tools {
                    chromium,
                    chromedriver,
                }),
                (None, Some(_)) => Err("chromium was not found".to_string()),
                (Some(_), None) => Err("chromedriver was not found".to_string()),
                (None, None) => Err("chromium and chromedriver were not found".to_string()),
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn find_program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable).filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The run's one chromedriver.
struct Driver {
    url: String,
    port: u16,
    process: Mutex<Option<Child>>,
}

static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();

fn driver(tools: &Tools) -> Result<&'static Driver, String> {
    DRIVER
        .get_or_init(|| start_driver(tools))
        .as_ref()
        .map_err(Clone::clone)
}

fn start_driver(tools: &Tools) -> Result<Driver, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("no free port for chromedriver: {error}"))?
        .port();
    let mut process = Command::new(&tools.chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("could not start {}: {error}", tools.chromedriver.display()))?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = process.try_wait() {
            return Err(format!("chromedriver exited at start ({status})"));
        }
        if Instant::now() > deadline {
            let _ = process.kill();
            let _ = process.wait();
            return Err(format!(
                "chromedriver did not listen on port {port} within {PATIENCE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Driver {
        url: format!("http://127.0.0.1:{port}"),
        port,
        process: Mutex::new(Some(process)),
    })
}

/// Stops the run's chromedriver, if a scenario started one: asks it to shut down (which ends
/// any browser it still has), then kills it if it has not exited within a few seconds.
pub fn finish() {
    let Some(Ok(driver)) = DRIVER.get() else {
        return;
    };
    let Some(mut process) = driver
        .process
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
    else {
        return;
    };
    if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", driver.port)) {
        use std::io::{Read, Write};
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.write_all(b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let _ = stream.read_to_end(&mut Vec::new());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = process.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = process.kill();
    let _ = process.wait();
}

/// A browser profile directory of its own, removed when dropped.
struct Profile(PathBuf);

impl Profile {
    fn new(name: &str) -> anyhow::Result<Profile> {
        let dir = std::env::temp_dir().join(format!(
            "referdesk-chromium-{}-{name}-{}",
            std::process::id(),
            referdesk::random::random_token(6)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Profile(dir))
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        // Chromium may still be writing while it exits: retry briefly.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn open_session(driver: &Driver, chromium: &Path, profile: &Profile) -> anyhow::Result<Client> {
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.0.display()),
            ],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .context("could not open a Chromium session through chromedriver")
}

/// Runs one scenario in a fresh server and browser session; on failure, saves what the
/// browser showed before the session closes.
async fn in_browser(tools: &Tools, name: &str, scenario: Scenario) -> Result<(), Failed> {
    let driver = driver(tools)?;
    let app = TestApp::spawn().await;
    let profile = Profile::new(name).map_err(|error| format!("{error:#}"))?;
    let client = open_session(driver, &tools.chromium, &profile)
        .await
        .map_err(|error| format!("{error:#}"))?;
    let tab = Tab {
        client: client.clone(),
        base: app.address.clone(),
    };
    let failure = match AssertUnwindSafe(scenario(&app, &tab)).catch_unwind().await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(format!("{error:#}")),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "the scenario panicked".to_string()),
        ),
    };
    let failure = match failure {
        Some(message) => Some(format!("{message}\n{}", capture(&tab, name).await)),
        None => None,
    };
    let _ = client.close().await;
    drop(profile);
    match failure {
        Some(message) => Err(message.into()),
        None => {
            // What an earlier failed run left for this scenario no longer describes it.
            for extension in ["png", "html"] {
                let _ = std::fs::remove_file(failures_dir().join(format!("{name}.{extension}")));
            }
            Ok(())
        }
    }
}

/// Where failure screenshots and page sources go: `target/browser-failures/`.
fn failures_dir() -> PathBuf {
    // The test binary is `<target>/<profile>/deps/integration-<hash>`.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent()?.parent().map(Path::to_path_buf))
        .filter(|target| target.is_dir())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("browser-failures")
}

/// Saves a screenshot and the page source; says where they are (or why they are not).
async fn capture(tab: &Tab, name: &str) -> String {
    let dir = failures_dir();
    if let Err(error) = std::fs::create_dir_all(&dir) {
        return format!("could not create {}: {error}", dir.display());
    }
    let url = match tab.client.current_url().await {
        Ok(url) => url.to_string(),
        Err(error) => format!("unknown ({error})"),
    };
    let png = dir.join(format!("{name}.png"));
    let html = dir.join(format!("{name}.html"));
    let screenshot = match tab.client.screenshot().await {
        Ok(bytes) => std::fs::write(&png, bytes)
            .map(|()| format!("screenshot: {}", png.display()))
            .unwrap_or_else(|error| format!("screenshot not saved to {}: {error}", png.display())),
        Err(error) => format!("no screenshot: {error}"),
    };
    let source = match tab.client.source().await {
        Ok(text) => std::fs::write(&html, text)
            .map(|()| format!("page source: {}", html.display()))
            .unwrap_or_else(|error| format!("page source not saved to {}: {error}", html.display())),
        Err(error) => format!("no page source: {error}"),
    };
    format!("the browser was at {url}\n{screenshot}\n{source}")
}

// --- what a person does and sees ----------------------------------------------------------

/// One browser session pointed at one server.
struct Tab {
    client: Client,
    base: String,
}

/// An XPath string literal (no label or button text here contains both quote kinds).
fn literal(text: &str) -> String {
    if text.contains('\'') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    }
}

impl Tab {
    /// Types an address into the location bar.
    async fn visit(&self, path: &str) -> anyhow::Result<()> {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .with_context(|| format!("open {path}"))
    }

    async fn path(&self) -> anyhow::Result<String> {
        let url = self.client.current_url().await?;
        Ok(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        })
    }

    /// The text the page shows (what a person can read; hidden elements excluded).
    async fn text(&self) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css("body")).await?.text().await?)
    }

    /// Waits until the page shows `expected`.
    async fn sees(&self, expected: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let shown = self.text().await.unwrap_or_default();
            if shown.contains(expected) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "expected to see {expected:?} on {}; the page shows:\n{shown}",
                    self.path().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn does_not_see(&self, unexpected: &str) -> anyhow::Result<()> {
        let shown = self.text().await?;
        if shown.contains(unexpected) {
            bail!(
                "expected not to see {unexpected:?} on {}; the page shows:\n{shown}",
                self.path().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The text of the first element matching `css`.
    async fn text_of(&self, css: &str) -> anyhow::Result<String> {
        let element = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element {css:?} on this page"))?;
        Ok(element.text().await?)
    }

    /// The input, select or textarea labelled `label` (by `for`, or wrapped in the label).
    async fn field(&self, label: &str) -> anyhow::Result<Element> {
        let xpath = format!("//label[normalize-space(text())={}]", literal(label));
        let found = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::XPath(&xpath))
            .await
            .with_context(|| format!("no field labelled {label:?} on this page"))?;
        match found.attr("for").await? {
            Some(id) => Ok(self.client.find(Locator::Id(&id)).await?),
            None => Ok(found.find(Locator::Css("input, select, textarea")).await?),
        }
    }

    /// Clears the field labelled `label` and types `text` into it.
    async fn fill(&self, label: &str, text: &str) -> anyhow::Result<()> {
        let field = self.field(label).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// What the field labelled `label` holds.
    async fn value(&self, label: &str) -> anyhow::Result<String> {
        Ok(self.field(label).await?.prop("value").await?.unwrap_or_default())
    }

    /// Picks the option shown as `option` in the select labelled `label`.
    async fn choose(&self, label: &str, option: &str) -> anyhow::Result<()> {
        self.field(label)
            .await?
            .select_by_label(option)
            .await
            .with_context(|| format!("no option {option:?} in {label:?}"))
    }

    /// The option shown as selected in the select labelled `label`.
    async fn chosen(&self, label: &str) -> anyhow::Result<String> {
        let select = self.field(label).await?;
        Ok(select
            .find(Locator::Css("option:checked"))
            .await?
            .text()
            .await?
            .trim()
            .to_string())
    }

    /// The message shown next to the field labelled `label` (inside the same `.field`).
    async fn message_next_to(&self, label: &str) -> anyhow::Result<String> {
        let field = self.field(label).await?;
        let message = field
            .find(Locator::XPath(
                "./ancestor::*[contains(concat(' ', normalize-space(@class), ' '), ' field ')][1]\
                 //*[contains(concat(' ', normalize-space(@class), ' '), ' error ')]",
            ))
            .await
            .with_context(|| format!("no message next to the field {label:?}"))?;
        Ok(message.text().await?)
    }

    /// Clicks the button and, when it submits a form, waits for the next page: a click
    /// can return before the browser has left the page, and reading the old page's
    /// elements then fails as "stale" (or reads the old values).
    async fn press(&self, button: &str) -> anyhow::Result<()> {
        let xpath = format!(
            "//button[normalize-space()={text}] | //input[@type='submit' and @value={text}]",
            text = literal(button)
        );
        let page = self.client.find(Locator::Css("html")).await?;
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .with_context(|| format!("no button {button:?} on this page"))?
            .click()
            .await?;
        // The old document's root goes stale once the next page has replaced it. A
        // button that does not submit leaves it in place: give up waiting after a while.
        let deadline = Instant::now() + NAVIGATION_PATIENCE;
        while page.tag_name().await.is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let state = self.client.execute("return document.readyState", vec![]).await?;
            if state.as_str() == Some("complete") || Instant::now() > deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn follow(&self, link: &str) -> anyhow::Result<()> {
        self.client
            .find(Locator::LinkText(link))
            .await
            .with_context(|| format!("no link {link:?} on this page"))?
            .click()
            .await?;
        Ok(())
    }

    async fn has_link(&self, link: &str) -> anyhow::Result<bool> {
        Ok(!self.client.find_all(Locator::LinkText(link)).await?.is_empty())
    }

    async fn has_button(&self, button: &str) -> anyhow::Result<bool> {
        let xpath = format!("//button[normalize-space()={}]", literal(button));
        Ok(!self.client.find_all(Locator::XPath(&xpath)).await?.is_empty())
    }

    /// Signs in through the login form.
    async fn sign_in(&self, email: &str, password: &str) -> anyhow::Result<()> {
        self.visit("/login").await?;
        self.fill("Email", email).await?;
        self.fill("Password", password).await?;
        self.press("Sign in").await?;
        self.sees("Sign out").await
    }
}

// --- data a scenario starts from ------------------------------------------------------------

struct Person<'a> {
    key: &'a str,
    email: &'a str,
    name: &'a str,
    surname: &'a str,
    referred_by: Option<&'a str>,
}

/// A customer of the default program, created as the API would.
fn customer(app: &TestApp, person: Person<'_>) -> Customer {
    app.create_customer(CustomerInput {
        key: Some(person.key.to_string()),
        email: Some(person.email.to_string()),
        name: Some(person.name.to_string()),
        surname: Some(person.surname.to_string()),
        referrer_key: person.referred_by.map(str::to_string),
        ..Default::default()
    })
}

fn ada(app: &TestApp) -> Customer {
    customer(
        app,
        Person {
            key: "ada",
            email: "ada.lovelace@analytical.example",
            name: "Ada",
            surname: "Lovelace",
            referred_by: None,
        },
    )
}

/// A member with `role`, signed in through the login form.
async fn signed_in(app: &TestApp, tab: &Tab, role: Role) -> anyhow::Result<()> {
    let email = format!("{}@team.example", role.as_str());
    app.create_member(&email, role, PASSWORD);
    tab.sign_in(&email, PASSWORD).await
}

/// The program's API, called with a token as an integration would.
struct ApiClient {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    fn new(app: &TestApp) -> ApiClient {
        ApiClient {
            client: reqwest::Client::new(),
            base: format!("{}/v1", app.address),
            token: app.create_token("default"),
        }
    }

    /// Posts `body`; anything but a success is an error naming the answer.
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {body}");
        Ok(body)
    }
}

// --- scenarios ------------------------------------------------------------------------------

/// The one-time setup link from the server log creates the first admin; they can sign out
/// and in again, and the link does not work twice.
#[apply(browser_scenario!)]
async fn first_run_setup_then_sign_in(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    let link = app
        .setup_url
        .as_deref()
        .context("a fresh server prints a setup link")?;
    let path = &link[link.find("/setup").context("the link leads to /setup")?..];
    tab.visit(path).await?;
    tab.sees("Welcome to Referdesk").await?;

    tab.fill("Email", "owner@shop.example").await?;
    tab.fill("Name", "Olga Owner").await?;
    tab.fill("Password", "a long enough secret").await?;
    tab.fill("Repeat the password", "a different secret").await?;
    tab.press("Create admin account").await?;
    assert_eq!(
        tab.message_next_to("Repeat the password").await?,
        "The two passwords differ."
    );
    assert_eq!(
        tab.value("Email").await?,
        "owner@shop.example",
        "typed email kept"
    );
    assert_eq!(tab.value("Name").await?, "Olga Owner", "typed name kept");

    tab.fill("Password", "a long enough secret").await?;
    tab.fill("Repeat the password", "a long enough secret").await?;
    tab.press("Create admin account").await?;
    tab.sees("Welcome! Your admin account is ready.").await?;
    tab.sees("Olga Owner").await?;
    assert_eq!(tab.path().await?, "/");

    tab.press("Sign out").await?;
    tab.sees("You have been signed out.").await?;
    tab.fill("Email", "owner@shop.example").await?;
    tab.fill("Password", "wrong password here").await?;
    tab.press("Sign in").await?;
    tab.sees("The email or password is incorrect.").await?;
    tab.fill("Password", "a long enough secret").await?;
    tab.press("Sign in").await?;
    tab.sees("signed in as owner@shop.example").await?;
    assert!(tab.has_link("Team").await?, "the first member is an admin");

    tab.visit(path).await?;
    tab.sees("This link is invalid, used or expired.").await?;
    Ok(())
}

#[apply(browser_scenario!)]
async fn search_by_partial_email_and_open(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    for (key, email, name, surname) in [
        ("grace", "grace.hopper@navy.example", "Grace", "Hopper"),
        ("alan", "alan.turing@bletchley.example", "Alan", "Turing"),
    ] {
        customer(
            app,
            Person {
                key,
                email,
                name,
                surname,
                referred_by: None,
            },
        );
    }
    signed_in(app, tab, Role::Viewer).await?;
    tab.follow("Customers").await?;
    tab.sees("3 customers").await?;

    tab.fill("Search", "lovelace@analyt").await?;
    tab.press("Apply").await?;
    tab.sees("1 customer matches these filters").await?;
    tab.sees("ada.lovelace@analytical.example").await?;
    tab.does_not_see("grace.hopper@navy.example").await?;
    tab.does_not_see("alan.turing@bletchley.example").await?;
    assert_eq!(
        tab.value("Search").await?,
        "lovelace@analyt",
        "the search stays in the box"
    );

    tab.follow("Ada Lovelace").await?;
    assert_eq!(tab.text_of("h1").await?, "Ada Lovelace");
    assert!(tab
        .text_of("#profile")
        .await?
        .contains("ada.lovelace@analytical.example"));
    assert_eq!(tab.path().await?, "/customers/ada");
    Ok(())
}

#[apply(browser_scenario!)]
async fn create_referred_customer_counts_for_the_referrer(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    signed_in(app, tab, Role::Support).await?;
    tab.visit("/customers/ada").await?;
    tab.sees("0 referrals").await?;
    tab.sees("Ada Lovelace has not referred anyone yet.").await?;

    tab.follow("Customers").await?;
    tab.follow("New customer").await?;
    tab.fill("First name", "Bob").await?;
    tab.fill("Surname", "Babbage").await?;
    tab.fill("Email", "bob@engine.example").await?;
    tab.fill("Referred by", "ada.lovelace@analytical.example").await?;
    tab.press("Create customer").await?;
    assert_eq!(tab.text_of("h1").await?, "Bob Babbage");
    assert!(tab.text_of("#referrer").await?.contains("Ada Lovelace"));

    tab.follow("Ada Lovelace").await?;
    assert_eq!(tab.text_of("h1").await?, "Ada Lovelace");
    tab.sees("1 referral").await?;
    let referrals = tab.text_of("#referrals").await?;
    assert!(referrals.contains("(1 active)"), "{referrals}");
    assert!(referrals.contains("Bob Babbage"), "{referrals}");
    assert!(referrals.contains("bob@engine.example"), "{referrals}");

    tab.follow("Customers").await?;
    let count = tab
        .text_of("tbody tr:has(td:nth-child(2) a[href='/customers/ada']) td.num")
        .await?;
    assert_eq!(count, "1", "the list shows Ada's referral count");
    Ok(())
}

#[apply(browser_scenario!)]
async fn edit_with_invalid_email_then_fix_it(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    signed_in(app, tab, Role::Support).await?;
    tab.visit("/customers/ada").await?;
    tab.follow("Edit").await?;
    tab.sees("Edit Ada Lovelace").await?;
    assert_eq!(tab.value("Email").await?, "ada.lovelace@analytical.example");

    tab.fill("First name", "Augusta Ada").await?;
    tab.fill("Email", "ada@").await?;
    tab.press("Save changes").await?;
    tab.sees("Please correct the fields marked below; nothing was saved.")
        .await?;
    assert_eq!(
        tab.message_next_to("Email").await?,
        "Enter a valid email address."
    );
    assert_eq!(tab.value("Email").await?, "ada@", "the typed email is kept");
    assert_eq!(
        tab.value("First name").await?,
        "Augusta Ada",
        "the typed name is kept"
    );
    assert_eq!(tab.value("Surname").await?, "Lovelace");

    tab.fill("Email", "countess@analytical.example").await?;
    tab.press("Save changes").await?;
    assert_eq!(tab.text_of("h1").await?, "Augusta Ada Lovelace");
    let profile = tab.text_of("#profile").await?;
    assert!(profile.contains("countess@analytical.example"), "{profile}");
    assert!(!profile.contains("ada.lovelace@analytical.example"), "{profile}");
    Ok(())
}

#[apply(browser_scenario!)]
async fn credit_shows_the_balance(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    signed_in(app, tab, Role::Support).await?;
    tab.visit("/customers/ada").await?;
    assert!(tab.text_of("#balance").await?.contains("No credits yet."));
    tab.follow("Credit").await?;
    tab.sees("Credit Ada Lovelace").await?;

    tab.fill("Amount", "12.5.0").await?;
    tab.press("Book").await?;
    let message = tab.message_next_to("Amount").await?;
    assert!(!message.is_empty(), "a message next to the amount");
    assert_eq!(tab.value("Amount").await?, "12.5.0", "the typed amount is kept");

    tab.fill("Amount", "12.50").await?;
    tab.choose("Currency", "EUR").await?;
    tab.fill("Note", "Thanks for bringing Bob").await?;
    tab.press("Book").await?;
    // Booking returns to the customer's page, which shows the new balance and ledger line.
    tab.sees("Credited 12.50 EUR for Ada Lovelace.").await?;
    tab.sees("Thanks for bringing Bob").await?;
    let balance = tab.text_of("#balance .stats").await?;
    assert!(balance.contains("12.50") && balance.contains("EUR"), "{balance}");
    let balance = tab.text_of("#balance").await?;
    assert!(balance.contains("12.50") && balance.contains("EUR"), "{balance}");
    assert!(balance.contains("+12.50"), "the ledger line: {balance}");
    Ok(())
}

#[apply(browser_scenario!)]
async fn invite_is_queued_then_sent(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    signed_in(app, tab, Role::Support).await?;
    tab.visit("/customers/ada").await?;
    tab.follow("Invite someone").await?;
    tab.sees("Invite someone for Ada Lovelace").await?;
    tab.fill("Email", "charles@friends.example").await?;
    tab.fill("Name", "Charles").await?;
    tab.press("Send invite").await?;
    tab.sees("Invite to charles@friends.example queued; it is sent in a moment.")
        .await?;

    tab.follow("Invites").await?;
    let row_css = "tbody tr:has(a[href='/customers/ada'])";
    let row = tab.text_of(row_css).await?;
    assert!(row.contains("charles@friends.example"), "{row}");
    assert!(row.contains("queued") || row.contains("sent"), "{row}");

    let deadline = Instant::now() + MAIL_PATIENCE;
    loop {
        let row = tab.text_of(row_css).await?;
        if row.contains("sent ") {
            assert!(!row.contains("failed"), "{row}");
            break;
        }
        if Instant::now() > deadline {
            return Err(anyhow!("the invite was not sent within {MAIL_PATIENCE:?}: {row}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        tab.client.refresh().await?;
    }
    tab.choose("Status", "sent (1)").await?;
    tab.press("Filter").await?;
    tab.sees("1 invite").await?;
    tab.sees("charles@friends.example").await?;
    Ok(())
}

#[apply(browser_scenario!)]
async fn pages_keep_the_filter(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    for n in 1..=20 {
        let (key, email) = (format!("friend-{n:02}"), format!("friend-{n:02}@friends.example"));
        customer(
            app,
            Person {
                key: &key,
                email: &email,
                name: "Friend",
                surname: &format!("{n:02}"),
                referred_by: Some("ada"),
            },
        );
    }
    for n in 1..=10 {
        let (key, email) = (format!("solo-{n:02}"), format!("solo-{n:02}@alone.example"));
        customer(
            app,
            Person {
                key: &key,
                email: &email,
                name: "Solo",
                surname: &format!("{n:02}"),
                referred_by: None,
            },
        );
    }
    signed_in(app, tab, Role::Viewer).await?;
    tab.follow("Customers").await?;
    tab.sees("31 customers").await?;
    tab.choose("Referred", "Referred").await?;
    tab.press("Apply").await?;
    tab.sees("20 customers match these filters").await?;
    tab.sees("Showing 1–15 of 20").await?;
    tab.does_not_see("@alone.example").await?;

    tab.follow("Next ›").await?;
    tab.sees("Showing 16–20 of 20").await?;
    assert_eq!(
        tab.chosen("Referred").await?,
        "Referred",
        "the filter is still chosen"
    );
    tab.sees("20 customers match these filters").await?;
    tab.does_not_see("@alone.example").await?;
    let rows = tab.client.find_all(Locator::Css("table.data tbody tr")).await?;
    assert_eq!(rows.len(), 5, "the second page holds the last five");
    for row in rows {
        let text = row.text().await?;
        assert!(
            text.contains("@friends.example") && text.contains("Ada Lovelace"),
            "{text}"
        );
    }

    tab.follow("‹ Previous").await?;
    tab.sees("Showing 1–15 of 20").await?;
    assert_eq!(tab.chosen("Referred").await?, "Referred");
    tab.follow("Clear filters").await?;
    tab.sees("Showing 1–15 of 31").await?;
    Ok(())
}

#[apply(browser_scenario!)]
async fn viewer_sees_no_edit_or_credit_and_is_refused(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    signed_in(app, tab, Role::Viewer).await?;
    tab.follow("Customers").await?;
    assert!(
        !tab.has_link("New customer").await?,
        "no New customer for a viewer"
    );
    tab.follow("Ada Lovelace").await?;
    assert_eq!(tab.text_of("h1").await?, "Ada Lovelace");
    tab.sees("No credits yet.").await?;
    for link in ["Edit", "Credit", "Credit or debit", "Invite", "Invite someone"] {
        assert!(!tab.has_link(link).await?, "a viewer sees no {link:?} link");
    }
    for button in [
        "Approve",
        "Unapprove",
        "Delete",
        "Add link",
        "Change referrer…",
        "Remove referrer",
        "Copy referral link",
        "Erase personal data",
    ] {
        assert!(
            !tab.has_button(button).await?,
            "a viewer sees no {button:?} button"
        );
    }

    for path in [
        "/customers/ada/edit",
        "/customers/ada/credit",
        "/customers/ada/invite",
        "/customers/new",
    ] {
        tab.visit(path).await?;
        tab.sees("403").await?;
        tab.sees("This needs the support role or higher; you are signed in with the viewer role.")
            .await?;
        tab.does_not_see("Save changes").await?;
        tab.does_not_see("Book").await?;
    }
    tab.follow("Back to the dashboard").await?;
    tab.sees("signed in as viewer@team.example").await?;
    Ok(())
}

#[apply(browser_scenario!)]
async fn back_button_after_sign_out_shows_no_customer_data(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    signed_in(app, tab, Role::Support).await?;
    tab.follow("Customers").await?;
    tab.follow("Ada Lovelace").await?;
    tab.sees("ada.lovelace@analytical.example").await?;

    tab.press("Sign out").await?;
    tab.sees("You have been signed out.").await?;
    tab.client.back().await?;
    tab.sees("Sign in to manage your referral programs.").await?;
    tab.does_not_see("ada.lovelace@analytical.example").await?;
    tab.does_not_see("Ada Lovelace").await?;
    let path = tab.path().await?;
    assert!(
        path.starts_with("/login?next="),
        "the server was asked again and sent to sign-in: {path}"
    );
    let source = tab.client.source().await?;
    assert!(
        !source.contains("analytical.example"),
        "not even in the page source"
    );

    tab.client.back().await?;
    tab.does_not_see("ada.lovelace@analytical.example").await?;
    Ok(())
}

/// Issue 20's loop end to end: an admin writes a rule in the rules form; the API creates a
/// referrer and a friend and posts the friend's first sale; after the 14-day hold the reward
/// waits in the queue for approval; a support member approves it; the referrer's balance
/// shows 10.00 USD.
#[apply(browser_scenario!)]
async fn rule_sale_hold_approval_balance(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    signed_in(app, tab, Role::Admin).await?;
    tab.follow("Reward rules").await?;
    tab.sees("No rules yet").await?;
    tab.follow("New rule").await?;
    tab.fill("Name", "Friend's first sale").await?;
    tab.choose("Trigger", "A sale by the referred friend").await?;
    tab.choose("Which sales", "The first sale only").await?;
    tab.choose("Who earns", "The referrer").await?;
    tab.choose("Amount", "A fixed amount").await?;
    tab.fill("Referrer earns", "10").await?;
    tab.choose("Currency", "USD").await?;
    tab.fill("Hold period (days)", "14").await?;
    for checkbox in ["Is a currency", "Needs manual approval", "Enabled"] {
        let field = tab.field(checkbox).await?;
        if !field.is_selected().await? {
            field.click().await?;
        }
    }
    tab.press("Create rule").await?;
    assert_eq!(tab.path().await?, "/rules");
    let rule = tab.text_of("table.data tbody tr").await?;
    for part in [
        "Friend's first sale",
        "Referrer: 10",
        "USD",
        "14-day hold, manual approval",
        "enabled",
    ] {
        assert!(rule.contains(part), "{part:?} in the rule's row: {rule}");
    }

    let api = ApiClient::new(app);
    let post = |path: &'static str, body: serde_json::Value| api.post(path, body);
    post(
        "/customers",
        serde_json::json!({"key": "ada", "email": "ada@analytical.example", "name": "Ada", "surname": "Lovelace"}),
    )
    .await?;
    post(
        "/customers",
        serde_json::json!({"key": "bob", "email": "bob@engine.example", "name": "Bob", "surname": "Babbage",
                           "referring_customer": {"key": "ada"}}),
    )
    .await?;
    let sale = post(
        "/transactions",
        serde_json::json!({"key": "order-1", "customer": {"key": "bob"}, "amount": 120, "action": "sale"}),
    )
    .await?;
    let rewards = sale["data"]["rewards"]
        .as_array()
        .context("the sale lists its rewards")?;
    assert_eq!(rewards.len(), 1, "one reward for the referrer: {sale}");
    assert_eq!(rewards[0]["status"], "pending", "{sale}");

    // Within the hold the reward is pending but not yet ready for review.
    tab.follow("Rewards").await?;
    let row = tab.text_of("tr.reward").await?;
    assert!(row.contains("Ada Lovelace") && row.contains("10.00"), "{row}");
    assert!(!row.contains("ready for review"), "still in hold: {row}");

    // Fifteen days later the release task runs: a reward that needs approval is not
    // credited by it, it waits for a reviewer.
    let later = chrono::Utc::now() + chrono::Duration::days(15);
    let released = referdesk::domain::rewards::credit::release_due(&mut app.conn(), later)
        .map_err(|error| anyhow!("release_due: {error}"))?;
    assert_eq!(released, Default::default(), "nothing credited without approval");
    // The server reads the real clock: moving the reward's times 15 days back is how the
    // queue sees those days pass.
    diesel::sql_query(
        "UPDATE rewards SET created_at = created_at - interval '15 days', \
         hold_until = hold_until - interval '15 days'",
    )
    .execute(&mut app.conn())?;
    tab.client.refresh().await?;
    let row = tab.text_of("tr.reward").await?;
    assert!(row.contains("ready for review"), "the hold is over: {row}");
    assert!(row.contains("pending"), "it waits for approval: {row}");
    tab.visit("/customers/ada").await?;
    tab.sees("No credits yet.").await?;

    tab.press("Sign out").await?;
    signed_in(app, tab, Role::Support).await?;
    tab.follow("Rewards").await?;
    tab.sees("Showing 1–1 of 1 rewards.").await?;
    tab.press("Approve").await?;
    tab.sees("approved and credited").await?;
    tab.visit("/rewards?status=credited").await?;
    let row = tab.text_of("tr.reward").await?;
    assert!(row.contains("credited") && row.contains("Ada Lovelace"), "{row}");

    tab.visit("/customers/ada").await?;
    let balance = tab.text_of("#balance .stats").await?;
    assert!(balance.contains("10.00") && balance.contains("USD"), "{balance}");
    Ok(())
}

/// What a page shows that a person would trip over, found by script: elements sticking out
/// past the right edge (outside a scrolling wrapper), form fields without a label, and the
/// number of `h1` headings (one is expected).
const LAYOUT_CHECK: &str = r#"
const width = document.documentElement.clientWidth;
const problems = [];
if (document.documentElement.scrollWidth > width + 1) {
  for (const element of document.body.querySelectorAll('*')) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || box.right <= width + 1) continue;
    let scrolled = false;
    for (let up = element.parentElement; up && up !== document.body; up = up.parentElement) {
      const overflow = getComputedStyle(up).overflowX;
      if (overflow === 'auto' || overflow === 'scroll' || overflow === 'hidden') { scrolled = true; break; }
    }
    if (scrolled) continue;
    const parent = element.parentElement;
    if (parent && parent !== document.body && parent.getBoundingClientRect().right > width + 1) continue;
    problems.push('sticks out ' + Math.round(box.right - width) + 'px: <' + element.tagName.toLowerCase()
      + (element.className ? ' class="' + element.className + '"' : '') + '> '
      + (element.innerText || '').trim().slice(0, 60));
  }
}
for (const field of document.querySelectorAll('input, select, textarea')) {
  if (field.type === 'hidden' || field.type === 'submit' || field.type === 'button') continue;
  const labelled = field.closest('label') || field.getAttribute('aria-label')
    || field.getAttribute('aria-labelledby') || (field.id && document.querySelector('label[for="' + field.id + '"]'));
  if (!labelled) problems.push('no label: <' + field.tagName.toLowerCase() + ' name="' + field.name + '">');
}
const headings = document.querySelectorAll('h1').length;
if (headings !== 1) problems.push(headings + ' h1 headings');
return problems;
"#;

impl Tab {
    /// Checks the page as it is at the window's width with [`LAYOUT_CHECK`]; with
    /// `REFERDESK_SCREENSHOTS=<dir>` set, also saves a screenshot `<dir>/<name>.png` to look at.
    async fn looks_right(&self, name: &str) -> anyhow::Result<()> {
        let found = self.client.execute(LAYOUT_CHECK, vec![]).await?;
        if let Some(dir) = std::env::var_os("REFERDESK_SCREENSHOTS") {
            // The whole page, not only what the window shows: stretch the window to it.
            let (width, height) = self.client.get_window_size().await?;
            let full = self
                .client
                .execute("return document.documentElement.scrollHeight", vec![])
                .await?
                .as_u64()
                .unwrap_or(height);
            self.client
                .set_window_size(width as u32, full.max(height) as u32)
                .await?;
            let png = Path::new(&dir).join(format!("{name}.png"));
            let shot = self.client.screenshot().await;
            self.client.set_window_size(width as u32, height as u32).await?;
            std::fs::write(&png, shot?).with_context(|| format!("write {}", png.display()))?;
        }
        let problems: Vec<String> = serde_json::from_value(found)?;
        anyhow::ensure!(
            problems.is_empty(),
            "{name} ({}):\n{}",
            self.path().await?,
            problems.join("\n")
        );
        Ok(())
    }

    /// The link in the main navigation marked as the current section.
    async fn current_section(&self) -> anyhow::Result<String> {
        self.text_of(".mainnav a[aria-current='page']").await
    }
}

/// The pages of rewards, transactions and webhooks, at a desktop's width and a phone's
/// (375 px): nothing sticks out of the page, every field has a label, one heading each,
/// and each page is marked in the navigation.
#[apply(browser_scenario!)]
async fn reward_pages_fit_desktop_and_phone(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    let rule = crate::transactions::add_rule(
        app,
        &[
            (
                "name",
                "'A rather long rule name: 10 USD for the friend''s first sale'",
            ),
            ("sale_scope", "'first'"),
            ("hold_days", "14"),
            ("needs_approval", "true"),
        ],
    );
    let api = ApiClient::new(app);
    api.post(
        "/customers",
        serde_json::json!({"key": "ada", "email": "ada.lovelace@analytical.example", "name": "Ada", "surname": "Lovelace"}),
    )
    .await?;
    for n in 1..=30 {
        let friend = format!("friend-{n:02}");
        api.post(
            "/customers",
            serde_json::json!({"key": friend, "email": format!("{friend}@a-long-domain-name.example"),
                               "name": "Friend", "surname": format!("{n:02}"), "referring_customer": {"key": "ada"}}),
        )
        .await?;
        api.post(
            "/transactions",
            serde_json::json!({"key": format!("order-with-a-long-key-{n:04}"), "customer": {"key": friend},
                               "amount": 1234.56, "product_type": "subscription"}),
        )
        .await?;
    }
    signed_in(app, tab, Role::Admin).await?;
    // A new admin's first webhook: this machine resolves no public host name, so the form
    // refuses one, with a message next to the URL...
    tab.follow("Webhooks").await?;
    tab.sees("No webhooks yet.").await?;
    tab.follow("New webhook").await?;
    tab.fill("Name", "Our backend").await?;
    tab.fill("URL", "https://hooks.shop.example/referdesk/webhooks/incoming")
        .await?;
    tab.press("Create webhook").await?;
    assert!(tab
        .message_next_to("URL")
        .await?
        .contains("could not be resolved"));
    // ...and the subscription is made as an on-premise setup (private receivers allowed)
    // would; its deliveries fail, which fills the delivery log.
    let program = app.default_program();
    let input = referdesk::domain::webhooks::SubscriptionInput {
        name: Some("Our backend".into()),
        url: Some("https://127.0.0.1:9/referdesk/webhooks/incoming".into()),
        all_events: Some(true),
        events: Some(Vec::new()),
        is_active: Some(true),
    };
    let policy = referdesk::domain::webhooks::addresses::Policy {
        allow_http: false,
        allow_private: true,
    };
    referdesk::domain::webhooks::subscriptions::create(
        &mut app.conn(),
        program.id,
        &referdesk::domain::Actor::system(),
        input,
        policy,
    )
    .map_err(|error| anyhow!("webhook subscription: {error}"))?;
    tab.follow("Webhooks").await?;
    tab.follow("Our backend").await?;
    tab.sees("Deliveries of “Our backend”").await?;
    let deliveries = tab.path().await?;

    let reward: i64 = {
        use diesel::prelude::*;
        referdesk::db::schema::rewards::table
            .select(referdesk::db::schema::rewards::id)
            .order(referdesk::db::schema::rewards::id.asc())
            .first(&mut app.conn())?
    };
    let pages: Vec<(&str, String, &str)> = vec![
        ("dashboard", "/".into(), "Dashboard"),
        ("rules", "/rules".into(), "Reward rules"),
        ("rules-new", "/rules/new".into(), "Reward rules"),
        ("rules-edit", format!("/rules/{rule}/edit"), "Reward rules"),
        ("transactions", "/transactions".into(), "Transactions"),
        (
            "transactions-page-2",
            "/transactions?status=booked&page=2".into(),
            "Transactions",
        ),
        ("rewards", "/rewards".into(), "Rewards"),
        ("rewards-all", "/rewards?status=all&flagged=1".into(), "Rewards"),
        ("reward-deny", format!("/rewards/{reward}/deny"), "Rewards"),
        ("customer", "/customers/ada".into(), "Customers"),
        ("friend", "/customers/friend-01".into(), "Customers"),
        ("webhooks", "/webhooks".into(), "Webhooks"),
        ("webhooks-new", "/webhooks/new".into(), "Webhooks"),
        ("webhook-deliveries", deliveries, "Webhooks"),
        (
            "customer-deliveries",
            "/webhooks/deliveries?customer=ada".into(),
            "Webhooks",
        ),
    ];
    for (width, height, device) in [(1280, 1000, "desktop"), (375, 800, "phone")] {
        tab.client.set_window_size(width, height).await?;
        for (name, path, section) in &pages {
            tab.visit(path).await?;
            tab.does_not_see("Internal Server Error").await?;
            assert_eq!(&tab.current_section().await?, section, "{path} in the navigation");
            tab.looks_right(&format!("{name}-{device}")).await?;
        }
        // The bulk confirmation is reached by a button, not an address.
        tab.visit("/rewards").await?;
        tab.press("Approve all matching…").await?;
        tab.sees("30").await?;
        tab.looks_right(&format!("rewards-confirm-{device}")).await?;
    }
    Ok(())
}

#[apply(browser_scenario!)]
async fn approve_all_matching_and_watch_the_job_finish(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    // More than a thousand: the action runs as a background job.
    let program_id = app.default_program().id;
    diesel::sql_query(format!(
        "INSERT INTO customers (program_id, external_id, key, email, approved, created_at) \
         SELECT {program_id}, 'ext-waiting' || i, 'waiting' || i, 'waiting' || i || '@queue.example', false, \
         now() - (i || ' seconds')::interval FROM generate_series(1, 1200) AS i"
    ))
    .execute(&mut app.conn())?;
    ada(app);
    signed_in(app, tab, Role::Support).await?;
    tab.visit("/customers?approved=no").await?;
    tab.sees("customers match these filters").await?;

    // The header box ticks every row of the page (app.js).
    tab.client
        .find(Locator::Css("input.select-all"))
        .await?
        .click()
        .await?;
    let boxes = tab
        .client
        .find_all(Locator::Css("input[type=checkbox][name=key]:checked"))
        .await?;
    assert_eq!(boxes.len(), 15, "every row of the page is ticked");

    tab.client.find(Locator::Id("scope-all")).await?.click().await?;
    tab.choose("Action", "Approve").await?;
    tab.press("Continue…").await?;
    tab.sees("Approve 1,200 customers?").await?;
    tab.sees("Every customer matching the list's filters").await?;
    let button = tab.text_of("#bulk-run").await?;
    assert!(
        button.starts_with("Approve ") && button.ends_with(" customers"),
        "{button}"
    );
    tab.press(&button).await?;
    tab.sees("being handled in the background").await?;
    assert!(tab.path().await?.starts_with("/jobs/"));

    // The page refreshes itself until the bar is full: its progress region, by live.js,
    // without reloading the page (a mark left on the window stays).
    let running = tab
        .client
        .execute(
            "window.referdeskMark = 1; return document.getElementById('job-live').hasAttribute('data-refresh-secs')",
            vec![],
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let shown = tab.text().await.unwrap_or_default();
        if shown.contains("1,200 of 1,200 rows") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the job did not finish; the page shows:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tab.sees("100%").await?;
    assert_eq!(tab.text_of("#job-status").await?, "done");
    assert_eq!(tab.text_of("#job-done").await?, "1,200");
    if running.as_bool() == Some(true) {
        let mark = tab
            .client
            .execute("return window.referdeskMark || 0", vec![])
            .await?;
        assert_eq!(
            mark.as_i64(),
            Some(1),
            "the region was refreshed in place, not the page reloaded"
        );
    }
    let pending: i64 = {
        use diesel::prelude::*;
        use referdesk::db::schema::customers;
        customers::table
            .filter(customers::approved.eq(false))
            .count()
            .get_result(&mut app.conn())?
    };
    assert_eq!(pending, 0);
    Ok(())
}

/// Importing a CSV file: upload, map a column the header did not name, dry run, import,
/// the bar at 100%, and the refused rows downloaded.
#[apply(browser_scenario!)]
async fn import_customers_from_a_csv_file(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!(
        "referdesk-import-{}-{}.csv",
        std::process::id(),
        app.address.len()
    ));
    std::fs::write(
        &path,
        "Email;Vorname;Referred by\nada@example.com;Ada;\nbob@example.com;Bob;ada@example.com\nnot-an-email;Cy;\n",
    )?;
    signed_in(app, tab, Role::Admin).await?;
    tab.visit("/customers").await?;
    tab.follow("Import CSV").await?;
    tab.field("CSV file")
        .await?
        .send_keys(path.to_str().unwrap_or_default())
        .await?;
    tab.press("Upload").await?;
    assert_eq!(
        tab.text_of("h1").await?,
        format!(
            "Import {}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        )
    );
    assert_eq!(tab.chosen("Email").await?, "Email");
    assert_eq!(tab.chosen("Referred by").await?, "Referrer (key or email)");
    assert_eq!(tab.chosen("Vorname").await?, "Custom field \"Vorname\"");
    tab.choose("Vorname", "Name").await?;
    tab.field("Import the valid rows; I fix the rest")
        .await?
        .click()
        .await?;
    tab.press("Dry run").await?;
    tab.sees("Dry run: 3 rows, 2 would be created, 0 updated, 1 refused. Nothing was written.")
        .await?;
    tab.sees("Enter a valid email address.").await?;
    assert_eq!(tab.chosen("Vorname").await?, "Name", "the mapping is kept");

    // The import runs in the background: its job's page, refreshing itself, shows the
    // bar until it reaches 100% and the result.
    tab.press("Import").await?;
    assert!(tab.path().await?.starts_with("/jobs/"), "the job's page");
    tab.sees("runs in the background").await?;
    tab.sees("Imported: 2 created, 0 updated, 1 refused.").await?;
    let status = tab
        .client
        .find(Locator::Id("job-progress"))
        .await?
        .attr("data-status")
        .await?;
    assert_eq!(status.as_deref(), Some("done"));
    let progress = tab.client.find(Locator::Css("#job-progress progress")).await?;
    let (value, max) = (progress.attr("value").await?, progress.attr("max").await?);
    assert_eq!(
        (value.as_deref(), max.as_deref()),
        (Some("100"), Some("100")),
        "the bar at 100%"
    );
    tab.sees("100% · Imported: 2 created, 0 updated, 1 refused.")
        .await?;
    let href = tab
        .client
        .find(Locator::LinkText("Download the refused rows (CSV)"))
        .await?
        .attr("href")
        .await?
        .unwrap_or_default();
    let downloaded = tab
        .client
        .execute(
            "return fetch(arguments[0]).then(r => r.text())",
            vec![serde_json::json!(href)],
        )
        .await?;
    assert_eq!(
        downloaded.as_str(),
        Some(
            "Email,Vorname,Referred by,line,errors\nnot-an-email,Cy,,4,Email: Enter a valid email address.\n"
        )
    );

    tab.visit("/customers").await?;
    tab.sees("bob@example.com").await?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Whether the buttons or links named are inside the window as it opens (no scrolling).
const IN_FIRST_SCREEN: &str = r#"
const names = arguments[0];
const seen = [];
for (const element of document.querySelectorAll('.customer-header a, .customer-header button')) {
  const box = element.getBoundingClientRect();
  const text = (element.innerText || '').trim();
  if (names.includes(text) && box.width > 0 && box.top >= 0 && box.bottom <= window.innerHeight
      && box.right <= window.innerWidth) seen.push(text);
}
return seen;
"#;

/// Issue 22: the customer's header holds the balance and the primary actions, visible
/// without scrolling at a desktop's width and a phone's (390 px); the balance of 250,000
/// points reads with its separator; the timeline words a credit and a referral.
#[apply(browser_scenario!)]
async fn customer_header_and_timeline_read_at_a_glance(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    customer(
        app,
        Person {
            key: "mia",
            email: "mia@friend.example",
            name: "Mia",
            surname: "Friend",
            referred_by: Some("ada"),
        },
    );
    signed_in(app, tab, Role::Support).await?;
    tab.visit("/customers/ada").await?;
    tab.follow("Credit").await?;
    tab.fill("Amount", "250000").await?;
    let is_currency = tab.client.find(Locator::Css("input[name='is_currency']")).await?;
    if is_currency.is_selected().await? {
        is_currency.click().await?;
    }
    tab.fill("Unit name", "points").await?;
    tab.fill("Note", "goodwill (ticket #4711)").await?;
    tab.press("Book").await?;
    tab.sees("Credited 250,000 points for Ada Lovelace.").await?;
    let header = tab.text_of(".customer-header").await?;
    assert!(header.contains("250,000 points"), "{header}");
    let activity = tab.text_of("#activity").await?;
    assert!(
        activity.contains("Test Member credited 250,000 points — goodwill (ticket #4711)")
            || activity.contains("credited 250,000 points — goodwill (ticket #4711)"),
        "{activity}"
    );
    assert!(
        activity.contains("Mia Friend signed up through Ada Lovelace's link"),
        "{activity}"
    );

    let wanted = serde_json::json!(["Credit", "Invite", "Copy referral link"]);
    for (width, height) in [(1280, 800), (390, 844)] {
        tab.client.set_window_size(width, height).await?;
        tab.visit("/customers/ada").await?;
        let seen = tab.client.execute(IN_FIRST_SCREEN, vec![wanted.clone()]).await?;
        let seen: Vec<String> = serde_json::from_value(seen)?;
        for name in ["Credit", "Invite", "Copy referral link"] {
            assert!(
                seen.iter().any(|text| text == name),
                "{name} not in the first screen at {width} px: {seen:?}"
            );
        }
    }
    tab.client.set_window_size(1280, 800).await?;
    Ok(())
}

/// Issue 22: changing the referrer names the old and the new one and waits for a yes;
/// erasing asks for the customer's email or key typed, and refuses anything else.
#[apply(browser_scenario!)]
async fn referrer_change_and_erase_ask_first(app: &TestApp, tab: &Tab) -> anyhow::Result<()> {
    ada(app);
    customer(
        app,
        Person {
            key: "linus",
            email: "linus@friend.example",
            name: "Linus",
            surname: "Allen",
            referred_by: None,
        },
    );
    customer(
        app,
        Person {
            key: "mia",
            email: "mia@friend.example",
            name: "Mia",
            surname: "Friend",
            referred_by: Some("ada"),
        },
    );
    signed_in(app, tab, Role::Admin).await?;
    tab.visit("/customers/mia").await?;
    tab.fill("New referrer", "linus").await?;
    tab.press("Change referrer…").await?;
    tab.sees("Change the referrer of Mia Friend from Ada Lovelace to Linus Allen")
        .await?;
    tab.visit("/customers/mia").await?;
    tab.sees("Ada Lovelace").await?;
    tab.fill("New referrer", "linus").await?;
    tab.press("Change referrer…").await?;
    tab.press("Yes, change the referrer").await?;
    tab.sees("Referrer changed.").await?;
    assert!(tab.text_of("#referrer").await?.contains("Linus Allen"));

    tab.visit("/customers/mia").await?;
    let label = "Type the email mia@friend.example or the key mia to confirm";
    tab.fill(label, "ada").await?;
    tab.press("Erase personal data").await?;
    assert!(tab.message_next_to(label).await?.contains("nothing was erased"));
    tab.sees("Mia Friend").await?;
    tab.fill(label, "mia@friend.example").await?;
    tab.press("Erase personal data").await?;
    tab.sees("The personal data of customer mia was erased.").await?;
    tab.does_not_see("Mia Friend").await?;
    Ok(())
}
mod layout;
