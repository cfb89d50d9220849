//! The connection pool, migrations, and the private PostgreSQL cluster used when no
//! `DATABASE_URL` is configured.

pub mod embedded;
pub mod fixed;
pub mod listener;
pub mod prepared;
pub mod reads;
pub mod replicas;
pub mod schema;
pub mod text_enum;

pub(crate) use text_enum::text_enum;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::connection::{
    AnsiTransactionManager, Instrumentation, InstrumentationEvent, SimpleConnection, TransactionManager,
};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, ManageConnection, Pool, PooledConnection};
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::Error;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub type DbConn = PooledConnection<Manager>;

/// How long a request waits for a connection before the server answers 503. Short, so an
/// outage gives a quick, clear answer rather than a hung browser.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection that answered a query this recently is handed out without a ping.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// How long a readiness check waits for the database, so that `/readyz` answers within
/// two seconds whatever the database does.
pub const READY_WITHIN: Duration = Duration::from_secs(1);

/// A pool of connections, and how long a request waits for its database work.
///
/// PostgreSQL ends a statement that runs past `statement_timeout` itself, but only while it
/// runs: a server that stops answering (a frozen process, a host gone without closing
/// the connection) enforces nothing, and a Unix socket has no TCP keepalive to notice.
/// So [`run`] stops waiting after the wait for a connection plus the statement timeout,
/// answers 503, and the connection it gave up on is dropped once it comes back.
///
/// A pool may have replicas (`REFERDESK_REPLICA_URL`): then [`run`] reads from one of
/// them when the request allows it (see [`reads`]), and from the primary otherwise.
#[derive(Clone)]
pub struct DbPool {
    pool: Pool<Manager>,
    wait_limit: Option<Duration>,
    /// What every connection is set up with (replicas' connections too).
    settings: String,
    replicas: Option<Arc<replicas::Replicas>>,
}

impl DbPool {
    /// A connection of the primary for work outside a request (start-up, the mail
    /// worker, tests).
    pub fn get(&self) -> Result<DbConn, r2d2::Error> {
        self.pool.get()
    }

    /// The same pool with reads from `urls` (none: the pool as it is). Their connections
    /// get the same settings; each replica keeps as many as the primary.
    pub fn with_replicas(self, urls: &[String], max_lag: Duration) -> DbPool {
        if urls.is_empty() {
            return self;
        }
        let replicas = replicas::Replicas::new(urls, max_lag, self.pool.max_size(), &self.settings);
        DbPool {
            replicas: Some(Arc::new(replicas)),
            ..self
        }
    }

    /// The same primary, without replicas: for what must always read what was just
    /// written (sessions, the readiness probe).
    pub fn primary_only(&self) -> DbPool {
        DbPool {
            replicas: None,
            ..self.clone()
        }
    }

    pub fn replicas(&self) -> Option<&Arc<replicas::Replicas>> {
        self.replicas.as_ref()
    }

    /// The database the current request reads from, as a pool of its own (the primary's
    /// without replicas): for reading that goes on after the handler has answered (a
    /// streamed export), so that every batch comes from the same database.
    pub fn for_request(&self) -> DbPool {
        match self.replica_for_request() {
            Some((replicas, index)) => DbPool {
                pool: replicas.pool(index),
                replicas: None,
                ..self.clone()
            },
            None => self.primary_only(),
        }
    }

    /// The replica the current request may read from, if any.
    fn replica_for_request(&self) -> Option<(Arc<replicas::Replicas>, usize)> {
        let replicas = self.replicas.as_ref()?;
        let route = reads::current()?;
        if !route.replica_allowed() {
            return None;
        }
        replicas
            .pick(route.fence())
            .map(|index| (replicas.clone(), index))
    }
}

/// A pool whose statements run as long as they need and whose [`run`] waits for them:
/// for tools and tests. The server's pool is [`build_server_pool`].
pub fn build_pool(database_url: &str, max_size: u32) -> DbPool {
    DbPool {
        pool: pool_of(database_url, max_size, SESSION_SETTINGS.to_string()),
        wait_limit: None,
        settings: SESSION_SETTINGS.to_string(),
        replicas: None,
    }
}

