//! `TestApp`: a running Referdesk on a free port with its own database, plus a browser-like
//! HTTP client that keeps cookies and fills in CSRF tokens.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use diesel::{Connection, PgConnection, RunQueryDsl};
use referdesk::config::Config;
use referdesk::db::embedded::EmbeddedPostgres;
use referdesk::db::{self, DbPool};
use referdesk::domain::customers::listing::{CustomerFilter, CustomerList, ListPage, ListRequest, PastEnd};
use referdesk::domain::customers::{self, Customer, CustomerInput, NewCustomer};
use referdesk::domain::programs::{self, Program};
use referdesk::domain::team::{self, NewMember, Role};
use referdesk::domain::{tokens, Actor};
use referdesk::Application;

/// The PostgreSQL server of this test run and the template every test database copies.
pub struct TestDatabase {
    admin_url: String,
    prefix: String,
    cluster: Option<EmbeddedPostgres>,
    scratch: std::path::PathBuf,
}

static SERVER: OnceLock<(String, String, std::path::PathBuf)> = OnceLock::new();
static CREATE_LOCK: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDatabase {
    /// Uses `DATABASE_URL`'s server when set, else a private cluster for this run.
    pub fn start() -> TestDatabase {
        let prefix = format!(
            "rdtest_{}_{}",
            std::process::id(),
            referdesk::random::random_token(6).to_lowercase()
        );
        let scratch = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        let (admin_url, cluster) = match std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty()) {
            Some(url) => (db::url_with_database(&url, "postgres"), None),
            None => {
                let cluster = EmbeddedPostgres::start(&scratch.join("postgres"))
                    .expect("tests need PostgreSQL: set DATABASE_URL or install the server binaries");
                (cluster.url("postgres"), Some(cluster))
            }
        };
        let template = format!("{prefix}_template");
        let mut admin = PgConnection::establish(&admin_url).expect("connect to the test server");
        diesel::sql_query(format!("CREATE DATABASE {template}"))
            .execute(&mut admin)
            .expect("create template");
        referdesk::prepare_database(&db::url_with_database(&admin_url, &template))
            .expect("migrate the template");
        SERVER
            .set((admin_url.clone(), prefix.clone(), scratch.clone()))
            .ok();
        TestDatabase {
            admin_url,
            prefix,
            cluster,
            scratch,
        }
    }

    /// Drops this run's databases from `DATABASE_URL`'s server, or stops and removes the
    /// private cluster (dropping its databases first would only wait for a checkpoint per
    /// database: minutes after a full run on a busy machine).
    pub fn finish(mut self) {
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop();
            let _ = std::fs::remove_dir_all(&self.scratch);
            return;
        }
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            #[derive(diesel::QueryableByName)]
            struct Name {
                #[diesel(sql_type = diesel::sql_types::Text)]
                datname: String,
            }
            let names: Vec<Name> = diesel::sql_query(format!(
                "SELECT datname FROM pg_database WHERE datname LIKE '{}%'",
                self.prefix
            ))
            .load(&mut admin)
            .unwrap_or_default();
            for name in names {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", name.datname))
                    .execute(&mut admin);
            }
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A fresh database copied from the migrated template; returns its URL.
pub fn fresh_database() -> String {
    let (admin_url, prefix, _) = SERVER.get().expect("TestDatabase::start ran");
    let name = format!("{prefix}_{}", COUNTER.fetch_add(1, Ordering::SeqCst));
    let _guard = CREATE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut admin = PgConnection::establish(admin_url).expect("connect to the test server");
    diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {prefix}_template"))
        .execute(&mut admin)
        .expect("create test database");
    db::url_with_database(admin_url, &name)
}

/// Runs an async test body on its own runtime.
pub fn run<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test)
}

/// One registered integration test: builds its trial when the run starts.
pub struct IntegrationTest(pub fn() -> libtest_mimic::Trial);

inventory::collect!(IntegrationTest);

/// Every registered test, ordered by name so runs and listings are stable.
pub fn registered_trials() -> Vec<libtest_mimic::Trial> {
    let mut trials: Vec<_> = inventory::iter::<IntegrationTest>
        .into_iter()
        .map(|test| (test.0)())
        .collect();
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    trials
}

