//! The import's staging table: the checked rows copied in with `COPY`, checked against the
//! program's customers and written with set-based statements. Everything here runs in the
//! import's transaction; the table is temporary and goes with it.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Text};
use serde_json::Value;

use super::file::{file_error, Field, Mapping};
use super::rows::StagedRow;
use super::Mode;
use crate::domain::customers;
use crate::domain::programs::Program;
use crate::error::{is_unique_violation, Error};

diesel::table! {
    /// The part of `import_rows` the rows are copied into; the rest is filled in by SQL.
    import_rows (line) {
        line -> Int4,
        external_id -> Nullable<Text>,
        id_generated -> Bool,
        key -> Nullable<Text>,
        key_generated -> Bool,
        email -> Nullable<Text>,
        name -> Nullable<Text>,
        surname -> Nullable<Text>,
        date_of_birth -> Nullable<Date>,
        custom_fields -> Nullable<Jsonb>,
        custom_cleared -> Array<Text>,
        approved -> Nullable<Bool>,
        created_at -> Nullable<Timestamptz>,
        referrer_line -> Nullable<Int4>,
        referrer_text -> Nullable<Text>,
    }
}

#[derive(Insertable)]
#[diesel(table_name = import_rows)]
#[diesel(treat_none_as_default_value = false)]
struct CopiedRow<'a> {
    line: i32,
    external_id: Option<&'a str>,
    id_generated: bool,
    key: Option<&'a str>,
    key_generated: bool,
    email: Option<&'a str>,
    name: Option<&'a str>,
    surname: Option<&'a str>,
    date_of_birth: Option<chrono::NaiveDate>,
    custom_fields: Option<&'a Value>,
    custom_cleared: &'a Vec<String>,
    approved: Option<bool>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    referrer_line: Option<i32>,
    referrer_text: Option<&'a str>,
}

/// `target_id`: the customer a row updates (upserts); `referrer_id`: the referrer found
/// among the customers.
const CREATE: &str = "CREATE TEMPORARY TABLE import_rows (
    line INTEGER PRIMARY KEY,
    external_id TEXT,
    id_generated BOOLEAN NOT NULL,
    key TEXT,
    key_generated BOOLEAN NOT NULL,
    email TEXT,
    name TEXT,
    surname TEXT,
    date_of_birth DATE,
    custom_fields JSONB,
    custom_cleared TEXT[] NOT NULL,
    approved BOOLEAN,
    created_at TIMESTAMPTZ,
    referrer_line INTEGER,
    referrer_text TEXT,
    target_id BIGINT,
    referrer_id BIGINT
) ON COMMIT DROP";

pub struct Staging<'a> {
    program: &'a Program,
    mapping: &'a Mapping,
    mode: Mode,
    /// Each field's column header, for messages.
    headers: Headers,
}

struct Headers {
    key: String,
    id: String,
    email: String,
    referrer: String,
}

#[derive(QueryableByName)]
struct Refused {
    #[diesel(sql_type = Integer)]
    line: i32,
    #[diesel(sql_type = Text)]
    column: String,
    #[diesel(sql_type = Text)]
    message: String,
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Integer)]
    line: i32,
}

#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    created: i64,
    #[diesel(sql_type = BigInt)]
    updated: i64,
}

