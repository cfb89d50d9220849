//! Where a request's database work runs: the primary, or a replica.
//!
//! The web layer opens a [`ReadRoute`] around each request (`web::read_routing`); [`run`]
//! and [`run_lookups`] look at it and pick the pool, so handlers stay as they are. Work
//! outside a request (start-up, background threads, the session store) has no route and
//! runs on the primary.
//!
//! [`run`]: super::run
//! [`run_lookups`]: super::run_lookups

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;

/// A position in the primary's write-ahead log, as bytes from its start
/// (`pg_lsn - '0/0'`). A replica that has replayed up to it shows every transaction
/// committed before it was read.
pub type Lsn = i64;

tokio::task_local! {
    static ROUTE: Rc<ReadRoute>;
}

/// What one request may read from.
#[derive(Debug, Default)]
pub struct ReadRoute {
    /// A GET or HEAD: its reads may go to a replica that is up, not lagging, and past
    /// [`fence`](Self::fence).
    replica_allowed: Cell<bool>,
    /// Where the replica must be: the log position after this member's or token's last
    /// write (read-your-writes).
    fence: Cell<Option<Lsn>>,
    /// The request wrote on the primary (a GET that records something, through
    /// [`run_write`](super::run_write)): its member's next pages wait for it too.
    wrote: Cell<bool>,
}

impl ReadRoute {
    pub fn new(replica_allowed: bool, fence: Option<Lsn>) -> Rc<ReadRoute> {
        Rc::new(ReadRoute {
            replica_allowed: Cell::new(replica_allowed),
            fence: Cell::new(fence),
            wrote: Cell::new(false),
        })
    }

    pub fn replica_allowed(&self) -> bool {
        self.replica_allowed.get()
    }

    pub fn fence(&self) -> Option<Lsn> {
        self.fence.get()
    }

    /// Raises the fence (an API token's, known once the token is read).
    pub fn require(&self, lsn: Option<Lsn>) {
        self.fence.set(self.fence.get().max(lsn));
    }

    pub fn wrote(&self) -> bool {
        self.wrote.get()
    }
}

/// Runs `request` with `route` as its route.
pub async fn scope<F: Future>(route: Rc<ReadRoute>, request: F) -> F::Output {
    ROUTE.scope(route, request).await
}

/// The current request's route, if the work runs in one.
pub fn current() -> Option<Rc<ReadRoute>> {
    ROUTE.try_with(Rc::clone).ok()
}

/// Marks the current request as having written on the primary.
pub(super) fn mark_written() {
    let _ = ROUTE.try_with(|route| route.wrote.set(true));
}