/// The server's pool: every connection ends a statement running longer than
/// `statement_timeout`, and [`run`] waits at most for a connection plus that long.
pub fn build_server_pool(database_url: &str, max_size: u32, statement_timeout: Duration) -> DbPool {
    let settings = format!(
        "{SESSION_SETTINGS}; SET statement_timeout = {}",
        statement_timeout.as_millis()
    );
    DbPool {
        pool: pool_of(database_url, max_size, settings.clone()),
        wait_limit: Some(CHECKOUT_TIMEOUT + statement_timeout),
        settings,
        replicas: None,
    }
}

/// Builds the pool without connecting: the server starts answering (503) even while the
/// database is away, and recovers by itself when it returns.
pub(crate) fn pool_of(database_url: &str, max_size: u32, settings: String) -> Pool<Manager> {
    let manager = Manager {
        inner: ConnectionManager::new(with_connection_params(database_url)),
        settings,
    };
    Pool::builder()
        .max_size(max_size.max(1))
        .min_idle(Some(1))
        .connection_timeout(CHECKOUT_TIMEOUT)
        .test_on_check_out(true)
        .build_unchecked(manager)
}

/// Set on every pooled connection when it opens.
///
/// No parallel plans: the server's queries read a page, a batch or a count of an index
/// range, each meant to keep one core busy for a moment. A parallel plan starts two more
/// backends for one of them, costing milliseconds where the query needs a tenth of one,
/// and takes cores from the other requests. PostgreSQL picks one when a row estimate is
/// far off: a search for a whole address (`SearchArm::EmailAround`) is estimated with a
/// default guess of part of the table, and a one-row search then runs in parallel, many
/// times slower under load.
pub const SESSION_SETTINGS: &str = "SET max_parallel_workers_per_gather = 0";

/// Diesel's connection manager, minus most pings.
///
/// Checking every connection out with a `SELECT 1` costs a round trip per checkout, and a
/// page takes three (session, access, page). A connection that answered a query within
/// the last second is handed out after a look at its socket alone (no round trip), which
/// finds one whose server closed it — a restart — so the request gets a working one
/// instead; an idle one is pinged as before. A connection whose server went away while
/// in use is dropped when it comes back to the pool (its request answered 503), never
/// handed out again.
#[derive(Debug)]
pub struct Manager {
    inner: ConnectionManager<PgConnection>,
    /// Run once on every new connection.
    settings: String,
}

/// Per connection: when it last answered, and whether its server went away. Installed as
/// the connection's instrumentation, which sees the outcome of every query.
struct Liveness {
    answered_at: Instant,
    lost: bool,
}

impl Instrumentation for Liveness {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::FinishQuery { error, .. } = event {
            match error {
                None => self.answered_at = Instant::now(),
                Some(error) if crate::error::is_connection_lost(error) => self.lost = true,
                Some(_) => {}
            }
        }
    }
}

fn liveness(conn: &mut PgConnection) -> Option<&mut Liveness> {
    conn.instrumentation().downcast_mut::<Liveness>()
}

impl ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PgConnection, Self::Error> {
        let mut conn = self.inner.connect()?;
        conn.batch_execute(&self.settings)
            .map_err(diesel::r2d2::Error::QueryError)?;
        conn.set_instrumentation(Liveness {
            answered_at: Instant::now(),
            lost: false,
        });
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), Self::Error> {
        let trusted =
            liveness(conn).is_some_and(|live| !live.lost && live.answered_at.elapsed() < TRUSTED_FOR);
        if trusted && still_open(conn) {
            Ok(())
        } else {
            self.inner.is_valid(conn)
        }
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        liveness(conn).is_some_and(|live| live.lost) || self.inner.has_broken(conn)
    }
}

