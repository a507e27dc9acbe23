//! Contacts files: reading a campaign from CSV (`id,name,phone,…` with a
//! header row) or JSON Lines, keeping every good line and reporting each bad
//! one with its line number, and writing contacts back as JSON Lines (the
//! contacts still pending at shutdown).
//!
//! The format follows the extension (`.csv`; `.jsonl`, `.ndjson`) or, for any
//! other name, the first non-blank character: `{` means JSON Lines.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use callguard_clients::Contact;

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLine {
    /// 1-based line number in the file (for CSV, where the record starts).
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for RejectedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What a contacts file held: the usable contacts, in file order, and the
/// lines that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactsFile {
    /// The contacts to call.
    pub contacts: Vec<Contact>,
    /// The lines skipped, in file order.
    pub rejected: Vec<RejectedLine>,
}

/// The two formats a contacts file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContactsFormat {
    /// Comma-separated values with a header row naming `id`, `name`, `phone`.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl ContactsFormat {
    /// The format named by `path`'s extension, if it names one.
    pub fn from_extension(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::JsonLines),
            _ => None,
        }
    }

    /// JSON Lines if the first non-blank character is `{`, CSV otherwise.
    pub fn sniff(data: &[u8]) -> Self {
        match data.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Self::JsonLines,
            _ => Self::Csv,
        }
    }
}

/// A contacts file that cannot be used at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContactsError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The CSV header row is missing or lacks a required column.
    #[error("{}: unusable header: {reason}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads the contacts in `path` (see the module docs for the format).
pub fn read_contacts(path: impl AsRef<Path>) -> Result<ContactsFile, ContactsError> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|source| ContactsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let format =
        ContactsFormat::from_extension(path).unwrap_or_else(|| ContactsFormat::sniff(&data));
    parse_contacts(&data, format).map_err(|reason| ContactsError::Header {
        path: path.to_owned(),
        reason,
    })
}

/// Parses contacts held in memory. The error is why the CSV header cannot be
/// used; JSON Lines has none.
pub fn parse_contacts(data: &[u8], format: ContactsFormat) -> Result<ContactsFile, String> {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut collector = Collector::default();
    match format {
        ContactsFormat::Csv => parse_csv(data, &mut collector)?,
        ContactsFormat::JsonLines => parse_json_lines(data, &mut collector),
    }
    Ok(collector.file)
}

/// Writes `contacts` to `path` as JSON Lines (readable by [`read_contacts`]),
/// through a temporary file renamed into place, so a crash leaves either the
/// old file or the new one.
pub fn write_contacts(path: impl AsRef<Path>, contacts: &[Contact]) -> Result<(), ContactsError> {
    let path = path.as_ref();
    let io_error = |source| ContactsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
        for contact in contacts {
            serde_json::to_writer(&mut out, contact)?;
            out.write_all(b"\n")?;
        }
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(io_error)
}

/// Gathers good contacts and rejected lines, refusing repeated ids.
#[derive(Default)]
struct Collector {
    file: ContactsFile,
    /// Each id seen, with the line it was first seen on.
    seen: HashMap<String, u64>,
}

impl Collector {
    fn accept(&mut self, line: u64, contact: Result<Contact, String>) {
        let checked = contact.and_then(|contact| {
            if contact.id.is_empty() {
                return Err("empty id".to_owned());
            }
            if contact.phone.is_empty() {
                return Err(format!("contact {:?} has an empty phone", contact.id));
            }
            if let Some(first) = self.seen.get(&contact.id) {
                return Err(format!(
                    "duplicate id {:?} (first on line {first})",
                    contact.id
                ));
            }
            Ok(contact)
        });
        match checked {
            Ok(contact) => {
                self.seen.insert(contact.id.clone(), line);
                self.file.contacts.push(contact);
            }
            Err(reason) => self.file.rejected.push(RejectedLine { line, reason }),
        }
    }
}

/// The columns every CSV file needs.
const REQUIRED_COLUMNS: [&str; 3] = ["id", "name", "phone"];

fn parse_csv(data: &[u8], collector: &mut Collector) -> Result<(), String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(data);
    let mut record = csv::StringRecord::new();
    let header = match reader.read_record(&mut record) {
        Ok(true) => record.clone(),
        Ok(false) => {
            return Err("the file is empty (expected a header row id,name,phone,…)".into());
        }
        Err(e) => return Err(format!("cannot read the header row: {e}")),
    };
    let columns: Vec<String> = header.iter().map(str::to_ascii_lowercase).collect();
    for (index, column) in columns.iter().enumerate() {
        if column.is_empty() {
            return Err(format!("column {} has no name", index + 1));
        }
        if columns[..index].contains(column) {
            return Err(format!("column {column:?} appears twice"));
        }
    }
    let position = |name: &str| columns.iter().position(|c| c == name);
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .into_iter()
        .filter(|c| position(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing column(s) {} (found {})",
            missing.join(", "),
            header.iter().collect::<Vec<_>>().join(",")
        ));
    }
    let [id, name, phone] = REQUIRED_COLUMNS.map(|c| position(c).unwrap_or_default());
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map_or(line, csv::Position::line);
                let contact = if record.len() == columns.len() {
                    let mut extra = BTreeMap::new();
                    for (index, value) in record.iter().enumerate() {
                        if ![id, name, phone].contains(&index) && !value.is_empty() {
                            extra.insert(header[index].to_owned(), value.to_owned());
                        }
                    }
                    Ok(Contact {
                        id: record[id].to_owned(),
                        name: record[name].to_owned(),
                        phone: record[phone].to_owned(),
                        extra,
                    })
                } else {
                    Err(format!(
                        "expected {} fields, found {}",
                        columns.len(),
                        record.len()
                    ))
                };
                collector.accept(line, contact);
            }
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                return Err(format!("cannot read the file: {e}"));
            }
            Err(e) => {
                let line = e.position().map_or(line, csv::Position::line);
                collector.file.rejected.push(RejectedLine {
                    line,
                    reason: format!("unreadable record: {e}"),
                });
            }
        }
    }
}

fn parse_json_lines(data: &[u8], collector: &mut Collector) {
    for (index, raw) in data.split(|b| *b == b'\n').enumerate() {
        let line = index as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let contact = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(fields)) => contact_from_json(fields),
            Ok(_) => Err("not a JSON object".to_owned()),
            Err(e) => Err(format!("bad JSON: {e}")),
        };
        collector.accept(line, contact);
    }
}

/// A contact from one JSON object. `id` may be a string or a number; other
/// scalar fields become text, and nested values are refused.
fn contact_from_json(mut fields: Map<String, Value>) -> Result<Contact, String> {
    let mut take = |key: &str| -> Result<String, String> {
        match fields.remove(key) {
            Some(Value::String(text)) => Ok(text.trim().to_owned()),
            Some(Value::Number(n)) if key == "id" => Ok(n.to_string()),
            Some(_) => Err(format!("{key} must be a string")),
            None => Err(format!("missing {key}")),
        }
    };
    let (id, name, phone) = (take("id")?, take("name")?, take("phone")?);
    let mut extra = BTreeMap::new();
    for (key, value) in fields {
        let text = match value {
            Value::Null => continue,
            Value::String(text) => text,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(format!("field {key:?} must be a string, number or boolean"));
            }
        };
        extra.insert(key, text);
    }
    Ok(Contact {
        id,
        name,
        phone,
        extra,
    })
}
