//! The one integration-test binary. It drives the real server over HTTP, each test with its
//! own freshly migrated database.
//!
//! It uses its own `main` (libtest-mimic) so that it can start one private PostgreSQL
//! cluster for the whole run when `DATABASE_URL` is unset, and stop it afterwards.

#[allow(dead_code)]
mod helpers;

mod admin;
mod api;
mod auth;
mod browser;
mod customers;
mod embedded;
mod invites;
mod ledger;
mod maintenance;
mod openapi;
mod performance;
mod reliability;
mod security;
mod seed;
mod sign_in;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let database = helpers::TestDatabase::start();
    let mut trials = Vec::new();
    trials.extend(auth::tests());
    trials.extend(customers::tests());
    trials.extend(security::tests());
    trials.extend(sign_in::tests());
    trials.extend(ledger::tests());
    trials.extend(invites::tests());
    trials.extend(admin::tests());
    trials.extend(api::tests());
    trials.extend(openapi::tests());
    trials.extend(browser::tests());
    trials.extend(reliability::tests());
    trials.extend(embedded::tests());
    trials.extend(performance::tests());
    trials.extend(maintenance::tests());
    trials.extend(seed::tests());
    let conclusion = libtest_mimic::run(&args, trials);
    browser::finish();
    database.finish();
    conclusion.exit();
}