/// Whether the server has not closed the connection, from what already arrived on its
/// socket: a non-blocking read (libpq's `PQconsumeInput`, through Diesel's notification
/// poll; the server's connections never `LISTEN`, so there are no notifications to
/// lose). A server that shut down sent its goodbye and closed the socket; the first read
/// may only take the goodbye, the second meets the end of the stream.
fn still_open(conn: &mut PgConnection) -> bool {
    (0..2).all(|_| !matches!(conn.notifications_iter().next(), Some(Err(_))))
}

/// What libpq is told on every pooled connection, unless the URL says otherwise: give up
/// connecting after 3 s, and over TCP, notice a peer that vanished (a host down, a
/// network cut) through keepalives within about a minute, and data it never acknowledges
/// within 30 s. libpq ignores the TCP ones on a Unix socket.
const CONNECTION_PARAMS: &[(&str, &str)] = &[
    ("connect_timeout", "3"),
    ("keepalives", "1"),
    ("keepalives_idle", "30"),
    ("keepalives_interval", "10"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "30000"),
];

pub(crate) fn with_connection_params(url: &str) -> String {
    let mut url = url.to_string();
    for (name, value) in CONNECTION_PARAMS {
        let present = url
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|pair| pair.split('=').next() == Some(name)));
        if !present {
            let separator = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{separator}{name}={value}");
        }
    }
    url
}

/// Runs blocking Diesel work on the blocking thread pool so that actix workers never wait
/// on the database, and answers [`Error::Unavailable`] once the pool's wait limit (see
/// [`DbPool`]) has passed.
pub async fn run<T, F>(pool: &DbPool, work: F) -> Result<T, Error>
where
    F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    // A pool without a limit waits as long as its statements run (tokio's timeout
    // reads an unrepresentable deadline as none).
    run_within(pool, pool.wait_limit.unwrap_or(Duration::MAX), work).await
}

/// [`run`] on the primary whatever the request, for work that writes in a GET request (a
/// referral link's click). The member's next pages then wait for a replica to replay it,
/// as after any POST.
pub async fn run_write<T, F>(pool: &DbPool, work: F) -> Result<T, Error>
where
    F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    reads::mark_written();
    run_primary(pool, work).await
}

/// [`run`] on the primary whatever the request, for reads that must see the latest
/// writes of anyone (a cache filled for every request, an API token just created).
pub async fn run_primary<T, F>(pool: &DbPool, work: F) -> Result<T, Error>
where
    F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    run_on(pool, None, pool.wait_limit.unwrap_or(Duration::MAX), work).await
}

/// Whether the primary answers a `SELECT 1` within [`READY_WITHIN`].
pub async fn answers(pool: &DbPool) -> bool {
    run_on(pool, None, READY_WITHIN, |conn| {
        diesel::sql_query("SELECT 1").execute(conn)?;
        Ok(())
    })
    .await
    .is_ok()
}

/// [`run`], waiting at most `limit` for the connection and the work together.
///
/// A blocking thread cannot be interrupted: work that overruns goes on without anyone
/// waiting for it. It does not start at all if its connection came too late, and the
/// connection it used is dropped when it finishes rather than handed to the next request.
pub async fn run_within<T, F>(pool: &DbPool, limit: Duration, work: F) -> Result<T, Error>
where
    F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    let replica = pool.replica_for_request();
    run_on(pool, replica, limit, work).await
}

/// [`run_within`] on `replica` when given (the primary when it gives no connection
/// quickly), else on the primary.
async fn run_on<T, F>(
    pool: &DbPool,
    replica: Option<(Arc<replicas::Replicas>, usize)>,
    limit: Duration,
    work: F,
) -> Result<T, Error>
where
    F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let pool = pool.pool.clone();
    let abandoned = Arc::new(AtomicBool::new(false));
    let given_up = abandoned.clone();
    // The blocking thread logs under the request's span (and so its request id).
    let span = tracing::Span::current();
    let task = actix_web::rt::task::spawn_blocking(move || {
        let _entered = span.enter();
        let from_replica = replica.and_then(|(replicas, index)| replicas.checkout(index));
        let mut conn = match from_replica {
            Some(conn) => conn,
            None => pool
                .get_timeout(limit.min(CHECKOUT_TIMEOUT))
                .map_err(|_| Error::Unavailable)?,
        };
        if given_up.load(Ordering::SeqCst) {
            return Err(Error::Unavailable);
        }
        let result = work(&mut conn);
        if given_up.load(Ordering::SeqCst) {
            if let Some(live) = liveness(&mut conn) {
                live.lost = true;
            }
        }
        result
    });
    match actix_web::rt::time::timeout(limit, task).await {
        Ok(joined) => joined
            .map_err(|join_error| Error::Internal(anyhow::anyhow!("database task failed: {join_error}")))?,
        Err(_) => {
            abandoned.store(true, Ordering::SeqCst);
            tracing::warn!(?limit, "the database did not answer in time");
            Err(Error::Unavailable)
        }
    }
}

