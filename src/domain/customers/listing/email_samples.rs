//! Partial email searches that look up only the rare part of the term.
//!
//! A term without `@` (`linus.25000`) can be anywhere in an email, so it is found through
//! the trigram index on `lower(email)`. For each of the term's trigrams GIN reads its whole
//! posting list — the rows holding that trigram — to intersect them: `lin`, `inu` and
//! `nus` are in a tenth of the seeded emails each, so at a million customers the index
//! scan reads ten times the pages for one match that `25000` alone reads.
//!
//! Every email containing the term contains each part of it, so any part finds all the
//! matches and some more; the search looks up the part that costs least and checks the
//! whole term on the rows found (`strpos`, which the trigram index cannot serve, so
//! PostgreSQL does not fold it into the index scan). The results are exactly those of the
//! whole term; only the work differs.
//!
//! What a part costs is judged from a sample of the table's emails (the index holds every
//! program's, so the sample does too), taken with `TABLESAMPLE` and kept for
//! [`SAMPLE_LIFETIME`]: reading a trigram's posting list costs about a page per
//! [`POSTINGS_PER_PAGE`] rows that hold it, and every table page holding rows the part
//! finds costs a read to check them. Pages, not rows: the sample is made of whole pages,
//! and rows written together sit together (a run of signups `ada.250000`…`ada.250009`
//! fills one page), so counting rows would make a part whose holders share the looked-up
//! customer's page look ten times dearer than it is, and send the search back to the
//! whole term. A stale or
//! unlucky sample makes a search slower, never wrong.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text};

use crate::error::Error;

/// Emails in a sample: enough to tell a trigram in 1% of the rows from one in 0.1%.
const SAMPLE_SIZE: usize = 4_000;

/// How long a sample is used before the next search takes a new one (taking one reads
/// thousands of rows, too much for every search).
const SAMPLE_LIFETIME: Duration = Duration::from_secs(600);

/// Row ids in one GIN posting-list page (compressed, so many; measured on the seeded index).
const POSTINGS_PER_PAGE: f64 = 2_000.0;

/// The server's current sample of emails (see the module documentation).
#[derive(Default)]
pub(super) struct EmailSamples {
    current: Mutex<Option<Arc<EmailSample>>>,
}

impl EmailSamples {
    /// The part of `term` to look up in the email trigram index, when one costs less than
    /// the whole term. `term` is a normalized search term.
    pub(super) fn index_part(&self, conn: &mut PgConnection, term: &str) -> Result<Option<IndexPart>, Error> {
        if parts(term).next().is_none() {
            return Ok(None);
        }
        let sample = self.sample(conn)?;
        Ok(sample.index_part(term).map(|part| IndexPart {
            part: part.to_string(),
            rare: sample.pages_holding(&part.to_ascii_lowercase()) <= 1,
        }))
    }

    fn sample(&self, conn: &mut PgConnection) -> Result<Arc<EmailSample>, Error> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(sample) = current.filter(|sample| sample.taken_at.elapsed() < SAMPLE_LIFETIME) {
            return Ok(sample);
        }
        // Taken without holding the lock: two searches may both take one, and the later
        // one is kept — harmless.
        let sample = Arc::new(EmailSample::take(conn)?);
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sample.clone());
        Ok(sample)
    }
}

/// The part of a search term to look up instead of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPart {
    pub part: String,
    /// At most one sampled page holds it, as for any text a handful of rows hold: the
    /// trigram index is the right way to find it, whatever the part (see
    /// `listing::matches`).
    pub rare: bool,
}

/// Lower-cased emails, and in how many of them each trigram of ASCII letters and digits
/// occurs (the trigrams the index holds for the inside of words).
#[derive(Debug)]
struct EmailSample {
    taken_at: Instant,
    /// How many emails the sample holds.
    rows: usize,
    /// The emails, one per line: one pass of a substring search finds the holders of a
    /// part (a search weighs a few parts on every page view).
    lines: String,
    /// Where each line starts in `lines`, and the table page its row is on.
    line_pages: Vec<(usize, i64)>,
    trigram_rows: HashMap<[u8; 3], u32>,
}

