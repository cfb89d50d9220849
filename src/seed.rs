//! `referdesk seed`: fills a program with demo data that shows every screen — customers
//! over the last year, about 30% of them referred (a few referrers with many referrals),
//! link clicks, ledger credits and debits, invites in every status — for demos and
//! benchmarks, written in batches of set-based SQL.
//!
//! The data is drawn from one seed ([`plan`]): the same seed and count give the same
//! customers, keys, emails and referral graph. It keeps every invariant the application
//! keeps: default referral links whose code is the key, referrers in the program who
//! joined before the customers they referred, exact `referrals_count`s (and the tallies
//! and standings their triggers keep), link click counters equal to their click rows,
//! debits within the balance. Each row gets the audit event the real path writes
//! (`customer.create`, `customer.delete`, `ledger.credit`, `ledger.debit`,
//! `invite.create`), by the actor `seed`.
//!
//! It is safe beside a running server: customers are written [`BATCH`] at a time, each
//! batch in short transactions of its own, so no row a signup needs (the seed's slot of
//! the customer tallies above all) stays locked for longer than a moment. A batch's
//! customers are split into shares that refer to no one in another share, written by
//! several connections at once (PostgreSQL's work per row, its indexes above all, is what
//! a seed waits for; one connection keeps one core busy). Every commit keeps the
//! invariants: a share's customers count the referrals written so far and the same
//! transaction adds its referrals to earlier referrers' counts; a link is written with its
//! clicks; the bookings and invites of a batch after all of its customers, a payout after
//! the credits it pays out. A failed or interrupted seed leaves whole shares, and running
//! it again adds after them.
//!
//! No seeded address can reach a real mailbox (reserved domains only), and queued invites
//! are held: their next attempt is a century away, so a server started on the data sends
//! none of them.

pub mod plan;

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Date, Integer, Nullable, Text, Timestamptz};

use crate::domain::invites::InviteEmail;
use crate::domain::programs::{self, Program};
use crate::error::Error;
use plan::{Booking, Click, Plan, PlannedInvite};

/// Customers per transaction: large enough that per-statement costs vanish, small enough
/// that the referrers' rows a batch updates are locked for a moment only.
pub const BATCH: usize = 5_000;
/// Connections the `seed` command writes with: one per core of a small server.
pub const WRITERS: usize = 2;
/// The largest count accepted (the plan numbers customers with `u32`).
pub const MAX_CUSTOMERS: i64 = 50_000_000;
/// Shown as the actor of every seeded audit event.
const ACTOR: &str = "seed";

/// Seeds `count` customers (and their clicks, bookings and invites) into the program.
/// Without `seed`, a random one is drawn and logged, so the data set can be made again.
/// Each batch's customers are split among the `writers` (one or more connections to the
/// same database), which write their shares in parallel.
pub fn seed(
    writers: &mut [PgConnection],
    program_slug: &str,
    count: i64,
    seed: Option<u64>,
) -> Result<(), Error> {
    if !(0..=MAX_CUSTOMERS).contains(&count) {
        return Err(Error::invalid(
            "customers",
            format!("Seed between 0 and {MAX_CUSTOMERS} customers."),
        ));
    }
    let Some(conn) = writers.first_mut() else {
        return Err(Error::Internal(anyhow::anyhow!("the seed needs a connection")));
    };
    let program = programs::find_by_slug(conn, program_slug)
        .map_err(|_| Error::invalid("program", format!("There is no program {program_slug:?}.")))?;
    let seed = seed.unwrap_or_else(rand::random);
    tracing::info!("seeding {count} customers into {program_slug:?} with --seed {seed}");
    let base = last_number(conn, program.id)?;
    let plan = Plan::draw(seed, base, count as u32, Utc::now());
    let total = plan.people.len();
    let batches = total.div_ceil(BATCH);
    // Each click, booking and invite goes with the batch of the customer it belongs to (a
    // team invite with the first).
    let mut clicks: Vec<Vec<&Click>> = vec![Vec::new(); batches];
    for click in &plan.clicks {
        clicks[click.customer as usize / BATCH].push(click);
    }
    let mut bookings: Vec<Vec<&Booking>> = vec![Vec::new(); batches];
    for booking in &plan.bookings {
        bookings[booking.follows as usize / BATCH].push(booking);
    }
    let mut invites: Vec<Vec<&PlannedInvite>> = vec![Vec::new(); batches];
    for invite in &plan.invites {
        invites[invite.inviter.unwrap_or(0) as usize / BATCH].push(invite);
    }
    let mut ids: Vec<i64> = Vec::with_capacity(total);
    for batch in 0..batches {
        let people = batch * BATCH..((batch + 1) * BATCH).min(total);
        let (start, end) = (people.start, people.end);
        ids.extend(reserve_ids(&mut writers[0], "customers", people.len())?);
        let shares = shares(&plan, people.clone(), writers.len());
        let (program, plan, ids, clicks) = (&program, &plan, &ids, &clicks[batch]);
        let tasks: Vec<Task> = shares
            .into_iter()
            .filter(|share| !share.is_empty())
            .map(|share| -> Task {
                Box::new(move |conn: &mut PgConnection| {
                    conn.transaction(|conn| write_customers(conn, program, plan, start, &share, clicks, ids))
                })
            })
            .collect();
        in_parallel(writers, tasks)?;
        writers[0].transaction(|conn| {
            asynchronous_commit(conn)?;
            write_bookings(conn, program, &bookings[batch], ids)?;
            write_invites(conn, program, plan, &invites[batch], ids)
        })?;
        tracing::info!("seeded {end}/{total} customers");
    }
    tracing::info!(
        "seeded {count} customers, {} link clicks, {} ledger entries, {} invites",
        plan.clicks.len(),
        plan.bookings.len(),
        plan.invites.len()
    );
    settle(writers)?;
    tracing::info!("tables vacuumed and analysed");
    Ok(())
}

