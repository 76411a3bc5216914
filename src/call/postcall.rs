//! What outlives a call: the caller's memory ([`CallerMemory`], read before the backend
//! connects, a fact written each time the agent calls `remember`), and the post-call
//! analysis ([`analyze_call`]) whose summary and outcome go to the record, the `call.analyzed`
//! webhook event and the memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::analysis::{self, AnalysisError};
use crate::agent::backend::{HistoryItem, Role};
use crate::records::memory::MemoryStore;
use crate::records::transcript::Role as RecRole;
use crate::records::{
    CallAnalysis, CallRecord, RecordOp, RecordReader, RecordWriter, TranscriptEntry, UnixMs,
};

use super::AgentKind;
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
    store: crate::records::shared::Shared<MemoryStore>,
}

impl CallerMemory {
    /// Shares `store`.
    pub fn new(store: MemoryStore) -> CallerMemory {
        CallerMemory {
            store: crate::records::shared::Shared::new(store),
        }
    }

    /// Runs `f` on the store on the blocking pool; an error is the store's message.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut MemoryStore) -> Result<T, crate::records::RecordsError> + Send + 'static,
    ) -> Result<T, String> {
        self.store.with(f).await
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

/// How far back [`resume_analyses`] looks for analyses a stop interrupted: a day.
pub const RESUME_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The most interrupted analyses [`resume_analyses`] runs at one start.
pub const RESUME_LIMIT: u32 = 10_000;

/// Finds the agent that answered a recorded call, by its name and version (`None` for
/// voxline.toml's agents); `None` when it is gone.
pub type RecordAgentLookup = Arc<
    dyn Fn(String, Option<u32>) -> Pin<Box<dyn Future<Output = Option<super::AgentSpec>> + Send>>
        + Send
        + Sync,
>;

/// The conversation as the analysis reads it, from a call's transcript: the final caller and
/// agent lines in order, a correction (`corrects`) in place of the line of its item.
pub fn conversation_from(entries: &[TranscriptEntry]) -> Vec<HistoryItem> {
    let mut out: Vec<(Option<&str>, HistoryItem)> = Vec::new();
    for e in entries.iter().filter(|e| e.is_final) {
        let role = match e.role {
            RecRole::Caller => Role::Caller,
            RecRole::Agent => Role::Agent,
            RecRole::System => continue,
        };
        let id = e.item_id.as_deref();
        if e.corrects
            && let Some((_, item)) = out.iter_mut().rev().find(|(i, _)| i.is_some() && *i == id)
        {
            item.text.clone_from(&e.text);
            continue;
        }
        out.push((
            id,
            HistoryItem {
                role,
                text: e.text.clone(),
            },
        ));
    }
    out.into_iter().map(|(_, item)| item).collect()
}

/// Who was on a recorded call, as its analysis and the caller's memory see them (the user
/// parts of From and To, as a live call has them).
pub fn parties_from(record: &CallRecord) -> CallParties {
    CallParties {
        record_id: record.id.clone(),
        agent: record.agent.clone(),
        caller: super::manager::party(&record.from),
        called: super::manager::party(&record.to),
        direction: record.direction.as_str(),
        variables: Default::default(),
        memory: String::new(),
    }
}

/// At start: runs, one after another, the post-call analyses that a stop (or a crash)
/// interrupted: answered calls started within [`RESUME_WINDOW`] before `started` (this
/// process's start) with a transcript and no analysis, whose agent (the version that
/// answered) still has `[agent.analysis]`. The conversation is read back from the
/// transcript, which holds the redacted text when `[redaction]` is on. Calls whose agent is
/// gone, or whose transcript cannot be read, are logged and left.
pub async fn resume_analyses(
    reader: RecordReader,
    started: UnixMs,
    lookup: RecordAgentLookup,
    memory: Option<CallerMemory>,
    records: Option<RecordWriter>,
    redactor: Arc<crate::records::redact::Redactor>,
    node: Option<String>,
) {
    let window = i64::try_from(RESUME_WINDOW.as_millis()).unwrap_or(i64::MAX);
    let since = UnixMs::new(started.get().saturating_sub(window));
    let pending = tokio::task::spawn_blocking(move || {
        reader.pending_analyses(since, started, RESUME_LIMIT, node.as_deref())
    })
    .await;
    let pending = match pending {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot look for post-call analyses a stop interrupted");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot look for post-call analyses a stop interrupted");
            return;
        }
    };
    let mut resumed = 0u32;
    for record in pending {
        let Some(spec) = lookup(record.agent.clone(), record.agent_version).await else {
            continue;
        };
        let AgentKind::Ai(agent) = spec.kind else {
            continue;
        };
        if agent.analysis.is_none() {
            continue;
        }
        let Some(path) = record.transcript_path.clone() else {
            continue;
        };
        let read = tokio::task::spawn_blocking(move || crate::records::read_transcript(path)).await;
        let transcript = match read {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::warn!(record = %record.id, error = %e, "post-call analysis a stop interrupted: the transcript cannot be read");
                continue;
            }
            Err(e) => {
                tracing::warn!(record = %record.id, error = %e, "post-call analysis a stop interrupted: the transcript cannot be read");
                continue;
            }
        };
        tracing::info!(record = %record.id, agent = %record.agent, "post-call analysis a stop interrupted: running it now");
        resumed += 1;
        analyze_call(
            agent,
            parties_from(&record),
            conversation_from(&transcript.entries),
            memory.clone(),
            records.clone(),
            redactor.clone(),
        )
        .await;
    }
    if resumed > 0 {
        tracing::info!(resumed, "post-call analyses a stop interrupted have run");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(role: RecRole, text: &str, item: Option<&str>, corrects: bool) -> TranscriptEntry {
        TranscriptEntry {
            t_ms: 0,
            at: UnixMs::new(0),
            role,
            text: text.into(),
            is_final: true,
            item_id: item.map(str::to_owned),
            corrects,
        }
    }

    #[test]
    fn the_conversation_is_read_back_with_corrections_applied() {
        let mut interim = line(RecRole::Caller, "hel", Some("c1"), false);
        interim.is_final = false;
        let entries = [
            interim,
            line(RecRole::Caller, "hello", Some("c1"), false),
            line(RecRole::System, "call answered", None, false),
            line(
                RecRole::Agent,
                "Hi, how can I help you today?",
                Some("a1"),
                false,
            ),
            line(RecRole::Caller, "my order", None, false),
            // The caller cut the reply short: it is corrected to what was heard.
            line(RecRole::Agent, "Hi, how can", Some("a1"), true),
        ];
        let c = conversation_from(&entries);
        let got: Vec<(Role, &str)> = c.iter().map(|i| (i.role, i.text.as_str())).collect();
        assert_eq!(
            got,
            [
                (Role::Caller, "hello"),
                (Role::Agent, "Hi, how can"),
                (Role::Caller, "my order"),
            ]
        );
    }
}