#[derive(QueryableByName)]
struct SampledEmail {
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = BigInt)]
    page: i64,
}

#[derive(QueryableByName)]
struct TableSize {
    #[diesel(sql_type = Double)]
    pages: f64,
    #[diesel(sql_type = Double)]
    rows_per_page: f64,
}

impl EmailSample {
    fn take(conn: &mut PgConnection) -> Result<EmailSample, Error> {
        // `SYSTEM` sampling reads whole pages picked at random: about as quick however large
        // the table. The share of pages is worked out from the table's size now
        // (statistics can be far behind after a bulk load) and its rows per page when last
        // analysed. Twice the rows needed (some have no email), and a random half of
        // them: the pages come in table order, so a plain LIMIT would keep the oldest.
        let size: TableSize = diesel::sql_query(
            "SELECT pg_relation_size(oid) / current_setting('block_size')::float8 AS pages,
                    CASE WHEN relpages > 0 AND reltuples > 0 THEN reltuples / relpages
                         ELSE 30 END::float8 AS rows_per_page
             FROM pg_class WHERE oid = 'customers'::regclass",
        )
        .get_result(conn)?;
        let wanted_pages = 2.0 * SAMPLE_SIZE as f64 / size.rows_per_page.max(1.0);
        let percent = if size.pages <= wanted_pages {
            100.0
        } else {
            100.0 * wanted_pages / size.pages
        };
        let emails = diesel::sql_query(
            "SELECT lower(email) AS email, ((ctid::text)::point)[0]::int8 AS page
             FROM customers TABLESAMPLE SYSTEM ($1)
             WHERE email IS NOT NULL ORDER BY random() LIMIT $2",
        )
        .bind::<Double, _>(percent)
        .bind::<BigInt, _>(SAMPLE_SIZE as i64)
        .load::<SampledEmail>(conn)?
        .into_iter()
        .map(|row| (row.email, row.page))
        .collect();
        Ok(EmailSample::of(emails))
    }

    /// A sample of these (lower-cased) emails, each with the table page of its row.
    fn of(emails: Vec<(String, i64)>) -> EmailSample {
        let mut trigram_rows: HashMap<[u8; 3], u32> = HashMap::new();
        let mut lines = String::new();
        let mut line_pages = Vec::with_capacity(emails.len());
        for (email, page) in &emails {
            let mut seen: Vec<[u8; 3]> = trigrams(email).collect();
            seen.sort_unstable();
            seen.dedup();
            for trigram in seen {
                *trigram_rows.entry(trigram).or_default() += 1;
            }
            if !lines.is_empty() {
                lines.push('\n');
            }
            line_pages.push((lines.len(), *page));
            lines.push_str(email);
        }
        EmailSample {
            taken_at: Instant::now(),
            rows: emails.len(),
            lines,
            line_pages,
            trigram_rows,
        }
    }

    /// How many table pages hold the sampled rows containing `text`.
    fn pages_holding(&self, text: &str) -> usize {
        let mut pages: Vec<i64> = memchr::memmem::find_iter(self.lines.as_bytes(), text.as_bytes())
            .map(|at| {
                // The line the match is in: the last one starting at or before it.
                let line = self.line_pages.partition_point(|(start, _)| *start <= at) - 1;
                self.line_pages[line].1
            })
            .collect();
        pages.sort_unstable();
        pages.dedup();
        pages.len()
    }

    /// The part of `term` (see [`parts`]) that is cheapest to look up, when it is cheaper
    /// than the whole term.
    fn index_part<'t>(&self, term: &'t str) -> Option<&'t str> {
        if self.rows == 0 {
            return None;
        }
        let whole_cost = self.cost(term, &term.to_lowercase());
        parts(term)
            .map(|part| (self.cost(part, &part.to_ascii_lowercase()), part))
            .filter(|(cost, _)| *cost < whole_cost)
            .min_by(|(a, _), (b, _)| a.total_cmp(b))
            .map(|(_, word)| word)
    }

    /// Pages read per sampled row (the same factor for every candidate) to find the rows
    /// holding `text`, looked up by the trigrams of `looked_up`: the posting lists of those
    /// trigrams, and one page for each table page holding rows found.
    ///
    /// The first sampled page holding `text` is not counted (half a page's worth stands for
    /// zero or one): a text held by a few rows shows on one page whenever the sample happens
    /// to hold theirs (for the seed's `25000`, about one sample in ten), and one page would
    /// then weigh as much as the whole term's extra posting lists, sending the search back
    /// to them at several times the cost. Only a
    /// second page says a text is common.
    fn cost(&self, looked_up: &str, text: &str) -> f64 {
        let postings: f64 = trigrams(looked_up)
            .map(|trigram| self.trigram_rows.get(&trigram).copied().unwrap_or(0) as f64)
            .sum();
        // Search terms hold no line breaks (control characters are dropped), so no match
        // spans two lines.
        let found = (self.pages_holding(text) as f64 - 1.0).max(0.5);
        (postings / POSTINGS_PER_PAGE + found) / self.rows as f64
    }
}

