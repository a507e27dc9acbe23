//! Short texts for error details: a server's answer cut to one bounded line,
//! so a long or multi-line body cannot flood a log line or an alert.

/// The first `max` characters of `text`, with `…` when cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `text` on one line — each run of whitespace or control characters one
/// space, none at either end — cut to `max` characters with `…`.
pub fn one_line_excerpt(text: &str, max: usize) -> String {
    let line = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    truncate_chars(&line, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("héllo", 10), "héllo");
        assert_eq!(truncate_chars("héllo", 5), "héllo");
        assert_eq!(truncate_chars("héllo", 2), "hé…");
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(one_line_excerpt("  a\n\tb\u{0}c  ", 10), "a b c");
        assert_eq!(one_line_excerpt("héllo wörld", 5), "héllo…");
        assert_eq!(one_line_excerpt("short", 5), "short");
        assert_eq!(one_line_excerpt("\r\n", 5), "");
    }
}
