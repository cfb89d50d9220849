//! Referdesk: a self-hosted manager for refer-a-friend programs.
//!
//! `main.rs` and the integration tests both start the server through [`Application`], so
//! tests exercise exactly what runs in production.

pub mod api;
mod background;
pub mod client_address;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod job_worker;
pub mod mail;
pub mod private_files;
pub mod pruner;
pub mod random;
pub mod reward_release;
pub mod routes;
pub mod seed;
pub mod web;
pub mod webhooks;

use std::net::TcpListener;
use std::time::Instant;

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::SessionMiddleware;
use actix_web::body::MessageBody;
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, DefaultHeaders, Next};
use actix_web::web::{Data, FormConfig, PathConfig, QueryConfig};
use actix_web::{App, HttpServer};
use anyhow::Context;

use crate::config::Config;
use crate::db::embedded::EmbeddedPostgres;
use crate::db::DbPool;
use crate::error::Error;

/// Shared by every request handler.
pub struct AppState {
    pub pool: DbPool,
    pub config: Config,
    /// Signs cookies besides the session's (the device cookie, `web::device`).
    pub cookie_key: Key,
    /// Tells the mail worker that a message is waiting.
    pub mail: mail::MailWaker,
    /// The programs list every signed-in page shows (see `web::access::ProgramsCache`).
    pub programs: web::access::ProgramsCache,
    /// The customer list and its caches (see `listing::CustomerList`).
    pub customer_list: domain::customers::listing::CustomerList,
}

pub struct Application {
    port: u16,
    server: Server,
    /// The one-time link that creates the first admin, when nobody can sign in yet.
    pub setup_url: Option<String>,
    pub pool: DbPool,
    embedded: Option<EmbeddedPostgres>,
    mail: Option<mail::MailWorker>,
    pruner: Option<pruner::Pruner>,
    webhooks: Option<webhooks::WebhookWorker>,
    reward_release: Option<reward_release::RewardRelease>,
    listener: Option<db::listener::Listener>,
    replica_watch: Option<db::replicas::ReplicaWatch>,
    jobs: Option<job_worker::JobWorker>,
}

/// Where the database is: the configured server, or the private cluster under the data dir
/// (started here, or found running). Makes the data dir private first.
pub fn resolve_database(config: &Config) -> anyhow::Result<(String, Option<EmbeddedPostgres>)> {
    let cluster_group = match &config.database_url {
        Some(_) => None,
        None => db::embedded::server_group()?,
    };
    private_files::data_dir(&config.data_dir, cluster_group)
        .with_context(|| format!("could not create {}", config.data_dir.display()))?;
    match &config.database_url {
        Some(url) => Ok((url.clone(), None)),
        None => {
            let cluster = EmbeddedPostgres::start(&config.data_dir.join("postgres"))?;
            if cluster.started_here() {
                tracing::info!(port = cluster.port(), "started the embedded PostgreSQL cluster");
            } else {
                tracing::info!(
                    port = cluster.port(),
                    "using the running embedded PostgreSQL cluster"
                );
            }
            Ok((cluster.url("referdesk"), Some(cluster)))
        }
    }
}

/// Creates and migrates the database, then makes sure the first program exists: what the
/// server, each CLI command and the tests' template database start with.
pub fn prepare_database(url: &str) -> anyhow::Result<()> {
    let mut conn = db::prepare(url)?;
    domain::programs::ensure_default_program(&mut conn)
        .map_err(|error| anyhow::anyhow!("could not create the default program: {error}"))
}

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "referdesk_session";

/// Sessions in PostgreSQL behind a signed cookie that ends with the browser session.
fn session_middleware(
    store: web::session_store::PgSessionStore,
    key: Key,
    secure_cookies: bool,
) -> SessionMiddleware<web::session_store::PgSessionStore> {
    SessionMiddleware::builder(store, key)
        .cookie_name(SESSION_COOKIE.to_string())
        .cookie_http_only(true)
        .cookie_secure(secure_cookies)
        .cookie_same_site(SameSite::Lax)
        .cookie_content_security(CookieContentSecurity::Signed)
        .session_lifecycle(BrowserSession::default().state_ttl(actix_web::cookie::time::Duration::hours(12)))
        .build()
}

fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .add(("X-Frame-Options", "DENY"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "same-origin"))
}

/// Forms are small (`web::csrf::MAX_FORM_BYTES`); one that cannot be read is a 400 page.
fn form_config() -> FormConfig {
    FormConfig::default()
        .limit(web::csrf::MAX_FORM_BYTES)
        .error_handler(|error, _| Error::BadRequest(format!("The form could not be read: {error}")).into())
}

