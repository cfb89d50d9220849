//! The one integration-test binary. It drives the real server over HTTP, each test with its
//! own freshly migrated database.
//!
//! It uses its own `main` (libtest-mimic) so that it can start one private PostgreSQL
//! cluster for the whole run when `DATABASE_URL` is unset, and stop it afterwards. Tests
//! register themselves with `#[apply(integration_test!)]` (see `helpers`), so a new test
//! needs no list.

#[allow(dead_code)]
mod helpers;

mod admin;
mod api;
mod audit;
mod auth;
mod browser;
mod bulk;
mod customer_page;
mod customers;
mod dashboard;
mod embedded;
mod fixtures;
mod form_rounds;
mod forms;
mod imports;
mod invites;
mod ledger;
mod maintenance;
mod openapi;
mod performance;
mod processes;
mod profile;
mod programs;
mod reliability;
mod replicas;
mod reward_fixtures;
mod reward_pages;
mod reward_review;
mod reward_rows;
mod reward_webhooks;
mod rules;
mod security;
mod seed;
mod sign_in;
mod tables;
mod team;
mod transactions;
mod webhooks;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let database = helpers::TestDatabase::start();
    let conclusion = libtest_mimic::run(&args, helpers::registered_trials());
    browser::finish();
    database.finish();
    conclusion.exit();
}
