//! The search box: which indexes can find a term (one arm per place it can be in), the
//! term as matched, and the narrowing of a partial email search (see `EmailSamples`).

use diesel::PgConnection;

use super::filters::NAME_EXPRESSION;
use super::{CustomerFilter, EmailSamples};
use crate::domain::customers::fragments;

/// Names whose characters are all ASCII letters, spaces, `'` and `-` are "plain"; the
/// partial index `customers_unusual_name_idx` lists the others. Must agree with it (and with
/// the SQL function `customer_name_is_unusual` it calls, written as the index's predicate is).
const UNUSUAL_NAME: &str = "customer_name_is_unusual(customers.name, customers.surname) IS TRUE";
fn is_plain_name_char(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, ' ' | '\'' | '-')
}

/// Ids of ASCII letters, digits, `_` and `-` are "plain"; `customers_unusual_id_idx`
/// lists the others. Must agree with it (as [`UNUSUAL_NAME`]).
const UNUSUAL_ID: &str = "customer_id_is_unusual(customers.external_id) IS TRUE";
fn is_plain_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

/// `term` with `%`, `_` and `\` taken literally.
fn escape_like(term: &str) -> String {
    let pattern = contains_pattern(term);
    pattern[1..pattern.len() - 1].to_string()
}

/// How the search can find `term`, one arm per place it can be in. Reading a trigram
/// index costs more than a whole page's other work, so every arm that cannot match is left
/// out and cheaper indexes are used where the term's shape allows — always with the same
/// results as matching every field:
/// - keys only hold letters, digits, `-` and `_` (a CHECK constraint);
/// - emails hold no spaces and exactly one `@` (every email is validated before it is
///   stored), so a term with an `@` inside is found by the email's local part (reversed,
///   a prefix in a btree) and domain, and a term with two `@` in no email at all;
/// - a term with a character that plain names (or ids) never hold can only be in the few
///   rows a partial index lists (the planner still takes the trigram index when those
///   are many).
pub(super) fn search_arms(term: &str, email_index_part: Option<&str>) -> Vec<fragments::SearchArm> {
    use fragments::SearchArm::{Contains, ContainsPart, ContainsWhere, EmailAround};
    let mut arms = Vec::with_capacity(4);
    if !term.chars().any(char::is_whitespace) {
        match term.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.contains('@') => {
                let reversed: String = local.chars().rev().collect();
                arms.push(EmailAround {
                    local_reversed_pattern: format!("{}%", escape_like(&reversed)),
                    local_reversed_upper: format!("{reversed}\u{10FFFF}"),
                    local_reversed: reversed,
                    domain: format!("{}%", escape_like(domain)),
                })
            }
            Some((_, domain)) if domain.contains('@') => {}
            _ => match email_index_part {
                Some(part) if term.contains(part) => arms.push(ContainsPart {
                    expression: "lower(customers.email)",
                    part_pattern: contains_pattern(part),
                    term: term.to_string(),
                }),
                _ => arms.push(Contains("lower(customers.email)")),
            },
        }
    }
    if term.len() <= 64
        && term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        arms.push(Contains("lower(customers.key)"));
    }
    if term.chars().all(is_plain_id_char) {
        arms.push(Contains("lower(customers.external_id)"));
    } else {
        arms.push(ContainsWhere(UNUSUAL_ID, "lower(customers.external_id)"));
    }
    if term.chars().all(is_plain_name_char) {
        arms.push(Contains(NAME_EXPRESSION));
    } else {
        arms.push(ContainsWhere(UNUSUAL_NAME, NAME_EXPRESSION));
    }
    arms
}

/// The longest search term used; longer input is cut (nobody types more to find someone).
const MAX_SEARCH_CHARS: usize = 200;

/// A `LIKE` pattern matching `term` anywhere, with `%`, `_` and `\` taken literally.
pub(super) fn contains_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The search term as matched: trimmed, without control characters (which PostgreSQL
/// text cannot hold anyway), at most `MAX_SEARCH_CHARS` long. The database lower-cases it
/// with the same `lower()` as the indexed columns, so both sides always agree.
pub(super) fn normalize_search(raw: &str) -> Option<String> {
    let term: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_SEARCH_CHARS)
        .collect::<String>()
        .trim()
        .to_string();
    (!term.is_empty()).then_some(term)
}