/// Work for one writer's connection.
type Task<'a> = Box<dyn FnOnce(&mut PgConnection) -> Result<(), Error> + Send + 'a>;

/// Runs the tasks on the writers' connections at once, each writer its share of them in
/// turn; returns the first error once all are done.
fn in_parallel(writers: &mut [PgConnection], tasks: Vec<Task<'_>>) -> Result<(), Error> {
    let count = writers.len().max(1);
    let mut queues: Vec<Vec<Task>> = (0..count).map(|_| Vec::new()).collect();
    for (i, task) in tasks.into_iter().enumerate() {
        queues[i % count].push(task);
    }
    let run = |conn: &mut PgConnection, queue: Vec<Task>| queue.into_iter().try_for_each(|task| task(conn));
    std::thread::scope(|scope| {
        let mut queues = queues.into_iter();
        let first = queues.next().unwrap_or_default();
        let Some((own, others)) = writers.split_first_mut() else {
            return Ok(());
        };
        let helpers: Vec<_> = others
            .iter_mut()
            .zip(queues)
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(conn, queue)| scope.spawn(move || run(conn, queue)))
            .collect();
        let mut result = run(own, first);
        for helper in helpers {
            let outcome = helper
                .join()
                .unwrap_or_else(|_| Err(Error::Internal(anyhow::anyhow!("a seed writer panicked"))));
            result = result.and(outcome);
        }
        result
    })
}

/// Splits a batch's customers (indexes into the plan) into `count` shares of about equal
/// size that refer to no one in another share: a customer goes with their referrer when the
/// referrer is in the same batch. Each share can then be written and committed on its own,
/// in any order, and every referrer a share names is in it or committed before.
fn shares(plan: &Plan, people: Range<usize>, count: usize) -> Vec<Vec<usize>> {
    let count = count.max(1);
    let mut shares: Vec<Vec<usize>> = vec![Vec::with_capacity(people.len() / count + 1); count];
    let mut share_of = vec![0usize; people.len()];
    for i in people.clone() {
        let share = match plan.people[i].referrer.map(|r| r as usize) {
            Some(referrer) if referrer >= people.start => share_of[referrer - people.start],
            _ => (0..count).min_by_key(|&s| shares[s].len()).unwrap_or(0),
        };
        share_of[i - people.start] = share;
        shares[share].push(i);
    }
    shares
}

/// The seed's own commits do not wait for their WAL to reach the disk: a crash may lose the
/// last few batches, whole (a later seed adds after what was kept), never part of one. Other
/// sessions' commits are unaffected.
fn asynchronous_commit(conn: &mut PgConnection) -> Result<(), Error> {
    diesel::sql_query("SET LOCAL synchronous_commit = off").execute(conn)?;
    Ok(())
}

