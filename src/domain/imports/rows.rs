//! Each row of the file checked on its own and against the other rows: the same parsing
//! as a customer typed in the dashboard or sent to the API (`customers::NewCustomer`),
//! formula-looking cells, duplicates inside the file, referrers named by a row of the file,
//! self-referrals and cycles. What needs the database is checked in `staging`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use super::file::{file_error, CsvFile, Field, Mapping};
use super::Refusals;
use crate::domain::customers::{self, CustomerInput, NewCustomer, ReferrerRef};
use crate::error::Error;

/// A row that passed every check this module makes, as the staging table holds it.
#[derive(Clone, Debug, Default)]
pub struct StagedRow {
    pub line: i32,
    pub external_id: Option<String>,
    pub id_generated: bool,
    pub key: Option<String>,
    pub key_generated: bool,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub custom_fields: Option<Value>,
    pub custom_cleared: Vec<String>,
    pub approved: Option<bool>,
    pub created_at: Option<DateTime<Utc>>,
    /// The row of this file that refers this one.
    pub referrer_line: Option<i32>,
    /// A referrer not in the file: a key or email looked up among the program's customers.
    pub referrer_text: Option<String>,
}

/// The rows of a file after the checks that need no database.
pub struct CheckedRows {
    pub rows: Vec<StagedRow>,
    /// Every row read (refused ones included).
    pub total: u64,
    /// Which line's referrer is which line, for rows referred by another row.
    pub referrer_lines: HashMap<i32, i32>,
}

/// Characters a spreadsheet reads as the start of a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// The message for a formula-looking cell.
pub fn formula_message(cell: &str) -> String {
    let first = cell.chars().next().unwrap_or('=');
    let shown = match first {
        '\t' => "a tab".to_string(),
        '\r' => "a carriage return".to_string(),
        other => format!("\"{other}\""),
    };
    format!("Starts with {shown}, as a spreadsheet formula does; remove that character if the value is meant as text.")
}

/// Parses and checks every row (see the module documentation). `advance` is called with
/// the number of rows read so far, now and then; `across` once every row is read, before
/// the checks across rows (referrers, cycles).
pub fn check(
    file: &CsvFile,
    mapping: &Mapping,
    refusals: &mut Refusals,
    mut advance: impl FnMut(u64),
    across: impl FnOnce(),
) -> Result<CheckedRows, Error> {
    let columns = Columns::new(file, mapping)?;
    let mut rows: Vec<Parsed> = Vec::new();
    let mut keys: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut emails: HashMap<String, usize> = HashMap::new();
    let mut reader = file.records();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() as i32;
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                return Err(file_error(format!(
                    "Line {line} could not be read as CSV ({error}); nothing was imported."
                )))
            }
        }
        let line = record.position().map_or(line, |position| position.line() as i32);
        let index = rows.len();
        let mut parsed = columns.parse(line, &record, refusals);
        // The first row with a key, id or email keeps it; a later one is refused.
        let mut duplicate =
            |map: &mut HashMap<String, usize>, value: Option<String>, column: Option<usize>, what: &str| {
                if let (Some(value), Some(column)) = (value, column) {
                    match map.get(&value) {
                        Some(&first) => refusals.add(
                            line,
                            columns.header(column),
                            format!(
                                "The {what} \"{}\" is also on line {}.",
                                record.get(column).unwrap_or("").trim(),
                                rows[first].line
                            ),
                        ),
                        None => {
                            map.insert(value, index);
                        }
                    }
                }
            };
        duplicate(&mut keys, parsed.raw_key.clone(), columns.key, "key");
        duplicate(&mut ids, parsed.raw_id.clone(), columns.id, "id");
        duplicate(&mut emails, parsed.raw_email.clone(), columns.email, "email");
        parsed.line = line;
        rows.push(parsed);
        if rows.len().is_multiple_of(10_000) {
            advance(rows.len() as u64);
        }
    }
    advance(rows.len() as u64);
    across();
    let total = rows.len() as u64;
    let parents = resolve_referrers(&mut rows, &keys, &emails, &columns, refusals);
    refuse_cycles(&rows, &parents, &columns, refusals);
    generate_keys_and_ids(&mut rows, &keys, &ids);
    let referrer_lines = parents
        .iter()
        .enumerate()
        .filter_map(|(at, parent)| parent.map(|parent| (rows[at].line, rows[parent].line)))
        .collect();
    let rows = rows
        .into_iter()
        .filter(|row| !refusals.contains(row.line))
        .filter_map(|row| row.staged)
        .collect();
    Ok(CheckedRows {
        rows,
        total,
        referrer_lines,
    })
}

