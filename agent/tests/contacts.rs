//! Reading and writing contacts files: CSV and JSON Lines, bad lines reported
//! by line number while the good ones are kept.

use std::path::PathBuf;

use callguard_agent::contacts::{
    Contact, ContactsError, ContactsFormat, RejectedLine, parse_contacts, read_contacts,
    write_contacts,
};

/// A file under the system temp dir, unique to this test process and `name`,
/// removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn with(name: &str, contents: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("callguard-contacts-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn ids(contacts: &[Contact]) -> Vec<&str> {
    contacts.iter().map(|c| c.id.as_str()).collect()
}

fn rejected(line: u64, reason: &str) -> RejectedLine {
    RejectedLine {
        line,
        reason: reason.to_owned(),
    }
}

#[test]
fn the_example_campaign_reads_cleanly() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/contacts.csv");
    let file = read_contacts(path).unwrap();
    assert!(file.rejected.is_empty(), "{:?}", file.rejected);
    assert_eq!(file.contacts.len(), 12);
    let linus = &file.contacts[4];
    assert_eq!(linus.name, "Linus Torvalds");
    assert_eq!(linus.phone, "+1-555-0104");
    assert_eq!(linus.extra["company"], "Kernel, Git & Co.");
    assert_eq!(linus.extra["timezone"], "America/Los_Angeles");
}

#[test]
fn csv_quoted_fields_keep_commas_quotes_and_line_breaks() {
    let csv = "id,Name,phone,note\n\
               a,\"Smith, Jane\",+1-555-0001,\"said \"\"call me\"\", then\nhung up\"\n\
               b,Bob,+1-555-0002,\n";
    let file = parse_contacts(csv.as_bytes(), ContactsFormat::Csv).unwrap();
    assert!(file.rejected.is_empty(), "{:?}", file.rejected);
    assert_eq!(ids(&file.contacts), ["a", "b"]);
    assert_eq!(file.contacts[0].name, "Smith, Jane");
    assert_eq!(
        file.contacts[0].extra["note"],
        "said \"call me\", then\nhung up"
    );
    assert!(
        file.contacts[1].extra.is_empty(),
        "empty columns are left out"
    );
}

#[test]
fn csv_bad_lines_are_reported_by_line_and_skipped() {
    let csv = "id,name,phone\n\
               c1,Ann,+1-555-0001\n\
               c2,Ben\n\
               ,Cat,+1-555-0003\n\
               c4,\"Dan\nDoe\",+1-555-0004\n\
               c1,Eve,+1-555-0005\n\
               c6,Fay,\n\
               c7,Gus,+1-555-0007,extra\n\
               c8,Hal,+1-555-0008\n";
    let file = parse_contacts(csv.as_bytes(), ContactsFormat::Csv).unwrap();
    assert_eq!(ids(&file.contacts), ["c1", "c4", "c8"]);
    assert_eq!(file.contacts[1].name, "Dan\nDoe");
    assert_eq!(
        file.rejected,
        [
            rejected(3, "expected 3 fields, found 2"),
            rejected(4, "empty id"),
            rejected(7, "duplicate id \"c1\" (first on line 2)"),
            rejected(8, "contact \"c6\" has an empty phone"),
            rejected(9, "expected 3 fields, found 4"),
        ]
    );
    assert_eq!(
        file.rejected[0].to_string(),
        "line 3: expected 3 fields, found 2"
    );
}

#[test]
fn json_lines_good_and_bad() {
    let jsonl = r#"{"id":"j1","name":"Ann","phone":"+1-555-0001","company":"Acme","vip":true,"seats":12,"note":null}

{"id":"j2","name":"Ben","phone":"+1-555-0002"
{"name":"Cat","phone":"+1-555-0003"}
["j4","Dan","+1-555-0004"]
{"id":"","name":"Eve","phone":"+1-555-0005"}
{"id":"j1","name":"Fay","phone":"+1-555-0006"}
{"id":7,"name":"Gus","phone":"+1-555-0007","tags":["a"]}
{"id":8,"name":"Hal","phone":"+1-555-0008"}
"#;
    let file = parse_contacts(jsonl.as_bytes(), ContactsFormat::JsonLines).unwrap();
    assert_eq!(ids(&file.contacts), ["j1", "8"]);
    let ann = &file.contacts[0];
    assert_eq!(
        ann.extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        [("company", "Acme"), ("seats", "12"), ("vip", "true")]
    );
    let lines: Vec<u64> = file.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8], "{:?}", file.rejected);
    let reasons: Vec<&str> = file.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert!(reasons[0].starts_with("bad JSON: "), "{}", reasons[0]);
    assert_eq!(reasons[1], "missing id");
    assert_eq!(reasons[2], "not a JSON object");
    assert_eq!(reasons[3], "empty id");
    assert_eq!(reasons[4], "duplicate id \"j1\" (first on line 1)");
    assert_eq!(
        reasons[5],
        "field \"tags\" must be a string, number or boolean"
    );
}

#[test]
fn format_follows_the_extension_or_the_content() {
    let jsonl = "{\"id\":\"x\",\"name\":\"X\",\"phone\":\"1\"}\n";
    let csv = "id,name,phone\ny,Y,2\n";
    for (name, contents, id) in [
        ("a.NDJSON", jsonl, "x"),
        ("b.jsonl", jsonl, "x"),
        ("c.txt", jsonl, "x"),
        ("d.csv", csv, "y"),
        ("e", csv, "y"),
    ] {
        let file = TempFile::with(name, contents);
        let read = read_contacts(&file.0).unwrap();
        assert_eq!(ids(&read.contacts), [id], "{name}");
    }
    // A JSON Lines file named .csv is read as CSV and its header refused.
    let misnamed = TempFile::with("f.csv", jsonl);
    assert!(matches!(
        read_contacts(&misnamed.0),
        Err(ContactsError::Header { .. })
    ));
}

#[test]
fn unusable_files_are_errors() {
    let cases = [
        (
            "no-phone.csv",
            "id,name\na,A\n",
            "missing column(s) phone (found id,name)",
        ),
        ("empty.csv", "", "the file is empty"),
        (
            "twice.csv",
            "id,name,phone,id\n",
            "column \"id\" appears twice",
        ),
    ];
    for (name, contents, expected) in cases {
        let file = TempFile::with(name, contents);
        let err = read_contacts(&file.0).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, ContactsError::Header { .. }), "{shown}");
        assert!(shown.contains(expected) && shown.contains(name), "{shown}");
    }
    let missing = std::env::temp_dir().join("callguard-contacts-does-not-exist.csv");
    assert!(matches!(
        read_contacts(missing),
        Err(ContactsError::Io { .. })
    ));
}

#[test]
fn written_contacts_read_back_identically() {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/contacts.csv");
    let contacts = read_contacts(source).unwrap().contacts;
    let out = TempFile::with("pending.jsonl", "old contents");
    write_contacts(&out.0, &contacts[3..7]).unwrap();
    let text = std::fs::read_to_string(&out.0).unwrap();
    assert_eq!(text.lines().count(), 4);
    let back = read_contacts(&out.0).unwrap();
    assert!(back.rejected.is_empty(), "{:?}", back.rejected);
    assert_eq!(back.contacts, contacts[3..7]);
}