impl<'a> Staging<'a> {
    /// Creates the staging table in the current transaction; messages name the columns
    /// by the file's `headers`. Statements of an import may run longer than a page's limit
    /// (`statement_timeout`).
    pub fn create(
        conn: &mut PgConnection,
        program: &'a Program,
        mapping: &'a Mapping,
        headers: &[String],
        mode: Mode,
    ) -> Result<Staging<'a>, Error> {
        diesel::sql_query("SET LOCAL statement_timeout = 0").execute(conn)?;
        diesel::sql_query(CREATE).execute(conn)?;
        let named = |field: Field| {
            mapping
                .column_of(&field)
                .and_then(|column| headers.get(column).cloned())
                .unwrap_or_default()
        };
        Ok(Staging {
            program,
            mapping,
            mode,
            headers: Headers {
                key: named(Field::Key),
                id: named(Field::Id),
                email: named(Field::Email),
                referrer: named(Field::Referrer),
            },
        })
    }

    /// Copies the rows in (binary `COPY`), then has the table analysed for the checks' plans.
    /// `copied` is told the rows copied so far after each `COPY` (of up to 100,000 rows).
    pub fn copy(
        &mut self,
        conn: &mut PgConnection,
        rows: &[StagedRow],
        mut copied: impl FnMut(u64),
    ) -> Result<(), Error> {
        let mut done = 0;
        for chunk in rows.chunks(100_000) {
            let batch: Vec<CopiedRow> = chunk
                .iter()
                .map(|row| CopiedRow {
                    line: row.line,
                    external_id: row.external_id.as_deref(),
                    id_generated: row.id_generated,
                    key: row.key.as_deref(),
                    key_generated: row.key_generated,
                    email: row.email.as_deref(),
                    name: row.name.as_deref(),
                    surname: row.surname.as_deref(),
                    date_of_birth: row.date_of_birth,
                    custom_fields: row.custom_fields.as_ref(),
                    custom_cleared: &row.custom_cleared,
                    approved: row.approved,
                    created_at: row.created_at,
                    referrer_line: row.referrer_line,
                    referrer_text: row.referrer_text.as_deref(),
                })
                .collect();
            diesel::copy_from(import_rows::table)
                .from_insertable(&batch)
                .execute(conn)?;
            done += chunk.len() as u64;
            copied(done);
        }
        diesel::sql_query("ANALYZE import_rows").execute(conn)?;
        Ok(())
    }

    /// Matches rows to customers (upserts), draws new keys and ids where generated ones are
    /// taken, finds referrers among the customers, and returns every row refused for a
    /// clash with the program's customers as (line, column, message).
    pub fn check(&mut self, conn: &mut PgConnection) -> Result<Vec<(i32, String, String)>, Error> {
        let program_id = self.program.id;
        let matched = match self.mode {
            Mode::Create => None,
            Mode::UpsertByKey => Some("c.key = s.key AND NOT s.key_generated"),
            Mode::UpsertById => Some("c.external_id = s.external_id AND NOT s.id_generated"),
            Mode::UpsertByEmail => Some("lower(c.email) = lower(s.email)"),
        };
        if let Some(condition) = matched {
            diesel::sql_query(format!(
                "UPDATE import_rows s SET target_id = c.id FROM customers c
                 WHERE c.program_id = $1 AND {condition}"
            ))
            .bind::<BigInt, _>(program_id)
            .execute(conn)?;
        }
        self.redraw_taken_generated(conn)?;
        diesel::sql_query(
            "UPDATE import_rows s SET referrer_id = coalesce(
                 (SELECT c.id FROM customers c WHERE c.program_id = $1 AND c.key = s.referrer_text),
                 (SELECT c.id FROM customers c
                  WHERE c.program_id = $1 AND lower(c.email) = lower(s.referrer_text)
                  LIMIT 1))
             WHERE s.referrer_text IS NOT NULL",
        )
        .bind::<BigInt, _>(program_id)
        .execute(conn)?;
        let refused: Vec<Refused> = diesel::sql_query(CHECKS)
            .bind::<BigInt, _>(program_id)
            .bind::<Text, _>(&self.headers.key)
            .bind::<Text, _>(&self.headers.id)
            .bind::<Text, _>(&self.headers.email)
            .bind::<Text, _>(&self.headers.referrer)
            .bind::<Bool, _>(self.mapping.maps(&Field::Referrer))
            .load(conn)?;
        Ok(refused
            .into_iter()
            .map(|refused| (refused.line, refused.column, refused.message))
            .collect())
    }

    /// A generated key or id that another customer holds (or held) is drawn again; the
    /// odds are about one in a billion per row.
    fn redraw_taken_generated(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        for _ in 0..8 {
            let keys: Vec<Line> = diesel::sql_query(
                "SELECT s.line FROM import_rows s
                 WHERE s.key_generated AND s.target_id IS NULL AND (
                     EXISTS (SELECT 1 FROM customers c WHERE c.program_id = $1 AND c.key = s.key)
                     OR EXISTS (SELECT 1 FROM retired_keys r WHERE r.program_id = $1 AND r.key = s.key)
                     OR EXISTS (SELECT 1 FROM referral_links l WHERE l.program_id = $1 AND l.code = s.key))",
            )
            .bind::<BigInt, _>(self.program.id)
            .load(conn)?;
            let ids: Vec<Line> = diesel::sql_query(
                "SELECT s.line FROM import_rows s
                 WHERE s.id_generated AND s.target_id IS NULL AND EXISTS
                     (SELECT 1 FROM customers c WHERE c.program_id = $1 AND c.external_id = s.external_id)",
            )
            .bind::<BigInt, _>(self.program.id)
            .load(conn)?;
            if keys.is_empty() && ids.is_empty() {
                return Ok(());
            }
            for (lines, column, draw) in [
                (keys, "key", customers::random_key as fn() -> String),
                (ids, "external_id", || {
                    customers::random_code(customers::GENERATED_LENGTH)
                }),
            ] {
                for Line { line } in lines {
                    diesel::sql_query(format!("UPDATE import_rows SET {column} = $1 WHERE line = $2"))
                        .bind::<Text, _>(draw())
                        .bind::<Integer, _>(line)
                        .execute(conn)?;
                }
            }
        }
        Err(Error::Internal(anyhow::anyhow!(
            "could not draw free keys for imported customers"
        )))
    }

    /// Leaves out the refused rows.
    pub fn drop_refused(&mut self, conn: &mut PgConnection, lines: &[i32]) -> Result<(), Error> {
        if !lines.is_empty() {
            diesel::sql_query("DELETE FROM import_rows WHERE line = ANY($1)")
                .bind::<Array<Integer>, _>(lines)
                .execute(conn)?;
        }
        Ok(())
    }

    /// (new customers, updated customers) among the rows left.
    pub fn counts(&mut self, conn: &mut PgConnection) -> Result<(u64, u64), Error> {
        let counts: Counts = diesel::sql_query(
            "SELECT count(*) FILTER (WHERE target_id IS NULL) AS created,
                    count(*) FILTER (WHERE target_id IS NOT NULL) AS updated
             FROM import_rows",
        )
        .get_result(conn)?;
        Ok((counts.created as u64, counts.updated as u64))
    }

    /// Writes the rows left: ids for the new customers, their referrers' ids, the existing
    /// referrers' counts (their rows locked in id order first, as a signup takes its
    /// referrer's row before the tallies), the updates, the new customers with their own
    /// referral counts, and their default links.
    pub fn merge(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        let program_id = self.program.id;
        diesel::sql_query(
            "SELECT c.id FROM customers c
             WHERE c.id IN (SELECT coalesce(s.referrer_id, r.target_id) FROM import_rows s
                            LEFT JOIN import_rows r ON r.line = s.referrer_line
                            WHERE s.target_id IS NULL)
             ORDER BY c.id FOR NO KEY UPDATE OF c",
        )
        .execute(conn)?;
        diesel::sql_query(
            "UPDATE customers c SET referrals_count = c.referrals_count + k.n
             FROM (SELECT coalesce(s.referrer_id, r.target_id) AS referrer_id, count(*)::int AS n
                   FROM import_rows s LEFT JOIN import_rows r ON r.line = s.referrer_line
                   WHERE s.target_id IS NULL AND coalesce(s.referrer_id, r.target_id) IS NOT NULL
                   GROUP BY 1) k
             WHERE c.id = k.referrer_id",
        )
        .execute(conn)?;
        if let Some(update) = self.update_statement() {
            diesel::sql_query(update).execute(conn).map_err(clash)?;
        }
        diesel::sql_query(INSERT)
            .bind::<BigInt, _>(program_id)
            .bind::<Bool, _>(!self.program.require_approval)
            .execute(conn)
            .map_err(clash)?;
        Ok(())
    }

    /// The update of matched customers: only the mapped fields (a blank cell clears a
    /// field; a blank custom field removes it; a blank approved or created-at keeps it).
    /// Key, id and referrer never change here (`check` refuses rows that would change them).
    fn update_statement(&self) -> Option<String> {
        if self.mode == Mode::Create {
            return None;
        }
        let mapped = |field: Field| self.mapping.maps(&field);
        let mut sets = vec!["updated_at = now()".to_string()];
        if mapped(Field::Email) && self.mode != Mode::UpsertByEmail {
            sets.push("email = s.email".into());
        }
        if mapped(Field::Name) {
            sets.push("name = s.name".into());
        }
        if mapped(Field::Surname) {
            sets.push("surname = s.surname".into());
        }
        if mapped(Field::DateOfBirth) {
            sets.push(
                "metadata = CASE WHEN s.date_of_birth IS NULL THEN c.metadata - 'date_of_birth'
                 ELSE c.metadata || jsonb_build_object('date_of_birth', to_char(s.date_of_birth, 'YYYY-MM-DD')) END"
                    .into(),
            );
        }
        if self.mapping.custom_fields().next().is_some() {
            sets.push(
                "custom_fields = (c.custom_fields - s.custom_cleared) || coalesce(s.custom_fields, '{}'::jsonb)".into(),
            );
        }
        if mapped(Field::Approved) {
            sets.push("approved = coalesce(s.approved, c.approved)".into());
        }
        if mapped(Field::CreatedAt) {
            sets.push("created_at = coalesce(s.created_at, c.created_at)".into());
        }
        Some(format!(
            "UPDATE customers c SET {} FROM import_rows s WHERE c.id = s.target_id",
            sets.join(", ")
        ))
    }
}

