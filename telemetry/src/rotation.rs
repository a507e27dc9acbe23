//! The log file's rotation: before a line would take `callguard.jsonl` past
//! `max_size`, or at the first line of a new UTC day with `daily`, the file
//! becomes `callguard.jsonl.1` (each older one moves up a number, and those
//! past `keep` are deleted) and a new one is started. Each line is written
//! whole, so none is split across two files, and a file is over the limit
//! only when a single line is longer than the limit.
//!
//! `file-rotate` moves and deletes the files; when to rotate is decided here,
//! line by line: its own byte limits either cut a line at the exact byte
//! (`Bytes`) or let the file grow past the limit (`BytesSurpassed`), and it
//! limits by size or by time, not both. `tracing-appender` was the other
//! candidate: it rotates only by time, into dated file names.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

use crate::config::RotationConfig;

/// The log file, rotated by size and/or day.
pub(crate) struct RotatingFile {
    file: FileRotate<AppendCount>,
    max_size: Option<u64>,
    daily: bool,
    /// Bytes in the current file.
    size: u64,
    /// The UTC day (days since the epoch) the current file's last line was written.
    day: u64,
}

impl RotatingFile {
    /// Appends to `path` (its directory must exist), rotating by `rotation`.
    pub(crate) fn open(path: &Path, rotation: &RotationConfig) -> io::Result<Self> {
        // Opened here first so that an unwritable path is an error, not a panic.
        let existing = OpenOptions::new().create(true).append(true).open(path)?;
        let metadata = existing.metadata()?;
        let size = metadata.len();
        let day = utc_day(metadata.modified().unwrap_or_else(|_| SystemTime::now()));
        drop(existing);
        let file = FileRotate::new(
            path,
            AppendCount::new(rotation.keep),
            ContentLimit::None,
            Compression::None,
            None,
        );
        Ok(Self {
            file,
            max_size: rotation.max_size.map(|size| size.0),
            daily: rotation.daily,
            size,
            day,
        })
    }

    /// Writes one whole line, rotating first if it would not fit in the
    /// current file or a new day has begun.
    pub(crate) fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_line_at(line, SystemTime::now())
    }

    fn write_line_at(&mut self, line: &[u8], now: SystemTime) -> io::Result<()> {
        let today = utc_day(now);
        let len = line.len() as u64;
        let full = self
            .max_size
            .is_some_and(|max| self.size.saturating_add(len) > max);
        let new_day = self.daily && today != self.day;
        if (full || new_day) && self.size > 0 {
            self.file.rotate()?;
            self.size = 0;
        }
        self.day = today;
        self.file.write_all(line)?;
        self.file.flush()?;
        self.size += len;
        Ok(())
    }
}

/// Days since the Unix epoch, in UTC (the log's timestamps are UTC too).
fn utc_day(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;
    use callguard_testkit::temp_dir;

    fn files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn past_the_size_limit_keeps_n_whole_files_and_every_line_of_them() {
        let dir = temp_dir(env!("CARGO_CRATE_NAME"), "rotation");
        let path = dir.join("test.jsonl");
        let rotation = RotationConfig {
            max_size: Some(ByteSize(4096)),
            daily: false,
            keep: 3,
        };
        let mut file = RotatingFile::open(&path, &rotation).unwrap();
        // Lines of different lengths, so that file ends fall anywhere.
        let line = |n: usize| format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(n % 97));
        let written = 1_000;
        for n in 0..written {
            file.write_line(line(n).as_bytes()).unwrap();
        }
        drop(file);

        let files = files(&dir);
        assert_eq!(files.len(), 4, "the current file and 3 rotated: {files:?}");
        let mut numbers = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(
                text.len() <= 4096,
                "{} holds {} bytes",
                path.display(),
                text.len()
            );
            assert!(text.ends_with('\n'), "{} ends mid-line", path.display());
            for kept in text.lines() {
                let value: serde_json::Value = serde_json::from_str(kept).unwrap();
                let n = value["n"].as_u64().unwrap() as usize;
                assert_eq!(format!("{kept}\n"), line(n), "line {n} was altered");
                numbers.push(n);
            }
        }
        // The oldest lines went with the deleted files; the rest are all
        // there, once each, with none missing in between.
        numbers.sort_unstable();
        let first = numbers[0];
        assert!(first > 0, "older files were deleted");
        assert_eq!(numbers, (first..written).collect::<Vec<_>>());
        // Newest first: `.1` holds the lines just before the current file's.
        let first_of = |path: &Path| {
            let text = std::fs::read_to_string(path).unwrap();
            let value: serde_json::Value =
                serde_json::from_str(text.lines().next().unwrap()).unwrap();
            value["n"].as_u64().unwrap()
        };
        assert!(first_of(&dir.join("test.jsonl.1")) < first_of(&path));
        assert!(first_of(&dir.join("test.jsonl.3")) < first_of(&dir.join("test.jsonl.2")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn daily_rotation_starts_a_file_at_the_first_line_of_a_new_utc_day() {
        let dir = temp_dir(env!("CARGO_CRATE_NAME"), "rotation-daily");
        let path = dir.join("test.jsonl");
        let rotation = RotationConfig {
            max_size: None,
            daily: true,
            keep: 2,
        };
        let mut file = RotatingFile::open(&path, &rotation).unwrap();
        let day =
            |n: u64, secs: u64| UNIX_EPOCH + std::time::Duration::from_secs(n * 86_400 + secs);
        let today = utc_day(SystemTime::now());
        file.write_line_at(b"a\n", day(today, 0)).unwrap();
        file.write_line_at(b"b\n", day(today, 86_399)).unwrap();
        file.write_line_at(b"c\n", day(today + 1, 0)).unwrap();
        file.write_line_at(b"d\n", day(today + 1, 5)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\nd\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("test.jsonl.1")).unwrap(),
            "a\nb\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_existing_file_counts_toward_the_limit() {
        let dir = temp_dir(env!("CARGO_CRATE_NAME"), "rotation-reopen");
        let path = dir.join("test.jsonl");
        std::fs::write(&path, "a".repeat(4000) + "\n").unwrap();
        let rotation = RotationConfig {
            max_size: Some(ByteSize(4096)),
            daily: false,
            keep: 1,
        };
        let mut file = RotatingFile::open(&path, &rotation).unwrap();
        file.write_line(&[b'b'; 200]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'b'; 200]);
        assert_eq!(std::fs::read(dir.join("test.jsonl.1")).unwrap().len(), 4001);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
