//! Webhooks: the delivery side of the records database's outbox
//! ([`crate::records::outbox`]), signed as [Standard Webhooks](https://www.standardwebhooks.com/)
//! does it.
//!
//! * Each request is a `POST` of the event's JSON (`{"type", "timestamp", "data"}`) with
//!   `webhook-id` (the outbox row's id, the same on every attempt: receivers deduplicate on
//!   it), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
//!   (`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under the endpoint's secret,
//!   `whsec_` and base64 of the key bytes).
//! * Delivery is at least once: a row is marked delivered only after a 2xx answer, so a crash
//!   between the answer and the mark sends it again (with the same id).
//! * A failed attempt (no connection, a timeout, a status other than 2xx) is retried after an
//!   exponential backoff with jitter, from `backoff_initial_ms` doubling up to
//!   `backoff_max_s`; after `give_up_after_h` hours from the event the row is dead (kept,
//!   listed, and redeliverable through the API).
//! * One task per endpoint sends its rows oldest first, one at a time, so an endpoint that
//!   hangs delays only its own events.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::records::outbox::{Delivery, EventType, Outbox, Subscription};
use crate::records::{RecordsError, UnixMs};

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The signature scheme's version tag.
const SIGNATURE_VERSION: &str = "v1";
/// Rows taken per query.
const BATCH: u32 = 32;
/// How often an idle endpoint task looks for new rows.
const POLL: Duration = Duration::from_millis(250);
/// The longest error text kept with a row.
const MAX_ERROR_LEN: usize = 300;

/// An endpoint's signing key (the bytes behind `whsec_`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Not `whsec_` followed by something.
    #[error("a Standard Webhooks secret starts with \"whsec_\"")]
    NoPrefix,
    /// The part after the prefix is not base64.
    #[error("the part after \"whsec_\" is not base64")]
    NotBase64,
    /// Fewer than 24 key bytes (Standard Webhooks asks for 24 to 64).
    #[error("the key is {0} bytes; at least 24 are needed")]
    TooShort(usize),
}

impl Secret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let b64 = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::NoPrefix)?;
        let key = BASE64.decode(b64).map_err(|_| SecretError::NotBase64)?;
        if key.len() < 24 {
            return Err(SecretError::TooShort(key.len()));
        }
        Ok(Secret(key))
    }

    /// The `webhook-signature` value for a message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "{SIGNATURE_VERSION},{}",
            BASE64.encode(mac.finalize().into_bytes())
        )
    }
}

/// One configured endpoint (`[[webhook]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name (outbox rows carry it): `name`, else the URL.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The signing key.
    pub secret: Secret,
    /// The events it takes.
    pub events: Vec<EventType>,
    /// The time an attempt may take.
    pub timeout: Duration,
    /// The first retry's delay; each next one doubles.
    pub backoff_initial: Duration,
    /// The longest delay between attempts.
    pub backoff_max: Duration,
    /// How long after the event attempts go on before the row is dead.
    pub give_up_after: Duration,
}

impl Endpoint {
    /// Its subscription, for the record writer.
    pub fn subscription(&self) -> Subscription {
        Subscription {
            endpoint: self.name.clone(),
            events: self.events.clone(),
        }
    }

    /// The delay before attempt `attempts + 1`, after `attempts` failed ones: exponential
    /// from `backoff_initial`, capped at `backoff_max`, then a random point in its upper
    /// half (jitter, so that endpoints coming back are not hit by every row at once).
    pub fn backoff(&self, attempts: u32, unit_random: f64) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let full = self
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        full.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
    }
}

/// Counters of the delivery tasks (for `/metrics`).
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Attempts answered 2xx.
    pub delivered: std::sync::atomic::AtomicU64,
    /// Attempts that failed (to be retried).
    pub failed: std::sync::atomic::AtomicU64,
    /// Rows given up on.
    pub dead: std::sync::atomic::AtomicU64,
}

/// The outbox shared by the endpoint tasks and the API (a std mutex: held for one query,
/// never across an await; queries run on the blocking pool).
pub type SharedOutbox = crate::records::shared::Shared<Outbox>;