/// The new customers and their default links, in one statement (no pass over the staging
/// table writes to it): ids reserved from the customers' sequence in line order, each
/// row's referrer (a customer, an updated row's customer, or a new row's reserved id), and
/// each new customer's referrals among the new rows.
const INSERT: &str = "WITH ids AS MATERIALIZED (
         SELECT line, nextval(pg_get_serial_sequence('customers', 'id')) AS id
         FROM (SELECT line FROM import_rows WHERE target_id IS NULL ORDER BY line OFFSET 0) o
     ), new_rows AS MATERIALIZED (
         SELECT s.*, i.id AS customer_id, coalesce(s.referrer_id, r.target_id, ri.id) AS referrer
         FROM import_rows s
         JOIN ids i ON i.line = s.line
         LEFT JOIN import_rows r ON r.line = s.referrer_line
         LEFT JOIN ids ri ON ri.line = s.referrer_line
     ), counts AS (
         SELECT referrer, count(*)::int AS n FROM new_rows WHERE referrer IS NOT NULL GROUP BY referrer
     ), created AS (
         INSERT INTO customers (id, program_id, external_id, key, email, name, surname,
                                metadata, custom_fields, approved, referrer_id, referrals_count,
                                created_at, updated_at)
         SELECT n.customer_id, $1, n.external_id, n.key, n.email, n.name, n.surname,
                CASE WHEN n.date_of_birth IS NULL THEN '{}'::jsonb
                     ELSE jsonb_build_object('date_of_birth', to_char(n.date_of_birth, 'YYYY-MM-DD')) END,
                coalesce(n.custom_fields, '{}'::jsonb), coalesce(n.approved, $2), n.referrer,
                coalesce(k.n, 0), coalesce(n.created_at, now()), now()
         FROM new_rows n LEFT JOIN counts k ON k.referrer = n.customer_id
         ORDER BY n.customer_id
         RETURNING id
     )
     INSERT INTO referral_links (program_id, customer_id, code, is_default)
     SELECT $1, customer_id, key, TRUE FROM new_rows ORDER BY customer_id";

