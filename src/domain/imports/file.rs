//! The uploaded file: its encoding, its delimiter, its header, and the mapping of its
//! columns to customer fields guessed from the header.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A customer field a column can carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "name", rename_all = "snake_case")]
pub enum Field {
    Key,
    /// The integrator's id (`id` in the API).
    Id,
    Email,
    Name,
    Surname,
    DateOfBirth,
    /// The referrer's key or email, of a customer of the program or of a row of the file.
    Referrer,
    Approved,
    CreatedAt,
    /// A custom field of this name.
    Custom(String),
    /// The column is not imported.
    Ignore,
}

impl Field {
    /// The fixed fields, in the order a mapping form lists them.
    pub const FIXED: [Field; 9] = [
        Field::Key,
        Field::Id,
        Field::Email,
        Field::Name,
        Field::Surname,
        Field::DateOfBirth,
        Field::Referrer,
        Field::Approved,
        Field::CreatedAt,
    ];

    /// The form value naming this field (`custom:plan` for a custom field).
    pub fn code(&self) -> String {
        match self {
            Field::Key => "key".into(),
            Field::Id => "id".into(),
            Field::Email => "email".into(),
            Field::Name => "name".into(),
            Field::Surname => "surname".into(),
            Field::DateOfBirth => "date_of_birth".into(),
            Field::Referrer => "referrer".into(),
            Field::Approved => "approved".into(),
            Field::CreatedAt => "created_at".into(),
            Field::Custom(name) => format!("custom:{name}"),
            Field::Ignore => "ignore".into(),
        }
    }

    /// The inverse of [`Field::code`]; `None` for an unknown code.
    pub fn from_code(code: &str) -> Option<Field> {
        if let Some(name) = code.strip_prefix("custom:") {
            return Some(Field::Custom(name.to_string()));
        }
        Some(match code {
            "key" => Field::Key,
            "id" => Field::Id,
            "email" => Field::Email,
            "name" => Field::Name,
            "surname" => Field::Surname,
            "date_of_birth" => Field::DateOfBirth,
            "referrer" => Field::Referrer,
            "approved" => Field::Approved,
            "created_at" => Field::CreatedAt,
            "ignore" => Field::Ignore,
            _ => return None,
        })
    }

    /// How people call it.
    pub fn label(&self) -> String {
        match self {
            Field::Key => "Key".into(),
            Field::Id => "Id".into(),
            Field::Email => "Email".into(),
            Field::Name => "Name".into(),
            Field::Surname => "Surname".into(),
            Field::DateOfBirth => "Date of birth".into(),
            Field::Referrer => "Referrer (key or email)".into(),
            Field::Approved => "Approved".into(),
            Field::CreatedAt => "Created at".into(),
            Field::Custom(name) => format!("Custom field \"{name}\""),
            Field::Ignore => "Not imported".into(),
        }
    }

    /// The field a header names: its words, case and punctuation aside. A header that
    /// names none becomes a custom field of that name.
    pub fn guess(header: &str) -> Field {
        let words: String = header
            .trim()
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        match words.as_str() {
            "" => Field::Ignore,
            "key" | "customerkey" | "referralkey" | "code" | "referralcode" => Field::Key,
            "id" | "customerid" | "externalid" | "userid" | "accountid" => Field::Id,
            "email" | "emailaddress" | "mail" | "customeremail" => Field::Email,
            "name" | "firstname" | "givenname" | "first" => Field::Name,
            "surname" | "lastname" | "familyname" | "last" => Field::Surname,
            "dateofbirth" | "birthdate" | "dob" | "birthday" | "metadatadateofbirth" => Field::DateOfBirth,
            "referrer"
            | "referrerkey"
            | "referreremail"
            | "referredby"
            | "referringcustomer"
            | "referringcustomerkey"
            | "referringcustomeremail" => Field::Referrer,
            "approved" | "isapproved" => Field::Approved,
            "createdat" | "created" | "signedup" | "signupdate" | "joined" | "joinedat" => Field::CreatedAt,
            _ => Field::Custom(header.trim().to_string()),
        }
    }
}

/// How each column of the file is imported, in the file's column order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping(pub Vec<Field>);

impl Mapping {
    /// The column carrying `field`, if any.
    pub fn column_of(&self, field: &Field) -> Option<usize> {
        self.0.iter().position(|mapped| mapped == field)
    }

    pub fn maps(&self, field: &Field) -> bool {
        self.column_of(field).is_some()
    }

    /// Every custom field with its column.
    pub fn custom_fields(&self) -> impl Iterator<Item = (usize, &str)> {
        self.0.iter().enumerate().filter_map(|(at, field)| match field {
            Field::Custom(name) => Some((at, name.as_str())),
            _ => None,
        })
    }
}

/// Most columns a file may have (the custom fields' limit plus every fixed field, and
/// room for columns left out).
pub const MAX_COLUMNS: usize = 100;

/// A CSV file whose text is UTF-8 and whose header was read.
#[derive(Clone, Debug)]
pub struct CsvFile {
    /// The file without its byte-order mark.
    text: Vec<u8>,
    pub delimiter: u8,
    pub headers: Vec<String>,
}