/// Sets the filter's [`CustomerFilter::email_index_part`] for its search term, from the
/// server's sample of emails (terms with an `@` are found without the trigram index). A
/// sample that cannot be taken only costs speed: the whole term is looked up. Run it
/// outside a transaction (a failed sample would abort one).
pub(super) fn narrow_email_search(
    conn: &mut PgConnection,
    samples: &EmailSamples,
    filter: &mut CustomerFilter,
) {
    filter.email_index_part = match filter.search.as_deref().and_then(normalize_search) {
        Some(term) if !term.contains('@') => samples.index_part(conn, &term).unwrap_or_else(|error| {
            tracing::warn!("searching by the whole term: no sample of emails ({error})");
            None
        }),
        _ => None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_in_search_terms_are_literal() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(contains_pattern("@acme"), "%@acme%");
    }
    #[test]
    fn search_arms_follow_the_shape_of_the_term() {
        use fragments::SearchArm::{Contains, ContainsWhere, EmailAround};
        assert_eq!(
            search_arms("ada", None),
            vec![
                Contains("lower(customers.email)"),
                Contains("lower(customers.key)"),
                Contains("lower(customers.external_id)"),
                Contains(NAME_EXPRESSION),
            ]
        );
        // A whole address: the email by its parts; ids and names only if unusual.
        assert_eq!(
            search_arms("Ada_1@acme.io", None),
            vec![
                EmailAround {
                    local_reversed: "1_adA".into(),
                    local_reversed_upper: "1_adA\u{10FFFF}".into(),
                    local_reversed_pattern: "1\\_adA%".into(),
                    domain: "acme.io%".into()
                },
                ContainsWhere(UNUSUAL_ID, "lower(customers.external_id)"),
                ContainsWhere(UNUSUAL_NAME, NAME_EXPRESSION),
            ]
        );
        // "@acme": any local part, so the trigram index; two @: no email at all.
        assert_eq!(search_arms("@acme", None)[0], Contains("lower(customers.email)"));
        assert!(!search_arms("a@b@c", None)
            .iter()
            .any(|arm| matches!(arm, EmailAround { .. })));
        assert_eq!(search_arms("a@b@c", None).len(), 2);
        // Spaces: never in an email, key or plain id.
        assert_eq!(
            search_arms("ada love", None),
            vec![
                ContainsWhere(UNUSUAL_ID, "lower(customers.external_id)"),
                Contains(NAME_EXPRESSION)
            ]
        );
        assert_eq!(
            search_arms("Zoë", None)[2],
            ContainsWhere(UNUSUAL_NAME, NAME_EXPRESSION)
        );
    }
    #[test]
    fn an_email_index_part_looks_up_the_part_and_checks_the_whole_term() {
        use fragments::SearchArm::{ContainsPart, ContainsWhere};
        assert_eq!(
            search_arms("Linus_x.25000", Some("25000")),
            vec![
                ContainsPart {
                    expression: "lower(customers.email)",
                    part_pattern: "%25000%".into(),
                    term: "Linus_x.25000".into(),
                },
                ContainsWhere(UNUSUAL_ID, "lower(customers.external_id)"),
                ContainsWhere(UNUSUAL_NAME, NAME_EXPRESSION),
            ]
        );
        // A part that is not in the term (a filter reused for another term) is ignored.
        assert_eq!(
            search_arms("ada.7", Some("25000"))[0],
            fragments::SearchArm::Contains("lower(customers.email)")
        );
        // Terms with an `@` do not use the trigram index at all.
        assert!(matches!(
            search_arms("linus.25000@acme.io", Some("25000"))[0],
            fragments::SearchArm::EmailAround { .. }
        ));
    }
    #[test]
    fn search_terms_are_trimmed_lowercased_and_cleaned() {
        assert_eq!(normalize_search("  ADA\u{0} "), Some("ADA".to_string()));
        assert_eq!(normalize_search("   "), None);
        assert_eq!(normalize_search(&"x".repeat(500)).map(|t| t.len()), Some(200));
    }
}
