//! The refused rows as a CSV file: each row as it was in the file, with its line number and
//! why it was refused, so it can be fixed and imported again.

use std::borrow::Cow;

use super::file::CsvFile;
use super::Refusals;
use crate::error::Error;

/// The refused rows of `file`, in the file's columns plus `line` and `errors` (each
/// "column: message", separated by " | "). `cell` guards each cell for spreadsheets (the
/// dashboard's download passes the export's formula guard).
pub fn refused_rows_csv(
    file: &CsvFile,
    refusals: &Refusals,
    cell: fn(&str) -> Cow<'_, str>,
) -> Result<Vec<u8>, Error> {
    let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
    let mut header: Vec<String> = file.headers.iter().map(|h| cell(h).into_owned()).collect();
    header.push("line".into());
    header.push("errors".into());
    writer.write_record(&header).map_err(internal)?;
    let mut reader = file.records();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(internal)? {
        let line = record.position().map_or(0, |position| position.line() as i32);
        if !refusals.contains(line) {
            continue;
        }
        let errors = refusals
            .messages(line)
            .into_iter()
            .map(|(column, message)| format!("{column}: {message}"))
            .collect::<Vec<_>>()
            .join(" | ");
        let mut cells: Vec<String> = record.iter().map(|value| cell(value).into_owned()).collect();
        cells.resize(file.headers.len().max(cells.len()), String::new());
        cells.push(line.to_string());
        cells.push(cell(&errors).into_owned());
        writer.write_record(&cells).map_err(internal)?;
    }
    writer.into_inner().map_err(|error| internal(error.into_error()))
}

fn internal(error: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("refused rows: {error}"))
}