/// [`run`] for work made of lookups by key — a customer by key or id, their links, ledger
/// and activity, inserts and updates of single rows — whose statements are told to use
/// their reusable (generic) plan.
///
/// PostgreSQL plans a prepared statement anew on every call for as long as a plan made for
/// the values at hand looks cheaper than the reusable one, and for lookups with a `LIMIT`
/// parameter or a short list of ids it always does, although both plans are the same
/// index lookups. With many indexes on `customers` that planning costs more than
/// running the statements. Not for lists,
/// searches or date ranges: how many rows their values match decides their plan.
/// The setting holds for one transaction (`SET LOCAL`), so it never outlives the work.
pub async fn run_lookups<T, F>(pool: &DbPool, work: F) -> Result<T, Error>
where
    F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    run(pool, move |conn| with_generic_plans(conn, work)).await
}

/// The settings of [`with_generic_plans`] and [`with_generic_plans_unflushed`].
macro_rules! generic_plans {
    () => {
        "SET LOCAL plan_cache_mode = force_generic_plan"
    };
}
macro_rules! unflushed {
    () => {
        "SET LOCAL synchronous_commit = off"
    };
}

/// Runs `work` in a transaction whose prepared statements use their reusable plans (see
/// [`run_lookups`]).
pub fn with_generic_plans<T>(
    conn: &mut PgConnection,
    work: impl FnOnce(&mut PgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    with_settings(conn, generic_plans!(), concat!("BEGIN; ", generic_plans!()), work)
}

/// [`with_generic_plans`] for the API's per-call counters (rate windows, a token's last
/// use), committed without waiting for the disk: the counter row of a busy token is locked
/// from its update to the commit, so a flush inside that span would queue every call of
/// the token behind the disk. A crash can forget the last fraction of a second of counts,
/// which only lets a few more calls through; the calls' own work commits as usual.
pub fn with_generic_plans_unflushed<T>(
    conn: &mut PgConnection,
    work: impl FnOnce(&mut PgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    with_settings(
        conn,
        concat!(generic_plans!(), "; ", unflushed!()),
        concat!("BEGIN; ", generic_plans!(), "; ", unflushed!()),
        work,
    )
}

/// Runs `work` in a transaction that starts with `settings` (`SET LOCAL …`, so they end
/// with it); `begin_with_settings` is `BEGIN` and the settings, sent in one round trip.
fn with_settings<T>(
    conn: &mut PgConnection,
    settings: &'static str,
    begin_with_settings: &'static str,
    work: impl FnOnce(&mut PgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    let depth = AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth()?;
    if depth.is_some() {
        // Inside a transaction already: a savepoint. PostgreSQL keeps a `SET LOCAL` made
        // there until the outer transaction ends (only rolling the savepoint back undoes
        // it), so statements after `work` in that transaction keep these settings too.
        return conn.transaction(|conn| {
            conn.batch_execute(settings)?;
            work(conn)
        });
    }
    // Both in one round trip: these are the server's most frequent transactions.
    if let Err(error) = AnsiTransactionManager::begin_transaction_sql(conn, begin_with_settings) {
        // Should BEGIN have run and a setting failed, Diesel does not know of the
        // transaction; end it so the connection goes back to the pool clean.
        let _ = conn.batch_execute("ROLLBACK");
        return Err(error.into());
    }
    match work(conn) {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(error) => {
            // As Diesel's own `transaction`: the work's error is the one that matters.
            let _ = AnsiTransactionManager::rollback_transaction(conn);
            Err(error)
        }
    }
}

/// Applies every pending migration.
pub fn migrate(conn: &mut PgConnection) -> anyhow::Result<()> {
    conn.run_pending_migrations(MIGRATIONS)
        .map_err(|error| anyhow::anyhow!("migration failed: {error}"))?;
    Ok(())
}

/// The parts of a PostgreSQL URL around its database name.
struct UrlParts<'a> {
    base: &'a str,
    database: &'a str,
    query: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (without_query, query) = match url.find('?') {
        Some(at) => (&url[..at], &url[at..]),
        None => (url, ""),
    };
    let after_scheme = without_query.find("://")? + 3;
    let slash = without_query[after_scheme..].find('/')? + after_scheme;
    Some(UrlParts {
        base: &without_query[..slash],
        database: &without_query[slash + 1..],
        query,
    })
}

/// The same server, another database.
pub fn url_with_database(url: &str, database: &str) -> String {
    match split_url(url) {
        Some(parts) => format!("{}/{}{}", parts.base, database, parts.query),
        None => url.to_string(),
    }
}

/// Creates the database named in `url` when it does not exist yet (connecting to the
/// server's `postgres` database to do so).
pub fn ensure_database_exists(url: &str) -> anyhow::Result<()> {
    if PgConnection::establish(url).is_ok() {
        return Ok(());
    }
    let parts = split_url(url).context("DATABASE_URL must look like postgres://host/database")?;
    let database = parts.database.to_string();
    if database.is_empty() {
        anyhow::bail!("DATABASE_URL names no database");
    }
    let admin_url = url_with_database(url, "postgres");
    let mut admin = PgConnection::establish(&admin_url).with_context(|| {
        format!("could not connect to the PostgreSQL server of DATABASE_URL to create database {database:?}")
    })?;
    let quoted = format!("\"{}\"", database.replace('"', "\"\""));
    match diesel::sql_query(format!("CREATE DATABASE {quoted}")).execute(&mut admin) {
        Ok(_) => tracing::info!(%database, "created database"),
        // Another process starting at the same time (a server and a CLI command) made it.
        Err(_) if PgConnection::establish(url).is_ok() => {}
        Err(error) => return Err(error).with_context(|| format!("could not create database {database:?}")),
    }
    Ok(())
}

/// Creates the database if needed and migrates it. The connection is handed back still
/// holding the migration lock, so the caller's first writes (`crate::prepare_database`)
/// run before another starting process gets past this point.
pub fn prepare(url: &str) -> anyhow::Result<PgConnection> {
    ensure_database_exists(url)?;
    let mut conn = PgConnection::establish(url).context("could not connect to the database")?;
    // One process at a time migrates (a server and a CLI command may start together); the
    // lock goes with the connection.
    conn.batch_execute("SELECT pg_advisory_lock(7218480112)")
        .context("could not lock the database for migrations")?;
    migrate(&mut conn)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_gets_timeouts_and_keepalives_unless_the_url_sets_them() {
        assert_eq!(
            with_connection_params("postgres://localhost/app"),
            "postgres://localhost/app?connect_timeout=3&keepalives=1&keepalives_idle=30\
             &keepalives_interval=10&keepalives_count=3&tcp_user_timeout=30000"
        );
        let own = with_connection_params("postgres://h/app?sslmode=disable&connect_timeout=10&keepalives=0");
        assert!(own.starts_with("postgres://h/app?sslmode=disable&connect_timeout=10&keepalives=0&"));
        assert_eq!(own.matches("connect_timeout=").count(), 1);
        assert_eq!(own.matches("keepalives=").count(), 1);
    }

    #[test]
    fn replaces_the_database_name_and_keeps_the_query() {
        assert_eq!(
            url_with_database("postgres://u:p@localhost:5432/app?sslmode=disable", "other"),
            "postgres://u:p@localhost:5432/other?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgres://localhost/app", "x"),
            "postgres://localhost/x"
        );
    }
}