/// A row as read, before the checks across rows.
struct Parsed {
    line: i32,
    /// `None` when a cell of the row was refused.
    staged: Option<StagedRow>,
    /// The cells other rows may name it by (as compared: emails in lower case).
    raw_key: Option<String>,
    raw_id: Option<String>,
    raw_email: Option<String>,
    referrer: Option<String>,
}

/// Where each field is in the file.
struct Columns<'a> {
    headers: &'a [String],
    mapping: &'a Mapping,
    key: Option<usize>,
    id: Option<usize>,
    email: Option<usize>,
    referrer: Option<usize>,
}

/// A refusal of the whole file with several messages, all under the field `file`.
pub(super) fn file_errors(messages: Vec<String>) -> Error {
    let mut fields = crate::error::FieldErrors::new();
    fields.insert("file".to_string(), messages);
    Error::invalid_fields(fields)
}

/// Every problem with the columns chosen for a file, all at once (none: the mapping can
/// be imported).
pub(super) fn mapping_problems(file: &CsvFile, mapping: &Mapping) -> Vec<String> {
    let mut problems = Vec::new();
    if mapping.0.len() != file.headers.len() {
        problems.push("Choose a field (or \"not imported\") for every column.".to_string());
        return problems;
    }
    let mapped: Vec<&Field> = mapping
        .0
        .iter()
        .filter(|field| **field != Field::Ignore)
        .collect();
    if mapped.is_empty() {
        problems.push("Choose at least one column to import.".to_string());
    }
    for (at, field) in mapped.iter().enumerate() {
        if mapped[..at].contains(field) && !mapped[at + 1..].contains(field) {
            problems.push(format!("{} is chosen for two columns.", field.label()));
        }
    }
    let custom: Vec<(usize, &str)> = mapping.custom_fields().collect();
    if custom.len() > customers::MAX_CUSTOM_FIELDS {
        problems.push(format!(
            "At most {} custom fields can be imported.",
            customers::MAX_CUSTOM_FIELDS
        ));
    }
    for (_, name) in custom {
        // A name the edit form would refuse is refused for the whole file.
        if let Err(message) = customers::parse_custom_fields(&[(name.to_string(), "x".to_string())]) {
            problems.push(format!("Custom field \"{name}\": {message}"));
        }
    }
    problems
}

