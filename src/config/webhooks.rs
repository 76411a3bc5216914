//! `[[webhook]]`: endpoints that receive signed events from the outbox (see
//! [`crate::webhooks`]).

use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, ConfigErrorKind};
use super::resolve::Resolver;
use crate::records::outbox::EventType;
use crate::webhooks::{Endpoint, Secret};

/// Default time one attempt may take, seconds.
const DEFAULT_TIMEOUT_S: u32 = 10;
/// Default first retry delay, milliseconds.
const DEFAULT_BACKOFF_INITIAL_MS: u32 = 5_000;
/// Default longest delay between attempts, seconds.
const DEFAULT_BACKOFF_MAX_S: u32 = 600;
/// Default retry period, hours.
const DEFAULT_GIVE_UP_AFTER_H: u32 = 24;

/// One `[[webhook]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileWebhook {
    pub name: Option<String>,
    pub url: String,
    pub secret_env: String,
    pub events: Option<Vec<String>>,
    pub timeout_s: Option<u32>,
    pub backoff_initial_ms: Option<u32>,
    pub backoff_max_s: Option<u32>,
    pub give_up_after_h: Option<u32>,
}

/// An endpoint as `POST /webhooks/endpoints` takes it: `[[webhook]]`'s keys, without
/// `secret_env` (voxline makes the secret) and with a required `name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiWebhook {
    name: String,
    url: String,
    events: Option<Vec<String>>,
    timeout_s: Option<u32>,
    backoff_initial_ms: Option<u32>,
    backoff_max_s: Option<u32>,
    give_up_after_h: Option<u32>,
}

/// What errors say an API endpoint definition is (in place of a file name).
pub const WEBHOOK_DEFINITION: &str = "webhook definition";

/// Checks an endpoint definition from the API (JSON) as `[[webhook]]` is checked; `secret`
/// is the one voxline made for it.
pub fn webhook_from_json(
    definition: &serde_json::Value,
    secret: Secret,
) -> Result<Endpoint, ConfigError> {
    let w: ApiWebhook = serde_json::from_value(definition.clone()).map_err(|e| {
        ConfigError::at(
            WEBHOOK_DEFINITION,
            "webhook",
            ConfigErrorKind::Syntax(e.to_string()),
        )
    })?;
    let no_env = |_: &str| None;
    let resolver = Resolver::new(WEBHOOK_DEFINITION, &no_env);
    resolver.endpoint(
        &|k: &str| k.to_owned(),
        FileWebhook {
            name: Some(w.name),
            url: w.url,
            secret_env: String::new(),
            events: w.events,
            timeout_s: w.timeout_s,
            backoff_initial_ms: w.backoff_initial_ms,
            backoff_max_s: w.backoff_max_s,
            give_up_after_h: w.give_up_after_h,
        },
        secret,
    )
}

impl Resolver<'_> {
    /// The endpoints, checked: an http(s) URL, a `whsec_` secret in its environment variable,
    /// known event names, sane timings, unique names.
    pub(super) fn webhooks(&self, raw: Vec<FileWebhook>) -> Result<Vec<Endpoint>, ConfigError> {
        let mut out: Vec<Endpoint> = Vec::with_capacity(raw.len());
        for (i, w) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("webhook[{i}].{k}");
            let secret_text = self.env_var(
                &key("secret_env"),
                &w.secret_env,
                Some("it holds the endpoint's signing secret (whsec_...)"),
            )?;
            let secret = Secret::parse(secret_text.expose()).map_err(|e| {
                self.err(
                    key("secret_env"),
                    ConfigErrorKind::Webhook(format!("the value of {}: {e}", w.secret_env)),
                )
            })?;
            let ep = self.endpoint(&key, w, secret)?;
            if let Some(j) = out.iter().position(|e| e.name == ep.name) {
                return Err(self.err(
                    key("name"),
                    ConfigErrorKind::DuplicateName {
                        name: ep.name,
                        first: format!("webhook[{j}]"),
                    },
                ));
            }
            out.push(ep);
        }
        Ok(out)
    }

    /// One endpoint's checks (all but its secret and the names' uniqueness); `key` makes a
    /// field's dotted key.
    fn endpoint(
        &self,
        key: &dyn Fn(&str) -> String,
        w: FileWebhook,
        secret: Secret,
    ) -> Result<Endpoint, ConfigError> {
        let url = w.url.trim().to_owned();
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&url).is_err() {
            return Err(self.err(
                key("url"),
                ConfigErrorKind::Webhook(format!("\"{url}\" is not an http:// or https:// URL")),
            ));
        }
        let events = match &w.events {
            None => EventType::ALL.to_vec(),
            Some(list) if list.is_empty() => {
                return Err(self.err(key("events"), ConfigErrorKind::Empty));
            }
            Some(list) => {
                let mut events = Vec::with_capacity(list.len());
                for (j, name) in list.iter().enumerate() {
                    let e = EventType::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = EventType::ALL.iter().map(|e| e.name()).collect();
                        self.err(
                            key(&format!("events[{j}]")),
                            ConfigErrorKind::Webhook(format!(
                                "unknown event \"{name}\" (known: {})",
                                known.join(", ")
                            )),
                        )
                    })?;
                    if !events.contains(&e) {
                        events.push(e);
                    }
                }
                events
            }
        };
        let timeout_s = w.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
        self.in_range(&key("timeout_s"), timeout_s, 1, 300)?;
        let initial_ms = w.backoff_initial_ms.unwrap_or(DEFAULT_BACKOFF_INITIAL_MS);
        self.in_range(&key("backoff_initial_ms"), initial_ms, 10, 3_600_000)?;
        let max_s = w.backoff_max_s.unwrap_or(DEFAULT_BACKOFF_MAX_S);
        self.in_range(&key("backoff_max_s"), max_s, 1, 86_400)?;
        let give_up_h = w.give_up_after_h.unwrap_or(DEFAULT_GIVE_UP_AFTER_H);
        self.in_range(&key("give_up_after_h"), give_up_h, 1, 720)?;
        let name = w.name.unwrap_or_else(|| url.clone());
        if name.trim().is_empty() || name.len() > 200 {
            return Err(self.err(key("name"), ConfigErrorKind::Empty));
        }
        Ok(Endpoint {
            name,
            url,
            secret,
            events,
            timeout: Duration::from_secs(u64::from(timeout_s)),
            backoff_initial: Duration::from_millis(u64::from(initial_ms)),
            backoff_max: Duration::from_secs(u64::from(max_s)),
            give_up_after: Duration::from_secs(u64::from(give_up_h) * 3600),
        })
    }
}
