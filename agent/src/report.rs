//! The end-of-run summary as a table for people.

use std::fmt::Write;

use crate::campaign::Summary;

/// The summary as aligned text: contact outcomes, retries, breaker
/// transitions per service, limits, alerts and failures.
pub fn summary_table(summary: &Summary) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<22} {value}");
    };
    line("contacts", summary.contacts.to_string());
    line("completed", summary.completed.to_string());
    line("failed", summary.failed.to_string());
    line("expired", summary.expired.to_string());
    line("pending", summary.pending.to_string());
    line(
        "lost / duplicated",
        format!("{} / {}", summary.lost, summary.duplicated),
    );
    line(
        "taken over",
        format!(
            "{} (leases expired mid-call, contacts taken by others)",
            summary.taken_over
        ),
    );
    if let Some(records) = summary.crm_records {
        line("CRM records matched", records.to_string());
    }
    line(
        "attempts / retries",
        format!("{} / {}", summary.attempts, summary.retries),
    );
    line("rejected by breakers", summary.rejections.to_string());
    line("deferrals", summary.deferrals.to_string());
    line(
        "alerts raised",
        format!(
            "{} ({} suppressed by the cooldown)",
            summary.alerts.raised, summary.alerts.suppressed
        ),
    );
    for channel in &summary.alerts.channels {
        line(
            &format!("  to {}", channel.channel.as_str()),
            format!(
                "{} delivered, {} failed, {} dropped",
                channel.delivered, channel.failed, channel.dropped
            ),
        );
    }
    if let Some(sheets) = &summary.sheets {
        line(
            "log rows to Sheets",
            format!("{} sent, {} dropped", sheets.rows_sent, sheets.rows_dropped),
        );
    }
    line("duration", format!("{:.1}s", summary.duration_secs));
    let mut text = String::from("\nSummary\n");
    text.push_str(&out);
    if !summary.breaker_transitions.is_empty() {
        text.push_str("\nBreaker transitions\n");
        for (service, transitions) in &summary.breaker_transitions {
            for t in transitions {
                let _ = writeln!(
                    text,
                    "  {service:<12} {:>7.2}s  {:<11} -> {:<11} {}",
                    t.at,
                    t.from.as_str(),
                    t.to.as_str(),
                    t.reason
                );
            }
        }
    }
    if !summary.limits.is_empty() {
        text.push_str("\nLimits (at the end)\n");
        for (service, record) in &summary.limits {
            let limit = record
                .limit
                .map_or_else(|| "none".to_owned(), |limit| limit.to_string());
            let provider = record
                .provider_limit
                .map_or_else(|| "-".to_owned(), |limit| limit.to_string());
            let _ = writeln!(
                text,
                "  {service:<12} mode {:<8} limit {limit:<5} provider's {provider:<5} 429s {}",
                record.mode, record.refused
            );
        }
    }
    if !summary.failures.is_empty() {
        text.push_str("\nFailed contacts\n");
        for f in &summary.failures {
            let _ = writeln!(
                text,
                "  {:<10} {:<12} {}",
                f.contact_id, f.service, f.reason
            );
        }
    }
    text
}