impl<'a> Columns<'a> {
    fn new(file: &'a CsvFile, mapping: &'a Mapping) -> Result<Columns<'a>, Error> {
        let problems = mapping_problems(file, mapping);
        if !problems.is_empty() {
            return Err(file_errors(problems));
        }
        Ok(Columns {
            headers: &file.headers,
            mapping,
            key: mapping.column_of(&Field::Key),
            id: mapping.column_of(&Field::Id),
            email: mapping.column_of(&Field::Email),
            referrer: mapping.column_of(&Field::Referrer),
        })
    }

    /// A column's name in messages: its header, or its number when it has none.
    fn header(&self, column: usize) -> String {
        match self.headers.get(column).map(|header| header.trim()) {
            Some(header) if !header.is_empty() => header.to_string(),
            _ => format!("column {}", column + 1),
        }
    }

    /// The column of the field a customer parsing message names.
    fn column_of_message(&self, field: &str) -> Option<usize> {
        let field = match field {
            "id" => Field::Id,
            "key" => Field::Key,
            "email" => Field::Email,
            "name" => Field::Name,
            "surname" => Field::Surname,
            "metadata.date_of_birth" => Field::DateOfBirth,
            _ => Field::Referrer,
        };
        self.mapping.column_of(&field)
    }

    fn parse(&self, line: i32, record: &csv::StringRecord, refusals: &mut Refusals) -> Parsed {
        let before = refusals.count_of(line);
        let cells = self.cells(line, record, refusals);
        let parsed = self.parse_customer(line, &cells, refusals);
        let (custom, cleared) = self.custom_fields(line, &cells, refusals);
        let approved = self.optional_cell(Field::Approved, line, &cells, refusals, parse_approved);
        let created_at = self.optional_cell(Field::CreatedAt, line, &cells, refusals, |value| {
            parse_created_at(value, Utc::now())
        });
        let referrer = self
            .referrer
            .and_then(|column| cells[column])
            .filter(|value| !value.is_empty());
        let referrer = referrer.map(|value| match ReferrerRef::from_box(value) {
            Some(ReferrerRef::KeyOrEmail(value)) => value,
            _ => value.to_string(),
        });
        let staged = parsed
            .filter(|_| refusals.count_of(line) == before)
            .map(|parsed| StagedRow {
                line,
                key_generated: parsed.key.is_none(),
                id_generated: parsed.external_id.is_none(),
                external_id: parsed.external_id,
                key: parsed.key,
                email: parsed.email,
                name: parsed.name,
                surname: parsed.surname,
                date_of_birth: parsed.date_of_birth,
                custom_fields: (!custom.is_empty()).then_some(Value::Object(custom)),
                custom_cleared: cleared,
                approved,
                created_at,
                referrer_line: None,
                referrer_text: None,
            });
        let given = |column: Option<usize>| {
            column
                .and_then(|column| cells[column])
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        Parsed {
            line,
            staged,
            raw_key: given(self.key),
            raw_id: given(self.id),
            raw_email: given(self.email).map(|email| email.to_lowercase()),
            referrer,
        }
    }

    /// The row's cells by column (`None` for a column not imported), trimmed; a
    /// formula-looking one is refused and not parsed further.
    fn cells<'r>(
        &self,
        line: i32,
        record: &'r csv::StringRecord,
        refusals: &mut Refusals,
    ) -> Vec<Option<&'r str>> {
        let mut cells: Vec<Option<&str>> = vec![None; self.mapping.0.len()];
        for (column, field) in self.mapping.0.iter().enumerate() {
            if *field == Field::Ignore {
                continue;
            }
            let raw = record.get(column).unwrap_or("");
            if raw.starts_with(FORMULA_STARTS) || raw.trim_start().starts_with(FORMULA_STARTS) {
                refusals.add(
                    line,
                    self.header(column),
                    formula_message(raw.trim_start_matches(' ')),
                );
                continue;
            }
            cells[column] = Some(raw.trim());
        }
        cells
    }

    /// The customer's own fields, parsed as the dashboard and the API parse them; each
    /// message is refused under its field's column.
    fn parse_customer(
        &self,
        line: i32,
        cells: &[Option<&str>],
        refusals: &mut Refusals,
    ) -> Option<NewCustomer> {
        let cell = |field: &Field| {
            self.mapping
                .column_of(field)
                .and_then(|column| cells[column])
                .map(str::to_string)
        };
        let input = CustomerInput {
            id: cell(&Field::Id),
            key: cell(&Field::Key),
            email: cell(&Field::Email),
            name: cell(&Field::Name),
            surname: cell(&Field::Surname),
            date_of_birth: cell(&Field::DateOfBirth),
            custom_fields: None,
            referrer_id: None,
            referrer_key: None,
            referrer: None,
        };
        match NewCustomer::parse(input) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                for (field, messages) in error.field_errors().cloned().unwrap_or_default() {
                    let column = self.column_of_message(&field).unwrap_or(0);
                    for message in messages {
                        refusals.add(line, self.header(column), message);
                    }
                }
                None
            }
        }
    }

    /// The custom fields given, and the names of those given blank (to clear).
    fn custom_fields(
        &self,
        line: i32,
        cells: &[Option<&str>],
        refusals: &mut Refusals,
    ) -> (Map<String, Value>, Vec<String>) {
        let mut custom = Map::new();
        let mut cleared = Vec::new();
        for (column, name) in self.mapping.custom_fields() {
            match cells[column] {
                Some("") => cleared.push(name.to_string()),
                Some(value) => match customers::parse_custom_fields(&[(name.to_string(), value.to_string())])
                {
                    Ok(fields) => custom.extend(fields),
                    Err(message) => refusals.add(line, self.header(column), message),
                },
                None => {}
            }
        }
        (custom, cleared)
    }

    /// The value of an optional field's cell, when its column is imported; a cell that
    /// does not parse is refused.
    fn optional_cell<T>(
        &self,
        field: Field,
        line: i32,
        cells: &[Option<&str>],
        refusals: &mut Refusals,
        parse: impl FnOnce(&str) -> Result<Option<T>, String>,
    ) -> Option<T> {
        let column = self.mapping.column_of(&field)?;
        let value = cells[column]?;
        match parse(value) {
            Ok(value) => value,
            Err(message) => {
                refusals.add(line, self.header(column), message);
                None
            }
        }
    }
}

