//! An agent's caller memory (`memory`) and post-call analysis (`[agent.analysis]`).

use super::error::{ConfigError, ConfigErrorKind};
use super::file::{FileAnalysis, FileLlm};
use super::resolve::Resolver;
use crate::agent::analysis::{
    AnalysisConfig, DEFAULT_ANALYSIS_INSTRUCTIONS, DEFAULT_ANALYSIS_TIMEOUT, strict_schema,
};

/// The placeholder for the caller's memory in instructions.
const MEMORY_PLACEHOLDER: &str = "{{memory}}";

impl Resolver<'_> {
    /// `[agent.analysis]` of the agent at `key` (`agent[0]`): the model is resolved like
    /// `[agent.llm]` (url, model, api_key_env, …) with a 30 s default timeout; the outcome
    /// schema is made strict, or refused where it cannot be.
    pub(super) fn analysis_section(
        &self,
        key: &str,
        f: FileAnalysis,
    ) -> Result<AnalysisConfig, ConfigError> {
        let k = |name: &str| format!("{key}.analysis.{name}");
        let chat = self.llm(
            &format!("{key}.analysis"),
            FileLlm {
                provider: f.provider,
                url: f.url,
                model: f.model,
                api_key_env: f.api_key_env,
                temperature: f.temperature,
                max_tokens: f.max_tokens,
                timeout_ms: Some(
                    f.timeout_ms
                        .unwrap_or(DEFAULT_ANALYSIS_TIMEOUT.as_millis() as u64),
                ),
            },
        )?;
        let outcome_schema = match f.outcome_schema {
            Some(v) => {
                let json = serde_json::to_value(&v).map_err(|e| {
                    self.err(
                        k("outcome_schema"),
                        ConfigErrorKind::AgentSetting(e.to_string()),
                    )
                })?;
                Some(strict_schema(&json).map_err(|reason| {
                    self.err(k("outcome_schema"), ConfigErrorKind::AgentSetting(reason))
                })?)
            }
            None => None,
        };
        let instructions = match f.instructions {
            Some(t) if t.trim().is_empty() => {
                return Err(self.err(k("instructions"), ConfigErrorKind::Empty));
            }
            Some(t) => t,
            None => DEFAULT_ANALYSIS_INSTRUCTIONS.to_owned(),
        };
        Ok(AnalysisConfig {
            chat,
            instructions,
            outcome_schema,
        })
    }

    /// Checks `memory` against the instructions and greeting: `{{memory}}` without memory
    /// would always be empty, so it is refused.
    pub(super) fn check_memory(
        &self,
        key: &str,
        memory: bool,
        instructions: Option<&str>,
        greeting: Option<&str>,
    ) -> Result<(), ConfigError> {
        if memory {
            return Ok(());
        }
        for (field, text) in [("instructions", instructions), ("greeting", greeting)] {
            if text.is_some_and(|t| t.contains(MEMORY_PLACEHOLDER)) {
                return Err(self.err(
                    format!("{key}.{field}"),
                    ConfigErrorKind::AgentSetting(
                        "uses {{memory}} but the agent has memory = false; set memory = true"
                            .into(),
                    ),
                ));
            }
        }
        Ok(())
    }
}
