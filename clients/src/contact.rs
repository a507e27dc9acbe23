//! The person a call is for, as the clients see them: the LLM's prompt and
//! the CRM's record are built from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One person to call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Unique within the campaign; non-empty.
    pub id: String,
    /// How to address them.
    pub name: String,
    /// The number to call; non-empty.
    pub phone: String,
    /// Every other column (company, reason, …), by column name.
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}
