//! `callguard report` for people: the call store's contacts by state and the
//! failed and expired ones. On a terminal, aligned tables with titled
//! columns; anywhere else (a pipe, a file, CI) the plain lines of earlier
//! releases, unchanged, since scripts may read them — `--json` is the
//! format made for scripts.

use std::fmt::Write as _;

use callguard_store::{ContactState, ContactStatus, Counts};

use super::table::aligned;

/// What the report shows: the store's name, its counts, and the contacts of
/// each listed state (failed, expired) with the section's title.
pub(crate) struct StoreReport {
    /// `Call store LOCATION (table NAME)`.
    pub(crate) heading: String,
    pub(crate) counts: Counts,
    pub(crate) listed: Vec<(&'static str, Vec<ContactStatus>)>,
}

impl StoreReport {
    /// Tables for a terminal: `STATE  CONTACTS`, then `ID  SERVICE  REASON`
    /// per listed state that has contacts.
    pub(crate) fn table(&self) -> String {
        let mut rows: Vec<[String; 2]> = ContactState::ALL
            .into_iter()
            .map(|state| {
                [
                    state.as_str().to_owned(),
                    self.counts.get(state).to_string(),
                ]
            })
            .collect();
        rows.push(["total".to_owned(), self.counts.total().to_string()]);
        let mut text = format!(
            "{}\n\n{}",
            self.heading,
            aligned(["STATE", "CONTACTS"], &rows)
        );
        for (title, contacts) in self.listed() {
            let rows: Vec<[String; 3]> = contacts
                .iter()
                .map(|c| {
                    [
                        c.id.clone(),
                        c.service.clone().unwrap_or_else(|| "-".to_owned()),
                        c.last_error.clone().unwrap_or_else(|| "-".to_owned()),
                    ]
                })
                .collect();
            let _ = write!(
                text,
                "\n{title}\n{}",
                aligned(["ID", "SERVICE", "REASON"], &rows)
            );
        }
        text
    }

    /// The plain lines (indented counts, then the listed contacts).
    pub(crate) fn plain(&self) -> String {
        // Writing to a String cannot fail.
        let mut text = format!("{}\n", self.heading);
        for state in ContactState::ALL {
            let _ = writeln!(
                text,
                "  {:<10} {:>8}",
                state.as_str(),
                self.counts.get(state)
            );
        }
        let _ = writeln!(text, "  {:<10} {:>8}", "total", self.counts.total());
        for (title, contacts) in self.listed() {
            let _ = writeln!(text, "\n{title}");
            for contact in contacts {
                let _ = writeln!(
                    text,
                    "  {:<12} {:<12} {}",
                    contact.id,
                    contact.service.as_deref().unwrap_or("-"),
                    contact.last_error.as_deref().unwrap_or("-")
                );
            }
        }
        text
    }

    /// The listed states that have contacts.
    fn listed(&self) -> impl Iterator<Item = &(&'static str, Vec<ContactStatus>)> {
        self.listed
            .iter()
            .filter(|(_, contacts)| !contacts.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StoreReport {
        let failed = ContactStatus {
            id: "c-1000017".into(),
            state: ContactState::Failed,
            attempts: 1,
            deferrals: 0,
            service: Some("llm".into()),
            last_error: Some("permanent error (invalid_request), HTTP 400".into()),
            lease_owner: None,
        };
        let no_service = ContactStatus {
            id: "c-2".into(),
            service: None,
            last_error: None,
            ..failed.clone()
        };
        StoreReport {
            heading: "Call store sqlite:callguard.db (table contacts)".into(),
            counts: Counts {
                pending: 3,
                completed: 12_345,
                failed: 2,
                ..Counts::default()
            },
            listed: vec![
                ("Failed contacts", vec![failed, no_service]),
                ("Expired contacts", vec![]),
            ],
        }
    }

    #[test]
    fn a_terminal_gets_aligned_tables() {
        assert_eq!(
            report().table(),
            "Call store sqlite:callguard.db (table contacts)\n\
             \n\
             STATE      CONTACTS\n\
             pending    3\n\
             in_flight  0\n\
             deferred   0\n\
             completed  12345\n\
             failed     2\n\
             expired    0\n\
             total      12350\n\
             \n\
             Failed contacts\n\
             ID         SERVICE  REASON\n\
             c-1000017  llm      permanent error (invalid_request), HTTP 400\n\
             c-2        -        -\n"
        );
    }

    #[test]
    fn elsewhere_the_plain_lines_stay_as_scripts_know_them() {
        assert_eq!(
            report().plain(),
            "Call store sqlite:callguard.db (table contacts)\n\
             \x20 pending           3\n\
             \x20 in_flight         0\n\
             \x20 deferred          0\n\
             \x20 completed     12345\n\
             \x20 failed            2\n\
             \x20 expired           0\n\
             \x20 total         12350\n\
             \n\
             Failed contacts\n\
             \x20 c-1000017    llm          permanent error (invalid_request), HTTP 400\n\
             \x20 c-2          -            -\n"
        );
    }
}
