//! Agents defined through the API (`POST /agents`): the JSON of a `[[agent]]` table, checked
//! by the same rules as voxline.toml's, errors naming the key (`instructions`, `realtime.url`).

use std::path::PathBuf;

use super::AgentSection;
use super::error::{ConfigError, ConfigErrorKind};
use super::file::FileAgent;
use super::resolve::Resolver;

/// What errors say the definition is (in place of a file name).
pub const AGENT_DEFINITION: &str = "agent definition";

/// Checks an agent definition (a JSON object with the keys of `[[agent]]`) and resolves it
/// like voxline.toml's agents, secrets read from `env`. Relative paths (`play_file`) are
/// taken from voxline's working directory.
pub fn agent_from_json(
    definition: &serde_json::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AgentSection, ConfigError> {
    let raw: FileAgent = serde_json::from_value(definition.clone()).map_err(|e| {
        ConfigError::at(
            AGENT_DEFINITION,
            "agent",
            ConfigErrorKind::Syntax(e.to_string()),
        )
    })?;
    let name = raw.name.clone();
    let resolver = Resolver::new(AGENT_DEFINITION, env);
    let identity = |p: PathBuf| p;
    let agents = resolver.agents(vec![raw], &identity).map_err(|mut e| {
        // `agent[0].instructions` → `instructions`: there is one agent here.
        if let Some(k) = e.key.as_mut()
            && let Some(rest) = k.strip_prefix("agent[0].")
        {
            *k = rest.to_owned();
        }
        e
    })?;
    // The resolver adds the built-in agents; ours is the one with its name.
    agents.into_iter().find(|a| a.name == name).ok_or_else(|| {
        ConfigError::at(
            AGENT_DEFINITION,
            "agent",
            ConfigErrorKind::AgentSetting("no agent in the definition".into()),
        )
    })
}