/// The parts of `term` that can be looked up instead of it: its words, and the runs of
/// letters and of digits inside them (`linus25000` has `linus` and `25000`) — every
/// trigram of such a part is a trigram of the term — at least a trigram long and shorter
/// than the term.
fn parts(term: &str) -> impl Iterator<Item = &str> {
    let mut parts: Vec<&str> = words(term)
        .flat_map(|word| {
            let runs = word
                .split(|c: char| !c.is_ascii_alphabetic())
                .chain(word.split(|c: char| !c.is_ascii_digit()));
            std::iter::once(word).chain(runs)
        })
        .filter(|part| part.len() >= 3 && part.len() < term.len())
        .collect();
    parts.sort_unstable();
    parts.dedup();
    parts.into_iter()
}

/// The runs of ASCII letters and digits in `text` — how the trigram index splits it into
/// words (other characters only separate them).
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
}

/// The lower-cased trigrams inside the words of `text`.
fn trigrams(text: &str) -> impl Iterator<Item = [u8; 3]> + '_ {
    words(text).flat_map(|word| {
        word.as_bytes()
            .windows(3)
            .map(|window| [window[0], window[1], window[2]].map(|byte| byte.to_ascii_lowercase()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each email on a page of its own.
    fn scattered(emails: Vec<String>) -> EmailSample {
        EmailSample::of(emails.into_iter().zip(0..).collect())
    }

    /// Emails shaped like the seed's: ten first names, numbers up to 4,000.
    fn seeded_sample() -> EmailSample {
        let names = [
            "ada", "grace", "alan", "linus", "barbara", "ken", "margaret", "dennis", "frances", "edsger",
        ];
        scattered(
            (1..=4_000)
                .map(|n| format!("{}.{n}@example.org", names[n % 10]))
                .collect(),
        )
    }

    /// The seed's rows as stored: in creation order, about thirty to a page.
    #[test]
    fn neighbours_on_one_page_cost_one_page() {
        let names = [
            "ada", "grace", "alan", "linus", "barbara", "ken", "margaret", "dennis", "frances", "edsger",
        ];
        let emails = (240_000..244_000)
            .chain(250_000..250_010)
            .map(|n: i64| (format!("{}.{n}@example.org", names[(n % 10) as usize]), n / 30))
            .collect();
        let sample = EmailSample::of(emails);
        // Ten holders of `25000` (250000…250009), all on the looked-up customer's page.
        assert_eq!(sample.pages_holding("25000"), 1);
        assert_eq!(sample.index_part("linus.25000"), Some("25000"));
    }

    /// A rare part whose holders the sample happens to meet once, on a page without the
    /// looked-up customer (`ada.125000` holds `25000` but not `linus.25000`), in a table
    /// where `linus` is in fewer rows than the seed's tenth (here one in thirteen, as after
    /// many signups with other emails). Counting that page would send the search back to
    /// the whole term, at several times the cost.
    #[test]
    fn one_sampled_page_holding_a_part_does_not_make_it_common() {
        let names = [
            "ada", "grace", "alan", "barbara", "ken", "margaret", "dennis", "frances", "edsger",
        ];
        let emails = (240_000..244_000)
            .map(|n: i64| {
                let name = if n % 13 == 3 {
                    "linus"
                } else {
                    names[(n % 9) as usize]
                };
                (format!("{name}.{n}@example.org"), n / 30)
            })
            .chain([("ada.125000@example.org".to_string(), 125_000 / 30)])
            .collect();
        let sample = EmailSample::of(emails);
        assert_eq!(sample.pages_holding("25000"), 1);
        assert_eq!(sample.index_part("linus.25000"), Some("25000"));
    }

    #[test]
    fn a_common_name_is_left_out_and_the_rare_number_looked_up() {
        let sample = seeded_sample();
        assert_eq!(sample.index_part("linus.3133"), Some("3133"));
        assert_eq!(sample.index_part("Linus.3133"), Some("3133"));
    }

    #[test]
    fn the_whole_term_is_kept_when_no_part_is_cheaper() {
        let sample = seeded_sample();
        // Two common words no email holds together: each alone would find hundreds.
        assert_eq!(sample.index_part("linus.frances"), None);
        // A single word has no smaller part here.
        assert_eq!(sample.index_part("3133"), None);
        // Parts shorter than a trigram cannot be looked up.
        assert_eq!(sample.index_part("ab.cd"), None);
        assert_eq!(scattered(Vec::new()).index_part("linus.3133"), None);
    }

    #[test]
    fn the_rarer_of_two_uncommon_words_wins() {
        let mut emails: Vec<String> = (0..3_000).map(|n| format!("user{n}@mail.test")).collect();
        emails.extend((0..999).map(|n| format!("zebra{n}@zoo.test")));
        emails.push("quokka@zoo.test".to_string());
        let sample = scattered(emails);
        assert_eq!(sample.index_part("zebra.quokka"), Some("quokka"));
        assert_eq!(sample.index_part("quokka.zebra"), Some("quokka"));
        // Every row holds both: the part with fewer posting lists to read is enough.
        assert_eq!(sample.index_part("zoo.test"), Some("zoo"));
    }

    #[test]
    fn a_word_of_letters_and_digits_is_narrowed_to_its_digits() {
        let sample = seeded_sample();
        let mut emails: Vec<String> = sample.lines.lines().map(str::to_string).collect();
        emails.extend((1..=400).map(|n| format!("linus{n}@example.org")));
        let sample = scattered(emails);
        assert_eq!(sample.index_part("linus3133"), Some("3133"));
    }

    /// A table of 20,000 `linus{n}` emails and a few holding `25000`: whatever the case and
    /// the shape of the term, the rare number is looked up.
    #[test]
    fn a_rare_number_is_looked_up_in_any_case_and_shape() {
        let mut emails: Vec<String> = (1..=4_000)
            .map(|n| format!("linus{}@example.org", n * 5))
            .collect();
        emails.extend(
            [
                "linus.25000@y.test",
                "xlinus.250001@w.test",
                "linus.25000@caps.test",
                "ada.25000@x.test",
                "linus_25000@z.test",
                "linus25000@d.test",
            ]
            .map(String::from),
        );
        let sample = scattered(emails);
        assert_eq!(sample.index_part("linus.25000"), Some("25000"));
        assert_eq!(sample.index_part("LINUS_25000"), Some("25000"));
        assert_eq!(sample.index_part("linus25000"), Some("25000"), "digits in a word");
        assert_eq!(sample.index_part("linus"), None, "nothing shorter to look up");
    }

    #[test]
    fn parts_are_words_and_their_letter_and_digit_runs() {
        assert_eq!(parts("linus.25000").collect::<Vec<_>>(), ["25000", "linus"]);
        assert_eq!(parts("ab12cd345").collect::<Vec<_>>(), ["345"]);
        assert_eq!(
            parts("john1987@x").collect::<Vec<_>>(),
            ["1987", "john", "john1987"]
        );
        assert_eq!(parts("linus").count(), 0, "the term itself is no part");
        assert_eq!(parts("a.b").count(), 0);
    }

    #[test]
    fn words_and_trigrams_follow_the_index() {
        assert_eq!(
            words("a_b.c-dé9f").collect::<Vec<_>>(),
            ["a", "b", "c", "d", "9f"]
        );
        assert_eq!(trigrams("Ab.cdef").collect::<Vec<_>>(), [*b"cde", *b"def"]);
    }
}