fn query_config() -> QueryConfig {
    QueryConfig::default().error_handler(|error, _| {
        Error::BadRequest(format!("The address has an invalid parameter: {error}")).into()
    })
}

/// The background workers, each on connections of its own so that none holds one the pages
/// share.
struct Workers {
    mail: mail::MailWorker,
    pruner: pruner::Pruner,
    webhooks: Option<webhooks::WebhookWorker>,
    reward_release: Option<reward_release::RewardRelease>,
    jobs: Option<job_worker::JobWorker>,
}

impl Workers {
    fn start(
        config: &Config,
        database_url: &str,
        statement_timeout: std::time::Duration,
        customer_list: &domain::customers::listing::CustomerList,
    ) -> anyhow::Result<Workers> {
        // The mail worker keeps a connection while it talks to the SMTP server (seconds,
        // when that is slow): its own, so a batch of invites never takes one of the few
        // the pages share.
        let mail =
            mail::MailWorker::start(db::build_server_pool(database_url, 1, statement_timeout), config)?;
        // Its own connection without a statement timeout: a large backlog may take longer.
        let pruner = pruner::Pruner::start(
            db::build_pool(database_url, 1),
            chrono::Duration::days(config.webhooks.retention_days),
        )?;
        // Its own few connections: a claim, and the recording of finished attempts.
        let webhooks = if config.webhooks.worker {
            Some(webhooks::WebhookWorker::start(
                db::build_server_pool(database_url, 3, statement_timeout),
                &config.webhooks,
            )?)
        } else {
            None
        };
        // Its own connection too: a pass over a large backlog must not hold one of the
        // pages' connections. An interval of 0 turns it off (tests release by hand).
        let reward_release = match config.reward_release_secs {
            0 => None,
            secs => Some(reward_release::RewardRelease::start(
                db::build_pool(database_url, 1),
                std::time::Duration::from_secs(secs),
            )?),
        };
        // Its own connections: a batch holds one for its transaction, an import's steps
        // are written on the other.
        let jobs = if config.jobs.worker {
            Some(job_worker::JobWorker::start(
                db::build_server_pool(database_url, 2, statement_timeout),
                customer_list.clone(),
                config.jobs.run_settings(),
            )?)
        } else {
            None
        };
        Ok(Workers {
            mail,
            pruner,
            webhooks,
            reward_release,
            jobs,
        })
    }

    /// Wakes the workers of this process when any process queues work for them.
    fn listen(&self, config: &Config, database_url: &str) -> anyhow::Result<db::listener::Listener> {
        let mut wakeups: Vec<(&'static str, db::listener::OnNotify)> = vec![(db::listener::MAIL, {
            let waker = self.mail.waker();
            Box::new(move || waker.wake())
        })];
        if let Some(worker) = &self.webhooks {
            let waker = worker.waker();
            wakeups.push((db::listener::WEBHOOKS, Box::new(move || waker.wake())));
        }
        if let Some(release) = &self.reward_release {
            wakeups.push((db::listener::REWARDS, Box::new(release.waker())));
        }
        if let Some(worker) = &self.jobs {
            wakeups.push((db::listener::JOBS, Box::new(worker.waker())));
        }
        // LISTEN needs a session of its own too (not through a transaction pooler).
        db::listener::Listener::start(&config.direct_url(database_url), wakeups)
    }
}

/// The one-time link that creates the first admin, when nobody can sign in yet.
fn first_admin_url(pool: &DbPool, config: &Config) -> anyhow::Result<Option<String>> {
    let mut conn = pool.get().context("could not connect to the database")?;
    Ok(domain::team::setup_token_if_needed(&mut conn)?
        .map(|token| format!("{}/setup?token={}", config.public_url, token)))
}