/// `true`/`false`, `yes`/`no`, `1`/`0`, `y`/`n`, case aside; blank is "not given".
fn parse_approved(value: &str) -> Result<Option<bool>, String> {
    match value.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "true" | "yes" | "y" | "1" | "approved" => Ok(Some(true)),
        "false" | "no" | "n" | "0" | "pending" => Ok(Some(false)),
        _ => Err("Write true or false (yes/no, 1/0).".to_string()),
    }
}

/// An ISO 8601 time (`2024-05-01T12:00:00Z`, with an offset, or without one as UTC), or a
/// date (`2024-05-01`, midnight UTC); not in the future, not before 1990.
pub fn parse_created_at(value: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let message = "Write a past date and time as 2024-05-01T12:00:00Z (or a date, 2024-05-01).";
    let at = DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f").map(|at| at.and_utc()))
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f").map(|at| at.and_utc()))
        .or_else(|_| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .map(|date| date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| message.to_string())?;
    let earliest = NaiveDate::from_ymd_opt(1990, 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    if at > now || at < earliest {
        return Err(message.to_string());
    }
    Ok(Some(at))
}

/// Each row's referrer among the rows (by key, else by email); other referrers are left
/// to the database. Returns each row's referrer row.
fn resolve_referrers(
    rows: &mut [Parsed],
    keys: &HashMap<String, usize>,
    emails: &HashMap<String, usize>,
    columns: &Columns<'_>,
    refusals: &mut Refusals,
) -> Vec<Option<usize>> {
    let mut parents = vec![None; rows.len()];
    for at in 0..rows.len() {
        let Some(named) = rows[at].referrer.clone() else {
            continue;
        };
        let found = keys
            .get(&named)
            .or_else(|| emails.get(&named.to_lowercase()))
            .copied();
        let line = rows[at].line;
        match found {
            Some(found) if found == at => refusals.add(
                line,
                columns.header(columns.referrer.unwrap_or(0)),
                "A customer cannot refer themselves.".to_string(),
            ),
            Some(found) => {
                parents[at] = Some(found);
                let referrer_line = rows[found].line;
                if let Some(staged) = rows[at].staged.as_mut() {
                    staged.referrer_line = Some(referrer_line);
                }
            }
            None => {
                if let Some(staged) = rows[at].staged.as_mut() {
                    staged.referrer_text = Some(named);
                }
            }
        }
    }
    parents
}

/// Refuses every row in a referral cycle among the rows (A refers B, B refers A).
fn refuse_cycles(rows: &[Parsed], parents: &[Option<usize>], columns: &Columns<'_>, refusals: &mut Refusals) {
    // 0: not seen, 1: on the path being walked, 2: done.
    let mut state = vec![0u8; rows.len()];
    let mut path: Vec<usize> = Vec::new();
    for start in 0..rows.len() {
        let mut at = Some(start);
        path.clear();
        while let Some(node) = at {
            match state[node] {
                2 => break,
                1 => {
                    let from = path.iter().position(|&n| n == node).unwrap_or(0);
                    let cycle = &path[from..];
                    let mut lines: Vec<String> = cycle.iter().map(|&n| rows[n].line.to_string()).collect();
                    lines.push(rows[node].line.to_string());
                    let shown = if lines.len() > 12 {
                        format!("{} → … ({} rows)", lines[..10].join(" → "), cycle.len())
                    } else {
                        lines.join(" → ")
                    };
                    for &n in cycle {
                        refusals.add(
                            rows[n].line,
                            columns.header(columns.referrer.unwrap_or(0)),
                            format!("These rows refer each other in a circle: lines {shown}."),
                        );
                    }
                    break;
                }
                _ => {
                    state[node] = 1;
                    path.push(node);
                    at = parents[node];
                }
            }
        }
        for &node in &path {
            state[node] = 2;
        }
    }
}

/// A key and an id for every row without one, unlike any other row's (the database is
/// asked in `staging`).
fn generate_keys_and_ids(rows: &mut [Parsed], keys: &HashMap<String, usize>, ids: &HashMap<String, usize>) {
    let mut drawn: HashSet<String> = HashSet::new();
    for row in rows.iter_mut() {
        let Some(staged) = row.staged.as_mut() else {
            continue;
        };
        if staged.key.is_none() {
            staged.key = Some(draw(&mut drawn, keys, customers::random_key));
        }
        if staged.external_id.is_none() {
            staged.external_id = Some(draw(&mut drawn, ids, || {
                customers::random_code(customers::GENERATED_LENGTH)
            }));
        }
    }
}

fn draw(drawn: &mut HashSet<String>, given: &HashMap<String, usize>, make: impl Fn() -> String) -> String {
    loop {
        let candidate = make();
        if !given.contains_key(&candidate) && drawn.insert(candidate.clone()) {
            return candidate;
        }
    }
}

/// Refuses every row whose referrer row is refused, and theirs in turn.
pub fn refuse_referred_by_refused(referrer_lines: &HashMap<i32, i32>, column: &str, refusals: &mut Refusals) {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&child, &parent) in referrer_lines {
        children.entry(parent).or_default().push(child);
    }
    let mut queue: Vec<i32> = refusals.lines().collect();
    let mut refused: HashSet<i32> = queue.iter().copied().collect();
    let mut added: BTreeMap<i32, i32> = BTreeMap::new();
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
            if refused.insert(child) {
                added.insert(child, parent);
                queue.push(child);
            }
        }
    }
    for (child, parent) in added {
        refusals.add(
            child,
            column.to_string(),
            format!("The referrer on line {parent} is refused, so this row is too."),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(text: &str) -> (Vec<StagedRow>, Refusals) {
        let file = CsvFile::parse(text.as_bytes().to_vec()).unwrap();
        let mapping = file.guess_mapping();
        let mut refusals = Refusals::default();
        let checked = check(&file, &mapping, &mut refusals, |_| {}, || {}).unwrap();
        (checked.rows, refusals)
    }

    #[test]
    fn referrers_later_in_the_file_cycles_and_self_referrals() {
        let (rows, refusals) = check_text(
            "key,email,referrer\n\
             a,a@example.com,b@example.com\n\
             b,b@example.com,\n\
             c,c@example.com,d\n\
             d,d@example.com,c\n\
             e,e@example.com,e\n\
             f,f@example.com,outside\n",
        );
        assert_eq!(rows.iter().map(|row| row.line).collect::<Vec<_>>(), vec![2, 3, 7]);
        assert_eq!(rows[0].referrer_line, Some(3));
        assert_eq!(rows[2].referrer_text.as_deref(), Some("outside"));
        assert_eq!(
            refusals.messages(4),
            vec![(
                "referrer".to_string(),
                "These rows refer each other in a circle: lines 4 → 5 → 4.".to_string()
            )]
        );
        assert_eq!(
            refusals.messages(5)[0].1,
            "These rows refer each other in a circle: lines 4 → 5 → 4."
        );
        assert_eq!(refusals.messages(6)[0].1, "A customer cannot refer themselves.");
    }

    #[test]
    fn duplicates_formulas_and_long_cells() {
        let long = "x".repeat(10_000);
        let (rows, refusals) = check_text(&format!(
            "key,email,name,plan\n\
             a,A@example.com,Ada,\n\
             b,a@example.com,=HYPERLINK(1),pro\n\
             a,c@example.com,{long},\n\
             d,d@example.com,Dora,{long}\n"
        ));
        assert_eq!(rows.len(), 1);
        let line3 = refusals.messages(3);
        assert!(line3.contains(&(
            "email".into(),
            "The email \"a@example.com\" is also on line 2.".into()
        )));
        assert!(line3.contains(&("name".into(), formula_message("=HYPERLINK(1)"))));
        let line4 = refusals.messages(4);
        assert!(line4.contains(&("key".into(), "The key \"a\" is also on line 2.".into())));
        assert!(line4
            .iter()
            .any(|(column, message)| column == "name" && message.contains("at most 200")));
        assert!(refusals.messages(5)[0].1.contains("at most 1000"));
    }

    #[test]
    fn created_at_takes_times_and_dates_in_the_past() {
        let now = Utc::now();
        assert!(parse_created_at("2024-05-01T12:00:00Z", now).unwrap().is_some());
        assert!(parse_created_at("2024-05-01T12:00:00+02:00", now)
            .unwrap()
            .is_some());
        assert!(parse_created_at("2024-05-01 12:00:00", now).unwrap().is_some());
        assert!(parse_created_at("2024-05-01", now).unwrap().is_some());
        assert!(parse_created_at("2999-01-01", now).is_err());
        assert!(parse_created_at("yesterday", now).is_err());
        assert_eq!(parse_approved("Yes"), Ok(Some(true)));
        assert!(parse_approved("maybe").is_err());
    }
}