/// Every clash with the program's customers, as `customers::taken` words it for a form:
/// keys, ids and emails held by another customer, keys held before or used as link
/// codes, unknown or deleted referrers, self-referrals, and changes an import does not
/// make (an existing customer's key, id or referrer).
const CHECKS: &str = "
    SELECT line, $2 AS column, CASE
               WHEN held THEN 'This key is already taken by another customer.'
               WHEN retired THEN 'This key belonged to another customer before; their old links still use it, so it cannot be reused.'
               ELSE 'This key is already used as a referral link code.' END AS message
    FROM (SELECT s.line,
                 EXISTS (SELECT 1 FROM customers c WHERE c.program_id = $1 AND c.key = s.key
                         AND c.id IS DISTINCT FROM s.target_id) AS held,
                 EXISTS (SELECT 1 FROM retired_keys r WHERE r.program_id = $1 AND r.key = s.key
                         AND r.customer_id IS DISTINCT FROM s.target_id) AS retired,
                 EXISTS (SELECT 1 FROM referral_links l WHERE l.program_id = $1 AND l.code = s.key
                         AND (l.customer_id IS DISTINCT FROM s.target_id OR NOT l.is_default)) AS linked
          FROM import_rows s WHERE NOT s.key_generated) k
    WHERE held OR retired OR linked
    UNION ALL
    SELECT s.line, $3, 'A customer with this id already exists.'
    FROM import_rows s
    WHERE NOT s.id_generated AND EXISTS (SELECT 1 FROM customers c WHERE c.program_id = $1
          AND c.external_id = s.external_id AND c.id IS DISTINCT FROM s.target_id)
    UNION ALL
    SELECT s.line, $4, 'A customer with this email already exists.'
    FROM import_rows s
    WHERE s.email IS NOT NULL AND EXISTS (SELECT 1 FROM customers c WHERE c.program_id = $1
          AND lower(c.email) = lower(s.email) AND c.id IS DISTINCT FROM s.target_id)
    UNION ALL
    SELECT s.line, $2, 'This customer''s key is \"' || c.key || '\"; a key is changed on the customer''s page (which keeps the old one for their links), not by an import.'
    FROM import_rows s JOIN customers c ON c.id = s.target_id
    WHERE NOT s.key_generated AND c.key <> s.key
    UNION ALL
    SELECT s.line, $3, 'This customer''s id is \"' || c.external_id || '\"; an id never changes.'
    FROM import_rows s JOIN customers c ON c.id = s.target_id
    WHERE NOT s.id_generated AND c.external_id <> s.external_id
    UNION ALL
    SELECT s.line, $5, 'No customer with the key or email \"' || s.referrer_text || '\" in this program or in this file.'
    FROM import_rows s WHERE s.referrer_text IS NOT NULL AND s.referrer_id IS NULL
    UNION ALL
    SELECT s.line, $5, coalesce(nullif(concat_ws(' ', r.name, r.surname), ''), r.email, r.key)
                       || ' is deleted and cannot refer anyone.'
    FROM import_rows s
    LEFT JOIN import_rows f ON f.line = s.referrer_line
    JOIN customers r ON r.id = coalesce(s.referrer_id, f.target_id)
    WHERE r.status = 'deleted'
    UNION ALL
    SELECT s.line, $5, 'A customer cannot refer themselves.'
    FROM import_rows s WHERE s.referrer_id = s.target_id
    UNION ALL
    SELECT s.line, $5, 'This customer''s referrer is changed on their page (by an admin, who sees the whole chain), not by an import.'
    FROM import_rows s
    JOIN customers c ON c.id = s.target_id
    LEFT JOIN import_rows f ON f.line = s.referrer_line
    WHERE $6 AND (s.referrer_text IS NOT NULL OR s.referrer_line IS NOT NULL)
      AND c.referrer_id IS DISTINCT FROM coalesce(s.referrer_id, f.target_id)
      AND coalesce(s.referrer_id, -1) <> c.id
    ORDER BY 1";

/// A unique index refusing a row the checks let through: a customer written meanwhile by
/// someone else. The whole import is rolled back.
fn clash(error: diesel::result::Error) -> Error {
    const CONSTRAINTS: [&str; 5] = [
        "customers_program_id_key_key",
        "customers_program_id_external_id_key",
        "customers_email_key",
        "referral_links_program_id_code_key",
        "retired_keys_pkey",
    ];
    if CONSTRAINTS
        .iter()
        .any(|constraint| is_unique_violation(&error, constraint))
    {
        return file_error(
            "A customer with the same key, id or email was saved while the import ran, \
             or two rows swap an email; nothing was imported. Run the import again.",
        );
    }
    error.into()
}
