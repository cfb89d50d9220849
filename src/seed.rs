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
//! the customer tallies above all) stays locked for longer than a moment. Every commit
//! keeps the invariants: a batch's customers count the referrals written so far and the
//! same transaction adds its referrals to earlier referrers' counts; a link is written
//! with its clicks; a payout after the credits it pays out. A failed or interrupted seed
//! leaves its whole batches, and running it again adds after them.
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
/// The largest count accepted (the plan numbers customers with `u32`).
pub const MAX_CUSTOMERS: i64 = 50_000_000;
/// Shown as the actor of every seeded audit event.
const ACTOR: &str = "seed";

/// Seeds `count` customers (and their clicks, bookings and invites) into the program.
/// Without `seed`, a random one is drawn and logged, so the data set can be made again.
pub fn seed(conn: &mut PgConnection, program_slug: &str, count: i64, seed: Option<u64>) -> Result<(), Error> {
    if !(0..=MAX_CUSTOMERS).contains(&count) {
        return Err(Error::invalid(
            "customers",
            format!("Seed between 0 and {MAX_CUSTOMERS} customers."),
        ));
    }
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
        let end = people.end;
        conn.transaction(|conn| write_customers(conn, &program, &plan, people, &clicks[batch], &mut ids))?;
        conn.transaction(|conn| {
            write_bookings(conn, &program, &bookings[batch], &ids)?;
            write_invites(conn, &program, &plan, &invites[batch], &ids)
        })?;
        tracing::info!("seeded {end}/{total} customers");
    }
    tracing::info!(
        "seeded {count} customers, {} link clicks, {} ledger entries, {} invites",
        plan.clicks.len(),
        plan.bookings.len(),
        plan.invites.len()
    );
    // VACUUM as well as ANALYZE: it marks the new pages all-visible, so lists are read from
    // their covering indexes alone right away rather than after autovacuum gets to them.
    for table in ["customers", "referral_links", "referral_standings"] {
        diesel::sql_query(format!("VACUUM (ANALYZE) {table}")).execute(conn)?;
    }
    diesel::sql_query("ANALYZE referral_clicks, balance_transactions, invites, mail_outbox, audit_events")
        .execute(conn)?;
    tracing::info!("tables vacuumed and analysed");
    Ok(())
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

/// One batch of customers (`people`, indexes into the plan) with their default links, the
/// clicks on them and their audit events, in one statement; and the referrals they add to
/// earlier customers' counts. Each `referrals_count` counts the active customers written so
/// far who were referred by them, so every committed batch leaves exact counts. Appends the
/// customers' ids to `ids`.
fn write_customers(
    conn: &mut PgConnection,
    program: &Program,
    plan: &Plan,
    people: Range<usize>,
    clicks: &[&Click],
    ids: &mut Vec<i64>,
) -> Result<(), Error> {
    let (start, end) = (people.start, people.end);
    let mut referrals = vec![0i32; end - start];
    let mut earlier: BTreeMap<usize, i32> = BTreeMap::new();
    for person in &plan.people[people.clone()] {
        if let (Some(referrer), None) = (person.referrer, person.deleted_at) {
            match (referrer as usize).checked_sub(start) {
                Some(within) => referrals[within] += 1,
                None => *earlier.entry(referrer as usize).or_default() += 1,
            }
        }
    }
    // Through a plain UPDATE, as a signup counts its referral: the standings trigger copies
    // the new counts.
    if !earlier.is_empty() {
        diesel::sql_query(
            "UPDATE customers c SET referrals_count = c.referrals_count + d.n
             FROM unnest($1::bigint[], $2::int[]) AS d(id, n) WHERE c.id = d.id",
        )
        .bind::<Array<BigInt>, _>(earlier.keys().map(|&i| ids[i]).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(earlier.values().copied().collect::<Vec<_>>())
        .execute(conn)?;
    }
    ids.extend(reserve_ids(conn, "customers", end - start)?);
    let people = &plan.people[people];
    let referrers: Vec<Option<usize>> = people
        .iter()
        .map(|person| person.referrer.map(|i| i as usize))
        .collect();
    // The tallies' slot is locked by the trigger at the end of this statement, until the
    // commit right after it; the clicks are written in it, with the links they count.
    diesel::sql_query(
        "WITH rows AS (
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
         )
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
         FROM rows WHERE deleted_at IS NOT NULL",
    )
    .bind::<BigInt, _>(program.id)
    .bind::<Array<BigInt>, _>(&ids[start..end])
    .bind::<Array<Text>, _>((start..end).map(|i| plan.external_id(i)).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(people.iter().map(|p| p.key()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>((start..end).map(|i| plan.email(i)).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(people.iter().map(|p| p.name()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(people.iter().map(|p| p.surname()).collect::<Vec<_>>())
    .bind::<Array<Date>, _>(people.iter().map(|p| p.born).collect::<Vec<NaiveDate>>())
    .bind::<Array<Bool>, _>(people.iter().map(|p| p.approved).collect::<Vec<_>>())
    .bind::<Array<Nullable<BigInt>>, _>(referrers.iter().map(|r| r.map(|i| ids[i])).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        referrers
            .iter()
            .map(|r| r.map(|i| plan.people[i].key()))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Integer>, _>(&referrals)
    .bind::<Array<BigInt>, _>(people.iter().map(|p| p.clicks).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(people.iter().map(|p| p.created_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamptz>>, _>(people.iter().map(|p| p.deleted_at).collect::<Vec<_>>())
    .bind::<Text, _>(ACTOR)
    .bind::<Array<BigInt>, _>(
        clicks
            .iter()
            .map(|click| ids[click.customer as usize])
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(clicks.iter().map(|click| click.referer).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(clicks.iter().map(|click| click.at).collect::<Vec<_>>())
    .execute(conn)?;
    Ok(())
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