/// The HTTP server with its middleware and routes, listening but not yet awaited.
fn http_server(
    config: &Config,
    listener: TcpListener,
    state: Data<AppState>,
    store: web::session_store::PgSessionStore,
    key: Key,
) -> anyhow::Result<Server> {
    let secure_cookies = config.serves_https();
    let form_tokens = Data::new(web::csrf::FormTokens::new(&key, secure_cookies));
    let server = HttpServer::new(move || {
        let sessions = session_middleware(store.clone(), key.clone(), secure_cookies);
        // The access check reads the rules of exactly the routes registered here.
        let routes = routes::all();
        App::new()
            .app_data(Data::new(routes.table()))
            .app_data(state.clone())
            .app_data(form_tokens.clone())
            .app_data(form_config())
            .app_data(query_config())
            .app_data(PathConfig::default().error_handler(|_, _| Error::NotFound.into()))
            .wrap(from_fn(web::error_pages::catch_panics))
            .wrap(from_fn(web::access::enforce))
            .wrap(from_fn(web::csrf::protect))
            .wrap(sessions)
            // Outside the sessions: it sees the cookie of a sign-in.
            .wrap(from_fn(web::read_routing::route_reads))
            .wrap(security_headers())
            .wrap(from_fn(web::error_pages::fill_empty_errors))
            .wrap(from_fn(api::no_store))
            .wrap(from_fn(log_request))
            // Outermost: it edits the request's headers, which only works while no
            // other middleware holds the request.
            .wrap(from_fn(web::sessionless::skip_sessions))
            .configure(|cfg| routes.register(cfg))
            .default_service(actix_web::web::to(web::not_found))
    })
    .workers(config.workers)
    .listen(listener)?
    .run();
    Ok(server)
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let (database_url, embedded) = resolve_database(&config)?;
        // Its advisory lock needs a session of its own: not through a transaction pooler.
        prepare_database(&config.direct_url(&database_url))?;
        let statement_timeout = std::time::Duration::from_millis(config.statement_timeout_ms);
        let pool = db::build_server_pool(&database_url, config.pool_size, statement_timeout)
            .with_replicas(&config.replica_urls, config.replica_max_lag);
        let replica_watch = match pool.replicas() {
            Some(replicas) => Some(db::replicas::ReplicaWatch::start(
                &database_url,
                replicas.clone(),
            )?),
            None => None,
        };
        let setup_url = first_admin_url(&pool, &config)?;

        let listener = TcpListener::bind(&config.bind)
            .with_context(|| format!("could not listen on {}", config.bind))?;
        let port = listener.local_addr()?.port();
        let key = Key::derive_from(&config.cookie_secret()?);
        let customer_list = domain::customers::listing::CustomerList::default();
        let workers = Workers::start(&config, &database_url, statement_timeout, &customer_list)?;
        let work_listener = workers.listen(&config, &database_url)?;
        let state = Data::new(AppState {
            pool: pool.clone(),
            config: config.clone(),
            cookie_key: key.clone(),
            mail: workers.mail.waker(),
            programs: web::access::ProgramsCache::default(),
            customer_list,
        });
        // A session is read right after it was written (a sign-in) and must end
        // everywhere at once (a sign-out, a disabled member): always the primary.
        let store = web::session_store::PgSessionStore::new(pool.primary_only());
        let server = http_server(&config, listener, state, store, key)?;

        let Workers {
            mail,
            pruner,
            webhooks,
            reward_release,
            jobs,
        } = workers;
        Ok(Application {
            port,
            server,
            setup_url,
            pool,
            embedded,
            mail: Some(mail),
            pruner: Some(pruner),
            webhooks,
            reward_release,
            listener: Some(work_listener),
            replica_watch,
            jobs,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests, signal handlers).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (or a stop through [`Application::handle`]), then stops
    /// the mail worker after the message it is sending, the pruner after its pass, and the
    /// embedded database (if any).
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some(listener) = self.listener.take() {
            let _ = actix_web::rt::task::spawn_blocking(move || listener.stop()).await;
        }
        if let Some(worker) = self.mail.take() {
            let _ = actix_web::rt::task::spawn_blocking(move || worker.stop()).await;
        }
        if let Some(pruner) = self.pruner.take() {
            let _ = actix_web::rt::task::spawn_blocking(move || pruner.stop()).await;
        }
        if let Some(worker) = self.webhooks.take() {
            let _ = actix_web::rt::task::spawn_blocking(move || worker.stop()).await;
        }
        if let Some(release) = self.reward_release.take() {
            let _ = actix_web::rt::task::spawn_blocking(move || release.stop()).await;
        }
        if let Some(watch) = self.replica_watch.take() {
            let _ = actix_web::rt::task::spawn_blocking(move || watch.stop()).await;
        }
        if let Some(worker) = self.jobs.take() {
            let _ = actix_web::rt::task::spawn_blocking(move || worker.stop()).await;
        }
        if let Some(mut cluster) = self.embedded.take() {
            cluster.stop();
        }
        result
    }
}

/// One log line per request, with a request id to tie together what it logged.
async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use tracing::Instrument;
    let started = Instant::now();
    let span = tracing::info_span!("request", id = %random::random_token(12));
    let method = req.method().clone();
    let path = req.path().to_string();
    // Everything the request logs, in handlers and blocking database work alike, carries
    // the request id.
    let response = next.call(req).instrument(span.clone()).await?;
    span.in_scope(|| {
        tracing::info!(
            %method,
            %path,
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "handled"
        )
    });
    Ok(response)
}