/// Makes an `async fn` a test of this binary, named after its module path:
/// `#[apply(integration_test!)] async fn name() { ... }` runs as `module::name`.
#[macro_export]
macro_rules! integration_test {
    ($(#[$meta:meta])* async fn $name:ident() $body:block) => {
        $(#[$meta])*
        async fn $name() $body

        inventory::submit! {
            $crate::helpers::IntegrationTest(|| {
                libtest_mimic::Trial::test(
                    concat!(module_path!(), "::", stringify!($name)).trim_start_matches("integration::"),
                    || {
                        $crate::helpers::run($name());
                        Ok(())
                    },
                )
            })
        }
    };
}

pub struct TestApp {
    pub address: String,
    pub setup_url: Option<String>,
    pub database_url: String,
    pub pool: DbPool,
    pub browser: Browser,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Sends the stop command now; the server's own thread finishes the shutdown.
        drop(self.handle.stop(false));
    }
}

pub fn test_config(database_url: &str) -> Config {
    let (_, _, scratch) = SERVER.get().expect("TestDatabase::start ran");
    Config {
        database_url: Some(database_url.to_string()),
        bind: "127.0.0.1:0".into(),
        data_dir: scratch.join(format!("data_{}", COUNTER.fetch_add(1, Ordering::SeqCst))),
        secret: Some("test-secret-test-secret-test-secret-0123456789".into()),
        public_url: "http://127.0.0.1".into(),
        pool_size: 5,
        smtp_url: None,
        mail_from: "Referdesk <referdesk@test.invalid>".into(),
        mail_max_attempts: 5,
        mail_retry_base_secs: 30,
        api_rate_per_minute: 100_000,
        workers: 2,
        trusted_proxies: Vec::new(),
        statement_timeout_ms: referdesk::config::DEFAULT_STATEMENT_TIMEOUT_MS,
        webhooks: Default::default(),
        // Tests release held rewards by hand, with a clock of their choosing.
        reward_release_secs: 0,
        direct_database_url: None,
        replica_urls: read_only_replica(database_url),
        replica_max_lag: referdesk::config::DEFAULT_REPLICA_MAX_LAG,
        jobs: Default::default(),
    }
}

/// With `REFERDESK_TEST_READ_ONLY_REPLICA=1`, every test server reads its GET requests
/// from a stand-in replica: its own database on a connection that refuses writes, as a
/// hot standby does, but never behind. A GET handler that writes without
/// `db::run_write` then fails its test. (`replicas::` tests a real standby.)
fn read_only_replica(database_url: &str) -> Vec<String> {
    let wanted = std::env::var("REFERDESK_TEST_READ_ONLY_REPLICA").is_ok_and(|value| value == "1");
    if !wanted {
        return Vec::new();
    }
    let separator = if database_url.contains('?') { '&' } else { '?' };
    vec![format!(
        "{database_url}{separator}options=-c%20default_transaction_read_only%3Don"
    )]
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        let database_url = fresh_database();
        TestApp::spawn_with(test_config(&database_url)).await
    }

    /// Starts the real server in its own actix system thread.
    pub async fn spawn_with(config: Config) -> TestApp {
        let database_url = config.database_url.clone().expect("tests give a database");
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match Application::build(config).await {
                    Ok(app) => {
                        let _ = sender.send(Ok((app.port(), app.setup_url.clone(), app.handle())));
                        let _ = app.run_until_stopped().await;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(format!("{error:#}")));
                    }
                }
            })
        });
        let (port, setup_url, handle) = receiver.recv().expect("server thread").expect("server starts");
        let address = format!("http://127.0.0.1:{port}");
        TestApp {
            browser: Browser::new(&address),
            address,
            setup_url,
            pool: db::build_pool(&database_url, 2),
            database_url,
            handle,
            thread: Some(thread),
        }
    }

    /// Stops the server gracefully and waits until it (and its mail worker) has finished.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .expect("join task")
                .expect("server thread finished cleanly");
        }
    }

    /// A direct database connection for assertions.
    pub fn conn(&self) -> db::DbConn {
        self.pool.get().expect("test database connection")
    }

    /// Creates a member directly in the database.
    pub fn create_member(&self, email: &str, role: Role, password: &str) -> i64 {
        let new =
            NewMember::parse(email, "Test Member", role.as_str(), Some(password)).expect("valid member");
        team::create_member(&mut self.conn(), &Actor::system(), new)
            .expect("member created")
            .id
    }

    /// A second browser with its own cookies.
    pub fn new_browser(&self) -> Browser {
        Browser::new(&self.address)
    }

    /// Creates a member with `role` and signs the default browser in as them.
    pub async fn login_as(&self, role: Role) -> i64 {
        let email = format!(
            "{}-{}@example.com",
            role.as_str(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let id = self.create_member(&email, role, PASSWORD);
        let response = self.browser.login(&email, PASSWORD).await;
        assert_eq!(response.status(), 303, "login as {role} failed");
        id
    }

    /// Creates a member with `role` and signs a new browser in as them.
    pub async fn signed_in_browser(&self, email: &str, role: Role) -> (i64, Browser) {
        let id = self.create_member(email, role, PASSWORD);
        let browser = self.new_browser();
        assert_eq!(
            browser.login(email, PASSWORD).await.status(),
            303,
            "login as {role} failed"
        );
        (id, browser)
    }

    /// The program every fresh database starts with.
    pub fn default_program(&self) -> Program {
        programs::find_by_slug(&mut self.conn(), "default").expect("default program")
    }

    /// Creates a customer in the default program, as the dashboard and the API do.
    pub fn create_customer(&self, input: CustomerInput) -> Customer {
        let new = NewCustomer::parse(input).expect("valid customer");
        customers::create(&mut self.conn(), &self.default_program(), &Actor::system(), new)
            .expect("customer created")
    }

    /// Creates an API token for the program with `slug` and returns its secret.
    pub fn create_token(&self, slug: &str) -> String {
        let program = programs::find_by_slug(&mut self.conn(), slug).expect("program");
        tokens::create(&mut self.conn(), program.id, "tests", &Actor::system())
            .expect("token created")
            .1
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.browser.get(path).await
    }

    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.browser.post_form(path, fields).await
    }
}

