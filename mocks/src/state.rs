//! State shared by every request of one mock server: config, faults, counts,
//! CRM records, the fault proxies it controls, and the signals that wake held
//! requests.
//!
//! [`Shared`] gathers every store, so the stores' modules must not know it:
//! their handlers and middleware take only the part they need, as axum
//! substates (`State<CrmStore>`, …: cheap handles on the store) reached
//! through the [`FromRef`] impls below. This module depends on them, never
//! the other way round.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::FromRef;
use callguard_core::ValidationError;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::crm::CrmStore;
use crate::fault::{FaultBook, Pick};
use crate::limits::Limits;
use crate::proxy::ProxyShared;
use crate::sinks::sheets::SheetsStore;
use crate::sinks::telegram::TelegramStore;
use crate::sinks::token::TokenIssuer;
use crate::sinks::webhook::WebhookStore;
use crate::stats::StatsBook;
use crate::{Fault, FaultId, ListedFault, MockConfig, MockLlm, Service};

/// Everything a request handler may read or change.
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    faults: Mutex<FaultBook>,
    /// Bumped on every change of the fault book, so held requests re-check.
    faults_changed: watch::Sender<u64>,
    /// Set once the server stops, so held requests let go.
    closing: watch::Sender<bool>,
    pub(crate) stats: Arc<StatsBook>,
    pub(crate) crm: CrmStore,
    pub(crate) limits: Arc<Limits>,
    completions: AtomicU64,
    /// The LLM's behaviour now: the config's, until the control API changes it.
    llm: Mutex<MockLlm>,
    pub(crate) sheets: SheetsStore,
    pub(crate) tokens: TokenIssuer,
    pub(crate) telegram: TelegramStore,
    pub(crate) webhook: WebhookStore,
    /// Fault proxies driven through `/_control/proxies/NAME`.
    pub(crate) proxies: Mutex<BTreeMap<String, Arc<ProxyShared>>>,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Self {
            faults: Mutex::new(FaultBook::new(config.seed)),
            tokens: TokenIssuer::new(config.seed),
            crm: CrmStore::new(config.keys.clone()),
            limits: Arc::new(Limits::new(config.limits)),
            llm: Mutex::new(config.llm),
            config,
            faults_changed: watch::Sender::new(0),
            closing: watch::Sender::new(false),
            stats: Arc::default(),
            completions: AtomicU64::new(0),
            sheets: SheetsStore::default(),
            telegram: TelegramStore::default(),
            webhook: WebhookStore::default(),
            proxies: Mutex::new(BTreeMap::new()),
        }
    }

    /// Validates all faults, then injects them together (all or none). Errors
    /// of a list name the entry: `faults[1].rate`.
    pub(crate) fn inject(&self, faults: Vec<Fault>) -> Result<Vec<FaultId>, ValidationError> {
        let listed = faults.len() > 1;
        for (i, fault) in faults.iter().enumerate() {
            fault.validate().map_err(|e| {
                if listed {
                    e.in_section(&format!("faults[{i}]"))
                } else {
                    e
                }
            })?;
        }
        for fault in &faults {
            tracing::debug!(service = %fault.service, mode = fault.mode.name(), "fault injected");
        }
        let ids = self.faults.lock().insert(faults, Instant::now());
        self.faults_changed.send_modify(|n| *n += 1);
        Ok(ids)
    }

    /// Removes all faults, or those of one service; returns how many.
    pub(crate) fn clear(&self, service: Option<Service>) -> usize {
        let cleared = self.faults.lock().clear(service);
        self.faults_changed.send_modify(|n| *n += 1);
        cleared
    }

    pub(crate) fn faults(&self) -> Vec<ListedFault> {
        self.faults.lock().list(Instant::now())
    }

    pub(crate) fn wants_contact(&self, service: Service) -> bool {
        self.faults.lock().wants_contact(service, Instant::now())
    }

    pub(crate) fn pick(&self, service: Service, contact: Option<&str>) -> Option<Pick> {
        self.faults.lock().pick(service, contact, Instant::now())
    }

    pub(crate) fn end_of(&self, id: FaultId) -> Option<Option<Instant>> {
        self.faults.lock().end_of(id, Instant::now())
    }

    pub(crate) fn faults_changed(&self) -> watch::Receiver<u64> {
        self.faults_changed.subscribe()
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// How the LLM behaves now.
    pub(crate) fn llm(&self) -> MockLlm {
        *self.llm.lock()
    }

    /// Changes how the LLM behaves, from the next request on.
    pub(crate) fn set_llm(&self, llm: MockLlm) {
        *self.llm.lock() = llm;
    }

    /// A fresh number for a chat completion's id.
    pub(crate) fn next_completion(&self) -> u64 {
        self.completions.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Implements `FromRef<Arc<Shared>>` for each substate handlers take:
/// `State<CrmStore>` is a clone of the handle in [`Shared`].
macro_rules! substates {
    ($($field:ident: $substate:ty),* $(,)?) => {$(
        impl FromRef<Arc<Shared>> for $substate {
            fn from_ref(shared: &Arc<Shared>) -> Self {
                shared.$field.clone()
            }
        }
    )*};
}

substates! {
    crm: CrmStore,
    sheets: SheetsStore,
    tokens: TokenIssuer,
    telegram: TelegramStore,
    webhook: WebhookStore,
}