impl CsvFile {
    /// Reads a file: UTF-8 with or without a byte-order mark, fields separated by commas or
    /// semicolons (whichever the header line has more of, outside quotes), a header line
    /// first. Anything else is refused as a whole, with a message saying why.
    pub fn parse(bytes: Vec<u8>) -> Result<CsvFile, Error> {
        let mut text = bytes;
        if text.starts_with(&[0xEF, 0xBB, 0xBF]) {
            text.drain(..3);
        }
        if text.starts_with(&[0xFF, 0xFE]) || text.starts_with(&[0xFE, 0xFF]) {
            return Err(file_error(
                "The file is UTF-16; save it as CSV UTF-8 (comma or semicolon separated) and upload it again.",
            ));
        }
        if let Err(error) = std::str::from_utf8(&text) {
            let line = 1 + memchr::memchr_iter(b'\n', &text[..error.valid_up_to()]).count();
            return Err(file_error(format!(
                "The file is not UTF-8 text (line {line} has a byte that is not UTF-8; \
                 Excel's \"CSV\" is often Windows-1252). Save it as CSV UTF-8 and upload it again."
            )));
        }
        if text.iter().all(|byte| byte.is_ascii_whitespace()) {
            return Err(file_error("The file is empty."));
        }
        let delimiter = sniff_delimiter(&text);
        let headers: Vec<String> = reader(&text, delimiter)
            .headers()
            .map_err(|error| file_error(format!("The header line could not be read: {error}.")))?
            .iter()
            .map(|header| header.trim().to_string())
            .collect();
        if headers.len() > MAX_COLUMNS {
            return Err(file_error(format!(
                "The file has {} columns; at most {MAX_COLUMNS} can be imported.",
                headers.len()
            )));
        }
        Ok(CsvFile {
            text,
            delimiter,
            headers,
        })
    }

    /// The mapping the header suggests: each header names a field or a custom field; a
    /// field named twice is imported from its first column only.
    pub fn guess_mapping(&self) -> Mapping {
        let mut fields: Vec<Field> = Vec::with_capacity(self.headers.len());
        for header in &self.headers {
            let field = Field::guess(header);
            fields.push(if fields.contains(&field) {
                Field::Ignore
            } else {
                field
            });
        }
        Mapping(fields)
    }

    /// A reader over the records after the header.
    pub fn records(&self) -> csv::Reader<&[u8]> {
        reader(&self.text, self.delimiter)
    }

    /// About how many rows follow the header (line breaks inside quoted cells count too).
    pub fn estimated_rows(&self) -> u64 {
        let lines = memchr::memchr_iter(b'\n', &self.text).count() as u64;
        let unterminated = u64::from(!self.text.ends_with(b"\n"));
        (lines + unterminated).saturating_sub(1)
    }

    /// The file's size in bytes (without the byte-order mark).
    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The file's bytes (without the byte-order mark), to keep it between two steps.
    pub fn bytes(&self) -> &[u8] {
        &self.text
    }
}

/// A refusal of the whole file, under the field `file`.
pub fn file_error(message: impl Into<String>) -> Error {
    Error::invalid("file", message)
}

fn reader(text: &[u8], delimiter: u8) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(text)
}

/// `;` when the first line has more semicolons than commas outside quotes, else `,`.
fn sniff_delimiter(text: &[u8]) -> u8 {
    let (mut commas, mut semicolons, mut quoted) = (0usize, 0usize, false);
    for &byte in text {
        match byte {
            b'"' => quoted = !quoted,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semicolons += 1,
            b'\n' if !quoted => break,
            _ => {}
        }
    }
    if semicolons > commas {
        b';'
    } else {
        b','
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_and_semicolons_are_understood() {
        let file =
            CsvFile::parse(b"\xEF\xBB\xBFE-mail;First name;Plan\na@example.com;Ada;pro\n".to_vec()).unwrap();
        assert_eq!(file.delimiter, b';');
        assert_eq!(file.headers, vec!["E-mail", "First name", "Plan"]);
        assert_eq!(
            file.guess_mapping(),
            Mapping(vec![Field::Email, Field::Name, Field::Custom("Plan".into())])
        );
        assert_eq!(file.estimated_rows(), 1);
    }

    #[test]
    fn other_encodings_are_refused_with_the_line() {
        let latin1 = b"email,name\na@example.com,Ren\xe9e\n".to_vec();
        let error = CsvFile::parse(latin1).unwrap_err();
        let message = error.field_errors().unwrap()["file"][0].clone();
        assert!(
            message.contains("not UTF-8") && message.contains("line 2"),
            "{message}"
        );
        assert!(CsvFile::parse(b"\xFF\xFEe\0m\0".to_vec()).is_err());
        assert!(CsvFile::parse(b"  \n".to_vec()).is_err());
    }

    #[test]
    fn a_field_named_twice_is_taken_from_its_first_column() {
        let file = CsvFile::parse(b"email,Email,referred by\n".to_vec()).unwrap();
        assert_eq!(
            file.guess_mapping(),
            Mapping(vec![Field::Email, Field::Ignore, Field::Referrer])
        );
    }

    #[test]
    fn codes_round_trip() {
        for field in Field::FIXED
            .into_iter()
            .chain([Field::Ignore, Field::Custom("plan: pro".into())])
        {
            assert_eq!(Field::from_code(&field.code()), Some(field));
        }
        assert_eq!(Field::from_code("nope"), None);
    }
}
