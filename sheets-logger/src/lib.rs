//! A `tracing` layer that sends chosen log events as rows to Google Sheets
//! (`spreadsheets.values.append`), batched, in order, off the caller's path.
//!
//! Events at or above `min_level` (default WARN), and breaker transitions at
//! any level (events with a `from_state` field), become rows with the columns
//! in [`COLUMNS`]; `service`, `contact_id`, `trace_id` and the other columns
//! are taken from the event or, failing that, from its enclosing spans (the
//! innermost wins). The layer only formats the row and `try_send`s it to a
//! bounded buffer; a background task sends one request per `flush_interval`,
//! or sooner when `batch_size` rows are waiting, backs off on `429` / `5xx`
//! without reordering rows, and flushes at shutdown within a deadline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use callguard_sheets_logger::{SheetsConfig, SheetsLayer};
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! let config: SheetsConfig = toml::from_str(r#"
//!     spreadsheet_id = "1AbC"
//!     credentials_file = "/etc/callguard/sa.json"
//! "#)?;
//! let (layer, handle) = SheetsLayer::new(&config)?;
//! tracing_subscriber::registry().with(layer).init();
//! tracing::warn!(service = "crm", "CRM slow");
//! // … at exit:
//! let stats = handle.flush_and_shutdown(Duration::from_secs(5)).await;
//! println!("{} rows sent, {} dropped", stats.rows_sent, stats.rows_dropped);
//! # Ok(()) }
//! ```

mod auth;
mod client;
pub mod config;
mod http;
mod layer;
mod row;
mod worker;

pub use auth::{CredentialsError, JWT_BEARER_GRANT, SHEETS_SCOPE, ServiceAccountKey};
pub use config::{Credential, MinLevel, SheetsConfig};
pub use layer::{SetupError, SheetsHandle, SheetsLayer, SheetsStats};
pub use row::COLUMNS;