/// Runs `f` on the outbox on tokio's blocking pool.
pub async fn with_outbox<T: Send + 'static>(
    outbox: &SharedOutbox,
    f: impl FnOnce(&Outbox) -> Result<T, RecordsError> + Send + 'static,
) -> Result<T, RecordsError> {
    match outbox.run(move |o| f(o)).await {
        Ok(r) => r,
        // The closure panicked or the runtime is shutting down.
        Err(e) => Err(RecordsError::WriterThread {
            path: std::path::PathBuf::from("outbox"),
            op: "outbox query",
            reason: e.to_string(),
        }),
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered(u16),
    Failed(Option<u16>, String),
}

async fn attempt(client: &reqwest::Client, ep: &Endpoint, row: &Delivery) -> Attempt {
    let timestamp = UnixMs::now().0.max(0) as u64 / 1000;
    let signature = ep.secret.sign(&row.id, timestamp, row.payload.as_bytes());
    let sent = client
        .post(&ep.url)
        .timeout(ep.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &row.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(row.payload.clone())
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => Attempt::Delivered(resp.status().as_u16()),
        Ok(resp) => Attempt::Failed(
            Some(resp.status().as_u16()),
            format!("the endpoint answered {}", resp.status()),
        ),
        Err(e) => {
            let mut text = format!("{e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text.push_str(": ");
                text.push_str(&s.to_string());
                src = s.source();
            }
            Attempt::Failed(None, text)
        }
    }
}

/// Delivers `ep`'s rows until the process ends.
pub async fn run_endpoint(
    ep: Endpoint,
    outbox: SharedOutbox,
    client: reqwest::Client,
    counters: Arc<WebhookCounters>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        let name = ep.name.clone();
        // Claimed (in a cluster) for as long as the whole batch may take, and a minute more.
        let claim_ms = i64::try_from(ep.timeout.as_millis())
            .unwrap_or(i64::MAX / 64)
            .saturating_mul(i64::from(BATCH))
            .saturating_add(60_000);
        let rows = match with_outbox(&outbox, move |o| {
            o.due(&name, UnixMs::now(), BATCH, claim_ms)
        })
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(endpoint = %ep.name, error = %e, "webhook outbox not readable");
                tokio::time::sleep(POLL * 4).await;
                continue;
            }
        };
        let full = rows.len() as u32 == BATCH;
        for row in rows {
            let result = attempt(&client, &ep, &row).await;
            let id = row.id.clone();
            let update = match result {
                Attempt::Delivered(status) => {
                    counters.delivered.fetch_add(1, Relaxed);
                    tracing::debug!(endpoint = %ep.name, id = %row.id, event = %row.event, status, "webhook delivered");
                    with_outbox(&outbox, move |o| o.delivered(&id, status, UnixMs::now())).await
                }
                Attempt::Failed(status, mut error) => {
                    error.truncate(MAX_ERROR_LEN);
                    let attempts = row.attempts + 1;
                    let delay = ep.backoff(attempts, rand::random::<f64>());
                    let now = UnixMs::now();
                    let give_up_at = row.created_at.0.saturating_add(
                        i64::try_from(ep.give_up_after.as_millis()).unwrap_or(i64::MAX),
                    );
                    let next_at = now
                        .0
                        .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                    let next = (next_at <= give_up_at).then_some(UnixMs(next_at));
                    if next.is_some() {
                        counters.failed.fetch_add(1, Relaxed);
                        tracing::info!(endpoint = %ep.name, id = %row.id, event = %row.event, attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "webhook attempt failed; will retry");
                    } else {
                        counters.dead.fetch_add(1, Relaxed);
                        tracing::warn!(endpoint = %ep.name, id = %row.id, event = %row.event, attempts, error = %error, "webhook given up (dead): redeliver with POST /webhooks/deliveries/{{id}}/redeliver");
                    }
                    with_outbox(&outbox, move |o| o.failed(&id, status, &error, next)).await
                }
            };
            if let Err(e) = update {
                tracing::warn!(endpoint = %ep.name, error = %e, "webhook outbox not writable");
            }
        }
        if !full {
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_vector() {
        // The vector the Standard Webhooks reference libraries test with.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn secrets_that_are_not_whsec_base64_are_refused() {
        assert_eq!(Secret::parse("MfKQ9r8G"), Err(SecretError::NoPrefix));
        assert_eq!(Secret::parse("whsec_%%%"), Err(SecretError::NotBase64));
        assert_eq!(Secret::parse("whsec_AAAA"), Err(SecretError::TooShort(3)));
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        let ep = Endpoint {
            name: "x".into(),
            url: "http://127.0.0.1:1/".into(),
            secret: Secret(vec![0; 24]),
            events: EventType::ALL.to_vec(),
            timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(86_400),
        };
        assert_eq!(ep.backoff(1, 1.0), Duration::from_secs(5));
        assert_eq!(ep.backoff(1, 0.0), Duration::from_millis(2500));
        assert_eq!(ep.backoff(4, 1.0), Duration::from_secs(40));
        assert_eq!(ep.backoff(12, 1.0), Duration::from_secs(600));
        assert_eq!(ep.backoff(200, 0.5), Duration::from_secs(450));
    }
}
