//! What outlives a call: the caller's memory ([`CallerMemory`], read before the backend
//! connects, a fact written each time the agent calls `remember`), and the post-call
//! analysis ([`analyze_call`]) whose summary and outcome go to the record, the `call.analyzed`
//! webhook event and the memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent::analysis::{self, AnalysisError};
use crate::agent::backend::HistoryItem;
use crate::records::memory::MemoryStore;
use crate::records::{CallAnalysis, RecordOp, RecordWriter, UnixMs};

use super::agent::{AiAgent, CallParties};

/// How often an analysis that failed for a transient reason (a connection error, a
/// timeout, 429, a 5xx) is tried again, and after how long.
pub const ANALYSIS_RETRIES: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// The caller memory of the records database, shared by every call and the API.
#[derive(Debug, Clone)]
pub struct CallerMemory {
    store: Arc<Mutex<MemoryStore>>,
}

impl CallerMemory {
    /// Shares `store`.
    pub fn new(store: MemoryStore) -> CallerMemory {
        CallerMemory {
            store: Arc::new(Mutex::new(store)),
        }
    }

    /// Runs `f` on the store on the blocking pool; an error is the store's message.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut MemoryStore) -> Result<T, crate::records::RecordsError> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held left nothing half-written (each change is one
            // transaction): the store is usable.
            let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// What `{{memory}}` renders to for `caller` on `agent`'s calls: empty when there is
    /// nothing (or the database cannot be read: logged, the call goes on without it).
    pub async fn recall(&self, agent: &str, caller: &str) -> String {
        let (a, c) = (agent.to_owned(), caller.to_owned());
        match self.with(move |s| s.get(&a, &c)).await {
            Ok(m) => m.map(|m| m.render()).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(agent, error = %e, "caller memory not readable: the call starts without it");
                String::new()
            }
        }
    }

    /// Stores a fact the agent noted.
    pub async fn note(&self, parties: &CallParties, fact: String) -> Result<(), String> {
        let (a, c, id) = (
            parties.agent.clone(),
            parties.caller.clone(),
            parties.record_id.clone(),
        );
        self.with(move |s| s.add_fact(&a, &c, &fact, &id, UnixMs::now()))
            .await
    }

    async fn set_summary(&self, parties: &CallParties, summary: String) -> Result<(), String> {
        let (a, c, id) = (
            parties.agent.clone(),
            parties.caller.clone(),
            parties.record_id.clone(),
        );
        self.with(move |s| s.set_summary(&a, &c, &summary, &id, UnixMs::now()))
            .await
    }
}

/// After a call: runs the agent's analysis (if it has one) on the conversation, retrying
/// transient failures ([`ANALYSIS_RETRIES`]), then stores the result in the record (with the
/// `call.analyzed` event) and, with memory, the summary in the caller's memory. A failed
/// analysis is stored too, with its error.
pub async fn analyze_call(
    agent: Arc<AiAgent>,
    parties: CallParties,
    conversation: Vec<HistoryItem>,
    memory: Option<CallerMemory>,
    records: Option<RecordWriter>,
    redactor: Arc<crate::records::redact::Redactor>,
) {
    let Some(cfg) = &agent.analysis else {
        return;
    };
    let client = match super::agent::http_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(record = %parties.record_id, error = %e, "post-call analysis: no HTTP client");
            return;
        }
    };
    let mut result = analysis::analyze(client, cfg, &conversation).await;
    for wait in ANALYSIS_RETRIES {
        match &result {
            Err(e) if e.is_transient() => {
                tracing::warn!(record = %parties.record_id, error = %e, retry_in_s = wait.as_secs(), "post-call analysis failed: retrying");
                tokio::time::sleep(wait).await;
                result = analysis::analyze(client, cfg, &conversation).await;
            }
            _ => break,
        }
    }
    let stored = match result {
        Ok(a) => {
            tracing::info!(record = %parties.record_id, "post-call analysis done");
            if agent.memory
                && let Some(m) = &memory
                && !a.summary.is_empty()
                && let Err(e) = m.set_summary(&parties, a.summary.clone()).await
            {
                tracing::error!(record = %parties.record_id, error = %e, "the call's summary is not in the caller's memory");
            }
            let mut outcome = a.outcome;
            if let Some(o) = outcome.as_mut() {
                redactor.json(o);
            }
            CallAnalysis {
                summary: Some(redactor.text(&a.summary).into_owned()),
                outcome,
                error: None,
                model: cfg.chat.model.clone(),
                at: UnixMs::now(),
            }
        }
        Err(AnalysisError::Empty) => return,
        Err(e) => {
            tracing::warn!(record = %parties.record_id, error = %e, "post-call analysis failed");
            CallAnalysis {
                summary: None,
                outcome: None,
                error: Some(e.to_string()),
                model: cfg.chat.model.clone(),
                at: UnixMs::now(),
            }
        }
    };
    if let Some(w) = records
        && let Err(e) = w.send(RecordOp::Analyzed {
            id: parties.record_id.clone(),
            analysis: Box::new(stored),
        })
    {
        tracing::error!(record = %parties.record_id, error = %e, "post-call analysis not stored");
    }
}