pub const PASSWORD: &str = "correct horse battery";

/// A cookie-keeping client that behaves like a browser without JavaScript.
pub struct Browser {
    pub address: String,
    pub client: reqwest::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
    csrf: Mutex<Option<String>>,
}

impl Browser {
    pub fn new(address: &str) -> Browser {
        Browser::with_client(address, reqwest::Client::builder())
    }

    /// A browser whose client is set up further, e.g. with a `local_address` or
    /// default headers.
    pub fn with_client(address: &str, builder: reqwest::ClientBuilder) -> Browser {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        Browser {
            address: address.to_string(),
            jar: jar.clone(),
            client: builder
                .cookie_provider(jar)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            csrf: Mutex::new(None),
        }
    }

    /// The `Cookie` header this browser would send.
    pub fn cookies(&self) -> String {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&self.address.parse().expect("address is a URL"))
            .and_then(|value| value.to_str().ok().map(str::to_string))
            .unwrap_or_default()
    }

    /// The session cookie alone (the others, such as the read-your-writes cookie with
    /// replicas, change with every write).
    pub fn session_cookie(&self) -> Option<String> {
        self.cookies()
            .split("; ")
            .find(|cookie| cookie.starts_with(&format!("{}=", referdesk::SESSION_COOKIE)))
            .map(str::to_string)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// GET; remembers the CSRF token of any page it sees, as a browser keeps the form.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// GET and read the body as text, remembering the page's CSRF token.
    pub async fn get_html(&self, path: &str) -> (u16, String) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        if let Some(token) = csrf_in(&body) {
            *self.csrf.lock().unwrap() = Some(token);
        }
        (status, body)
    }

    /// The CSRF token of this browser's session (fetched from a page when unknown).
    pub async fn csrf(&self) -> String {
        if let Some(token) = self.csrf.lock().unwrap().clone() {
            return token;
        }
        let (_, body) = self.get_html("/login").await;
        match csrf_in(&body) {
            Some(token) => token,
            None => {
                let (_, body) = self.get_html("/").await;
                csrf_in(&body).expect("a page with a CSRF token")
            }
        }
    }

    pub fn forget_csrf(&self) {
        *self.csrf.lock().unwrap() = None;
    }

    /// POSTs a form, adding this session's CSRF token unless the fields carry one.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !fields.iter().any(|(key, _)| key == "csrf_token") {
            fields.push(("csrf_token".into(), self.csrf().await));
        }
        self.client
            .post(self.url(path))
            .form(&fields)
            .send()
            .await
            .expect("POST")
    }

    /// Signs in through the login form; the CSRF token is fetched afresh afterwards.
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.forget_csrf();
        let response = self
            .post_form("/login", &[("email", email), ("password", password)])
            .await;
        self.forget_csrf();
        response
    }
}

/// The value of the first `csrf_token` hidden input in a page.
pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf_token\" value=\"")? + "name=\"csrf_token\" value=\"".len();
    let end = html[at..].find('"')? + at;
    Some(html[at..end].to_string())
}

/// The value of the first `form_token` hidden input (a form's one-time token) in a page.
pub fn form_token_in(html: &str) -> Option<String> {
    let at = html.find("name=\"form_token\" value=\"")? + "name=\"form_token\" value=\"".len();
    let end = html[at..].find('"')? + at;
    Some(html[at..end].to_string())
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Page `page` of the program's customer list as `filter` selects it, through the list's
/// one entry point (`CustomerList`, whose caches `list` holds), answered as the API answers
/// it (a page past the end is empty).
pub fn list_page(
    conn: &mut PgConnection,
    list: &CustomerList,
    program_id: i64,
    filter: &CustomerFilter,
    page: i64,
    per_page: i64,
) -> ListPage<Customer> {
    let request = ListRequest {
        filter: filter.clone(),
        page,
        per_page,
        cursor: None,
        past_end: PastEnd::Empty,
    };
    list.page(conn, program_id, &request)
        .expect("a page of the customer list")
}

/// Asserts that a dashboard form was refused (422) with each of these messages shown
/// (compared as the templates escape them), and returns the page for further checks.
pub async fn assert_refused(response: reqwest::Response, messages: &[&str]) -> String {
    let status = response.status();
    let body = response.text().await.expect("the refused form's page");
    assert_eq!(status, 422, "{body}");
    for message in messages {
        let escaped = message
            .replace('&', "&#38;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;")
            .replace('<', "&#60;")
            .replace('>', "&#62;");
        assert!(body.contains(&escaped), "{message:?} not shown: {body}");
    }
    body
}
