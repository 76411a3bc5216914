//! Per-client request rate limits: a token bucket for the API token (requests that carry the
//! configured bearer token share it), and one per source address for every other request (a
//! made-up token does not get a bucket of its own). A request beyond the bucket is
//! answered `429 Too Many Requests` with `Retry-After`, before any handler runs.
//! `GET /health` is exempt (supervisors poll it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Most clients tracked; beyond it, the buckets idle for a minute are dropped (a flood of
/// made-up tokens or addresses cannot grow the table without bound).
const MAX_CLIENTS: usize = 10_000;
/// How long an idle bucket is kept when the table is full.
const IDLE: Duration = Duration::from_secs(60);

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    Token(String),
    Source(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets (a std mutex: held for one update, never across an await).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    /// The configured API token, if any.
    token: Option<Arc<str>>,
    buckets: Arc<Mutex<HashMap<Client, Bucket>>>,
}

impl RateLimiter {
    /// A limiter of `per_s` requests a second per client, bursts of up to `burst`; requests
    /// with `token` as their bearer token count as one client.
    pub fn new(per_s: u32, burst: u32, token: Option<Arc<str>>) -> RateLimiter {
        RateLimiter {
            per_s: f64::from(per_s.max(1)),
            burst: f64::from(burst.max(1)),
            token,
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one request from `client`'s bucket at `now`: `Ok`, or how long until the next
    /// request would pass.
    fn take(&self, client: Client, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            buckets.retain(|_, b| now.duration_since(b.last) < IDLE);
        }
        let b = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let refill = now.duration_since(b.last).as_secs_f64() * self.per_s;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_s))
        }
    }
}

/// The middleware: 429 beyond the client's rate.
pub(super) async fn limit(
    State(limiter): State<Option<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limiter) = limiter else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| limiter.token.as_deref() == Some(*t))
        .map(|t| Client::Token(t.to_owned()));
    let peer = request
        .extensions()
        .get::<super::phone::PeerAddr>()
        .map(|p| Client::Source(p.0.ip()));
    let Some(client) = token.or(peer) else {
        return next.run(request).await;
    };
    match limiter.take(client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let secs = wait.as_secs().max(1);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                axum::Json(json!({ "error": format!("too many requests: retry in {secs} s") })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let l = RateLimiter::new(2, 3, None);
        let t0 = Instant::now();
        let c = || Client::Token("t".into());
        for _ in 0..3 {
            assert!(l.take(c(), t0).is_ok());
        }
        let wait = l.take(c(), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one more passes, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.take(c(), t1).is_ok());
        assert!(l.take(c(), t1).is_err());
        // Another client has its own bucket.
        assert!(l.take(Client::Source([127, 0, 0, 1].into()), t1).is_ok());
    }
}
