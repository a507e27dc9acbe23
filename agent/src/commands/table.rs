//! Aligned text tables for people: a header of upper-case titles, columns
//! set apart by two spaces and as wide as their widest cell, the last column
//! left ragged, no trailing spaces.

use std::fmt::Write as _;

/// `header` and `rows` as lines of aligned columns (widths counted in
/// characters).
pub(crate) fn aligned<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = header.map(str::to_owned);
    let mut table = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                // Writing to a String cannot fail.
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        table.push_str(line.trim_end());
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_titles() {
        let rows = [
            [
                "c-1".to_owned(),
                "elevenlabs".to_owned(),
                "a reason".to_owned(),
            ],
            ["c-10000".to_owned(), "llm".to_owned(), String::new()],
        ];
        let table = aligned(["ID", "SERVICE", "REASON"], &rows);
        assert_eq!(
            table,
            "ID       SERVICE     REASON\n\
             c-1      elevenlabs  a reason\n\
             c-10000  llm\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let rows = [["Zoë".to_owned(), "x".to_owned()]];
        let table = aligned(["NAME", "V"], &rows);
        assert_eq!(table, "NAME  V\nZoë   x\n");
    }
}