/// VACUUM as well as ANALYZE: it marks the new pages all-visible, so lists are read from
/// their covering indexes alone right away rather than after autovacuum gets to them. The
/// big tables on separate writers at once.
fn settle(writers: &mut [PgConnection]) -> Result<(), Error> {
    let statement = |sql: &'static str| -> Task<'static> {
        Box::new(move |conn: &mut PgConnection| {
            diesel::sql_query(sql).execute(conn)?;
            Ok(())
        })
    };
    in_parallel(
        writers,
        vec![
            statement("VACUUM (ANALYZE) customers"),
            statement("VACUUM (ANALYZE) referral_links, referral_standings"),
            statement(
                "ANALYZE referral_clicks, balance_transactions, customer_balances, invites, mail_outbox,
                 audit_events",
            ),
        ],
    )
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    number: i64,
}

/// The highest `seed-{n}` of the program: a later seed numbers its customers after it.
fn last_number(conn: &mut PgConnection, program_id: i64) -> Result<i64, Error> {
    let row: Number = diesel::sql_query(
        "SELECT coalesce(max(substr(external_id, 6)::bigint), 0) AS number FROM customers
         WHERE program_id = $1 AND external_id ~ '^seed-[0-9]{1,15}$'",
    )
    .bind::<BigInt, _>(program_id)
    .get_result(conn)?;
    Ok(row.number)
}

#[derive(QueryableByName)]
struct Ids {
    #[diesel(sql_type = Array<BigInt>)]
    ids: Vec<i64>,
}

/// `count` ids from the table's own sequence, ascending: rows written with them never
/// clash with rows the application inserts meanwhile, and an earlier row gets a lower id.
fn reserve_ids(conn: &mut PgConnection, table: &str, count: usize) -> Result<Vec<i64>, Error> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let row: Ids = diesel::sql_query(
        "SELECT array_agg(id ORDER BY id) AS ids FROM
         (SELECT nextval((SELECT pg_get_serial_sequence($1, 'id'))::regclass) AS id
          FROM generate_series(1, $2)) reserved",
    )
    .bind::<Text, _>(table)
    .bind::<BigInt, _>(count as i64)
    .get_result(conn)?;
    Ok(row.ids)
}

/// [`write_customers`]' statement: customers, their default links, the clicks on them and
/// their audit events from one set of arrays; then it locks the earlier customers whose
/// referrals the share adds (`$20`), so that they are locked only for the moment between
/// the end of the writing and the commit right after it (the other writer may count some of
/// the same referrers), in id order (the writers never wait for each other in a circle),
/// before the tallies' slot (locked by the trigger at the statement's end), as a signup
/// locks them. NO KEY UPDATE: the other writer's checks of its referrers do not wait.
const INSERT_CUSTOMERS: &str = "WITH rows AS (
         SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::date[], $9::bool[], $10::bigint[], $11::text[],
                              $12::int[], $13::bigint[], $14::timestamptz[], $15::timestamptz[])
             AS r(id, external_id, key, email, name, surname, born, approved, referrer_id,
                  referrer_key, referrals_count, clicks, created_at, deleted_at)
     ), created AS (
         INSERT INTO customers (id, program_id, external_id, key, email, name, surname, metadata,
                                status, approved, referrer_id, referrals_count, deleted_at,
                                created_at, updated_at)
         SELECT id, $1, external_id, key, email, name, surname,
                jsonb_build_object('date_of_birth', to_char(born, 'YYYY-MM-DD')),
                CASE WHEN deleted_at IS NULL THEN 'active' ELSE 'deleted' END,
                approved, referrer_id, referrals_count, deleted_at,
                created_at, coalesce(deleted_at, created_at)
         FROM rows
         RETURNING id
     ), links AS (
         INSERT INTO referral_links (program_id, customer_id, code, is_default, clicks, created_at)
         SELECT $1, id, key, TRUE, clicks, created_at FROM rows
         RETURNING id, customer_id
     ), clicked AS (
         INSERT INTO referral_clicks (link_id, referer, created_at)
         SELECT l.id, k.referer, k.at
         FROM unnest($17::bigint[], $18::text[], $19::timestamptz[])
             WITH ORDINALITY AS k(customer_id, referer, at, n)
         JOIN links l ON l.customer_id = k.customer_id
         ORDER BY k.n
         RETURNING id
     ), audited AS (
         INSERT INTO audit_events (program_id, actor_label, action, subject_type, subject_id,
                                   customer_id, before, after, created_at)
         SELECT $1, $16, 'customer.create', 'customer', id::text, id, NULL::jsonb,
                jsonb_build_object('id', external_id, 'key', key, 'email', email, 'name', name,
                    'surname', surname,
                    'metadata', jsonb_build_object('date_of_birth', to_char(born, 'YYYY-MM-DD')),
                    'custom_fields', '{}'::jsonb, 'status', 'active', 'approved', approved,
                    'referring_customer', referrer_key),
                created_at
         FROM rows
         UNION ALL
         SELECT $1, $16, 'customer.delete', 'customer', id::text, id,
                '{\"status\": \"active\"}'::jsonb, '{\"status\": \"deleted\"}'::jsonb, deleted_at
         FROM rows WHERE deleted_at IS NOT NULL
         RETURNING id
     )
     SELECT c.id AS number FROM customers c
     WHERE c.id = ANY($20::bigint[])
       AND (SELECT count(*) FROM created) + (SELECT count(*) FROM links)
           + (SELECT count(*) FROM clicked) + (SELECT count(*) FROM audited) >= 0
     ORDER BY c.id
     FOR NO KEY UPDATE OF c";

