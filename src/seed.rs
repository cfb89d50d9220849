//! `referdesk seed`: fills a program with realistic-looking customers for benchmarks and
//! demos — a million rows in about a minute, straight in SQL rather than row by row.
//!
//! The data keeps every invariant the application keeps: default referral links whose code
//! is the key, referrers inside the program created before the customers they referred,
//! and exact `referrals_count`s.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::domain::programs;
use crate::error::Error;

/// Inserts `count` customers into the program, in batches, and prints progress.
pub fn seed(conn: &mut PgConnection, program_slug: &str, count: i64) -> Result<(), Error> {
    let program = programs::find_by_slug(conn, program_slug)?;
    let salt = crate::random::random_token(8);
    const BATCH: i64 = 100_000;
    let mut done = 0;
    while done < count {
        let size = BATCH.min(count - done);
        conn.transaction(|conn| {
            insert_batch(conn, program.id, &salt, done, size)?;
            Ok::<_, Error>(())
        })?;
        done += size;
        eprintln!("seeded {done}/{count} customers");
    }
    conn.transaction(|conn| {
        diesel::sql_query(
            "UPDATE customers c SET referrals_count = counted.n
             FROM (SELECT referrer_id, count(*)::int AS n FROM customers
                   WHERE program_id = $1 AND referrer_id IS NOT NULL AND status = 'active'
                   GROUP BY referrer_id) counted
             WHERE c.id = counted.referrer_id",
        )
        .bind::<BigInt, _>(program.id)
        .execute(conn)?;
        Ok::<_, Error>(())
    })?;
    // VACUUM as well as ANALYZE: it marks the new pages all-visible, so lists are read from
    // their covering indexes alone right away rather than after autovacuum gets to them.
    diesel::sql_query("VACUUM (ANALYZE) customers").execute(conn)?;
    diesel::sql_query("VACUUM (ANALYZE) referral_links").execute(conn)?;
    // The recount rewrote the referrers' standings (their triggers): settle those too.
    diesel::sql_query("VACUUM (ANALYZE) referral_standings").execute(conn)?;
    eprintln!("referral counts recomputed; tables vacuumed and analysed");
    Ok(())
}

fn insert_batch(
    conn: &mut PgConnection,
    program_id: i64,
    salt: &str,
    offset: i64,
    size: i64,
) -> Result<(), Error> {
    // Names, domains and dates cycle through fixed lists; about 30% of customers are
    // referred, mostly by a small set of prolific referrers (power-law-ish), always by
    // someone created earlier in the same program.
    diesel::sql_query(
        "WITH existing AS (
             SELECT min(id) AS first_id, max(id) AS last_id FROM customers WHERE program_id = $1
         ), numbered AS (
             SELECT g AS n FROM generate_series($3 + 1, $3 + $4) AS g
         ), rows AS (
             SELECT n,
                    'seed-' || n AS external_id,
                    substr(md5($2 || n::text), 1, 12) AS key,
                    (ARRAY['ada','grace','alan','linus','barbara','ken','margaret','dennis','frances','edsger'])[1 + n % 10]
                        || '.' || n || '@' ||
                    (ARRAY['acme.com','example.org','mail.test','globex.io','initech.net','umbrella.co','hooli.xyz','stark.dev'])[1 + (n / 7) % 8] AS email,
                    (ARRAY['Ada','Grace','Alan','Linus','Barbara','Ken','Margaret','Dennis','Frances','Edsger'])[1 + n % 10] AS name,
                    (ARRAY['Lovelace','Hopper','Turing','Torvalds','Liskov','Thompson','Hamilton','Ritchie','Allen','Dijkstra'])[1 + (n / 10) % 10] AS surname,
                    now() - ((n * 7919) % 31536000) * interval '1 second' AS created_at,
                    (n % 10 < 3) AS referred,
                    (n % 50 <> 0) AS approved
             FROM numbered
         )
         INSERT INTO customers (program_id, external_id, key, email, name, surname, metadata, approved,
                                referrer_id, created_at, updated_at)
         SELECT $1, external_id, key, email, name, surname,
                jsonb_build_object('date_of_birth', to_char(date '1960-01-01' + (n % 15000)::int, 'YYYY-MM-DD')),
                approved,
                CASE WHEN referred AND existing.first_id IS NOT NULL
                     THEN existing.first_id + floor(power(((n * 2654435761) % 1000003) / 1000003.0, 3)
                                                   * (existing.last_id - existing.first_id))::bigint
                END,
                created_at, created_at
         FROM rows, existing",
    )
    .bind::<BigInt, _>(program_id)
    .bind::<Text, _>(salt)
    .bind::<BigInt, _>(offset)
    .bind::<BigInt, _>(size)
    .execute(conn)?;
    diesel::sql_query(
        "INSERT INTO referral_links (program_id, customer_id, code, is_default, created_at)
         SELECT c.program_id, c.id, c.key, TRUE, c.created_at FROM customers c
         WHERE c.program_id = $1 AND c.external_id IN
               (SELECT 'seed-' || g FROM generate_series($2 + 1, $2 + $3) AS g)",
    )
    .bind::<BigInt, _>(program_id)
    .bind::<BigInt, _>(offset)
    .bind::<BigInt, _>(size)
    .execute(conn)?;
    Ok(())
}