/// One share of a batch of customers (`people`, ascending indexes into the plan, from the
/// batch that starts at `start`; see [`shares`]) with their default links, the clicks on
/// them and their audit events, in one statement; and the referrals they add to earlier
/// batches' customers' counts. Each `referrals_count` counts the active customers written so
/// far who were referred by them, so every committed share leaves exact counts. `ids` holds
/// the ids reserved for every customer up to the end of the batch.
fn write_customers(
    conn: &mut PgConnection,
    program: &Program,
    plan: &Plan,
    start: usize,
    people: &[usize],
    clicks: &[&Click],
    ids: &[i64],
) -> Result<(), Error> {
    asynchronous_commit(conn)?;
    let (referrals, earlier) = count_referrals(plan, start, people)?;
    let referred: Vec<i64> = earlier.keys().map(|&i| ids[i]).collect();
    let own_ids: Vec<i64> = people.iter().map(|&i| ids[i]).collect();
    let clicks: Vec<&Click> = clicks
        .iter()
        .copied()
        .filter(|click| people.binary_search(&(click.customer as usize)).is_ok())
        .collect();
    let persons: Vec<&plan::Person> = people.iter().map(|&i| &plan.people[i]).collect();
    let referrers: Vec<Option<usize>> = persons
        .iter()
        .map(|person| person.referrer.map(|i| i as usize))
        .collect();
    diesel::sql_query(INSERT_CUSTOMERS)
        .bind::<BigInt, _>(program.id)
        .bind::<Array<BigInt>, _>(&own_ids)
        .bind::<Array<Text>, _>(people.iter().map(|&i| plan.external_id(i)).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(persons.iter().map(|p| p.key()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(people.iter().map(|&i| plan.email(i)).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(persons.iter().map(|p| p.name()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(persons.iter().map(|p| p.surname()).collect::<Vec<_>>())
        .bind::<Array<Date>, _>(persons.iter().map(|p| p.born).collect::<Vec<NaiveDate>>())
        .bind::<Array<Bool>, _>(persons.iter().map(|p| p.approved).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(referrers.iter().map(|r| r.map(|i| ids[i])).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            referrers
                .iter()
                .map(|r| r.map(|i| plan.people[i].key()))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Integer>, _>(&referrals)
        .bind::<Array<BigInt>, _>(persons.iter().map(|p| p.clicks).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(persons.iter().map(|p| p.created_at).collect::<Vec<_>>())
        .bind::<Array<Nullable<Timestamptz>>, _>(persons.iter().map(|p| p.deleted_at).collect::<Vec<_>>())
        .bind::<Text, _>(ACTOR)
        .bind::<Array<BigInt>, _>(
            clicks
                .iter()
                .map(|click| ids[click.customer as usize])
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(clicks.iter().map(|click| click.referer).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(clicks.iter().map(|click| click.at).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(&referred)
        .load::<Number>(conn)?;
    // Through a plain UPDATE, as a signup counts its referral: the standings trigger copies
    // the new counts. The statement above locked the rows.
    diesel::sql_query(
        "UPDATE customers c SET referrals_count = c.referrals_count + d.n
         FROM unnest($1::bigint[], $2::int[]) AS d(id, n) WHERE c.id = d.id",
    )
    .bind::<Array<BigInt>, _>(&referred)
    .bind::<Array<Integer>, _>(earlier.values().copied().collect::<Vec<_>>())
    .execute(conn)?;
    Ok(())
}

/// The referrals of a share's customers among the customers written with them (one count
/// per customer), and those they add to earlier batches' customers (by plan index).
fn count_referrals(
    plan: &Plan,
    start: usize,
    people: &[usize],
) -> Result<(Vec<i32>, BTreeMap<usize, i32>), Error> {
    let mut referrals = vec![0i32; people.len()];
    let mut earlier: BTreeMap<usize, i32> = BTreeMap::new();
    for &i in people {
        if let (Some(referrer), None) = (plan.people[i].referrer, plan.people[i].deleted_at) {
            let referrer = referrer as usize;
            match people.binary_search(&referrer) {
                Ok(within) => referrals[within] += 1,
                Err(_) if referrer < start => *earlier.entry(referrer).or_default() += 1,
                Err(_) => {
                    return Err(Error::Internal(anyhow::anyhow!(
                        "a seeded customer's referrer is in another share"
                    )))
                }
            }
        }
    }
    Ok((referrals, earlier))
}

/// Credits and debits with the events `ledger::book` writes for them.
fn write_bookings(
    conn: &mut PgConnection,
    program: &Program,
    bookings: &[&Booking],
    customers: &[i64],
) -> Result<(), Error> {
    if bookings.is_empty() {
        return Ok(());
    }
    let ids = reserve_ids(conn, "balance_transactions", bookings.len())?;
    diesel::sql_query(
        "WITH rows AS (
             SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                                  $7::bool[], $8::text[], $9::timestamptz[])
                 AS r(id, customer_id, kind, amount, units, is_currency, note, at)
         ), booked AS (
             INSERT INTO balance_transactions (id, program_id, customer_id, kind, amount, amount_units,
                                               is_currency, note, created_at)
             SELECT id, $1, customer_id, kind, amount::numeric, units, is_currency, note, at FROM rows
         )
         INSERT INTO audit_events (program_id, actor_label, action, subject_type, subject_id,
                                   customer_id, after, created_at)
         SELECT $1, $10, 'ledger.' || kind, 'balance_transaction', id::text, customer_id,
                jsonb_build_object('kind', kind, 'amount', amount, 'amount_units', units,
                                   'is_currency', is_currency, 'note', note),
                at
         FROM rows",
    )
    .bind::<BigInt, _>(program.id)
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<BigInt>, _>(
        bookings
            .iter()
            .map(|b| customers[b.customer as usize])
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        bookings
            .iter()
            .map(|b| if b.credit { "credit" } else { "debit" })
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(bookings.iter().map(|b| b.amount_display()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(bookings.iter().map(|b| b.units).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(bookings.iter().map(|b| b.is_currency).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(bookings.iter().map(|b| b.note.as_str()).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(bookings.iter().map(|b| b.at).collect::<Vec<_>>())
    .bind::<Text, _>(ACTOR)
    .execute(conn)?;
    Ok(())
}

/// [`write_invites`]' statement: the invites, their outbox messages and their audit events
/// from one set of arrays.
const INSERT_INVITES: &str = "WITH rows AS (
         SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                              $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::text[],
                              $12::text[])
             AS r(id, customer_id, email, name, message, created_at, handled_at, status,
                  subject, body_text, body_html)
     ), created AS (
         INSERT INTO invites (id, program_id, customer_id, email, name, personalization, status,
                              last_error, sent_at, created_at, updated_at)
         SELECT id, $1, customer_id, email, name,
                CASE WHEN message IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('message', message) END,
                status, CASE WHEN status = 'failed' THEN $13 END,
                CASE WHEN status = 'sent' THEN handled_at END,
                created_at, CASE WHEN status = 'queued' THEN created_at ELSE handled_at END
         FROM rows
     ), queued AS (
         INSERT INTO mail_outbox (invite_id, recipient, subject, body_text, body_html, status, attempts,
                                  next_attempt_at, last_error, sent_at, created_at)
         SELECT id, email, subject, body_text, body_html, status,
                CASE WHEN status = 'queued' THEN 0 ELSE 1 END,
                CASE WHEN status = 'queued' THEN $14 ELSE created_at END,
                CASE WHEN status = 'failed' THEN $13 END,
                CASE WHEN status = 'sent' THEN handled_at END,
                created_at
         FROM rows
     )
     INSERT INTO audit_events (program_id, actor_label, action, subject_type, subject_id,
                               customer_id, after, created_at)
     SELECT $1, $15, 'invite.create', 'invite', id::text, customer_id,
            jsonb_build_object('email', email, 'name', name,
                'personalization', CASE WHEN message IS NULL THEN '{}'::jsonb
                                        ELSE jsonb_build_object('message', message) END,
                'status', 'queued'),
            created_at
     FROM rows";

/// Invites with their rendered messages in the outbox and their `invite.create` events.
/// Sent and failed ones look as the mail worker leaves them; queued ones are held (see the
/// module documentation).
fn write_invites(
    conn: &mut PgConnection,
    program: &Program,
    plan: &Plan,
    invites: &[&PlannedInvite],
    customers: &[i64],
) -> Result<(), Error> {
    if invites.is_empty() {
        return Ok(());
    }
    let ids = reserve_ids(conn, "invites", invites.len())?;
    let now = Utc::now();
    let held_until = now + Duration::days(36_525);
    let mut messages = Vec::with_capacity(invites.len());
    for invite in invites {
        let inviter = invite.inviter.map(|i| &plan.people[i as usize]);
        let email = InviteEmail {
            program_name: program.name.clone(),
            recipient_name: Some(invite.name.clone()),
            inviter: inviter.map(|person| format!("{} {}", person.name(), person.surname())),
            referral_link: match inviter {
                Some(person) => program.referral_url(person.key()),
                None => program.referral_base_url.clone(),
            },
            message: invite.message.map(str::to_string),
            details: Vec::new(),
        };
        messages.push(email.render()?);
    }
    // When the worker finished with a message: a few seconds after it was queued.
    let handled: Vec<DateTime<Utc>> = invites
        .iter()
        .map(|invite| (invite.created_at + Duration::seconds(3)).min(now))
        .collect();
    diesel::sql_query(INSERT_INVITES)
        .bind::<BigInt, _>(program.id)
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Nullable<BigInt>>, _>(
            invites
                .iter()
                .map(|invite| invite.inviter.map(|i| customers[i as usize]))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(
            invites
                .iter()
                .map(|invite| invite.email.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(
            invites
                .iter()
                .map(|invite| invite.name.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(invites.iter().map(|invite| invite.message).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(invites.iter().map(|invite| invite.created_at).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(&handled)
        .bind::<Array<Text>, _>(
            invites
                .iter()
                .map(|invite| invite.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(messages.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(messages.iter().map(|m| m.html.as_str()).collect::<Vec<_>>())
        .bind::<Text, _>(plan::FAILURE)
        .bind::<Timestamptz, _>(held_until)
        .bind::<Text, _>(ACTOR)
        .execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_even_and_refer_to_no_one_in_another_share() {
        let plan = Plan::draw(1, 0, 4 * BATCH as u32, Utc::now());
        for batch in 0..4 {
            let people = batch * BATCH..(batch + 1) * BATCH;
            let shares = shares(&plan, people.clone(), 2);
            let mut all: Vec<usize> = shares.concat();
            all.sort_unstable();
            assert_eq!(all, people.clone().collect::<Vec<_>>(), "every customer once");
            for (s, share) in shares.iter().enumerate() {
                assert!(share.windows(2).all(|pair| pair[0] < pair[1]), "ascending");
                for &i in share {
                    if let Some(referrer) = plan.people[i].referrer.map(|r| r as usize) {
                        assert!(
                            referrer < people.start || shares[s].binary_search(&referrer).is_ok(),
                            "customer {i}'s referrer {referrer} is in another share"
                        );
                    }
                }
            }
            // After the first batch, whose customers mostly refer each other, the shares
            // are about even.
            if batch > 0 {
                let smaller = shares.iter().map(Vec::len).min().unwrap_or(0);
                assert!(smaller > BATCH * 2 / 5, "batch {batch}: {smaller} of {BATCH}");
            }
        }
    }
}
