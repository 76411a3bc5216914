//! Finished calls: `GET /records` (search and filters), `GET /records/{id}/recording` (the
//! stereo recording, with HTTP Range for players that seek), and `GET /analytics` (per agent
//! and per day, with a cost estimate from `[pricing]`).

use std::io::SeekFrom;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use utoipa::{IntoParams, ToSchema};

use super::doc::ErrorBody;
use super::{ApiError, ApiState, authorize, query};
use crate::records::search::{DayAgent, MAX_QUERY_LEN, RecordFilter};
use crate::records::{CallRecord, Direction, RecordReader, UnixMs};

/// `GET /records` page size when `limit` is not given.
pub const DEFAULT_RECORDS_LIMIT: u32 = 50;

/// The largest `limit` `GET /records` accepts.
pub const MAX_RECORDS_LIMIT: u32 = 500;

/// The longest span `GET /analytics` covers: a year and a day.
pub const MAX_ANALYTICS_DAYS: i64 = 366;

/// The span `GET /analytics` covers when `since` is not given: 30 days.
const DEFAULT_ANALYTICS_DAYS: i64 = 30;

const DAY_MS: i64 = 86_400_000;

/// How much of a recording one read sends on: 64 KiB.
const CHUNK: usize = 64 * 1024;

/// Query of `GET /records`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordsQuery {
    /// Page size: 1 to [`MAX_RECORDS_LIMIT`] (default [`DEFAULT_RECORDS_LIMIT`]).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Finished records to skip (default 0).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub offset: Option<u32>,
    /// Text in the id, Call-ID, From, To, agent, end reason or analysis (case-insensitive
    /// for ASCII); at most 200 characters.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// Only this agent's calls.
    pub agent: Option<String>,
    /// Only `inbound` or `outbound` calls.
    #[param(pattern = "^(inbound|outbound)$")]
    pub direction: Option<String>,
    /// Only answered (`true`) or unanswered (`false`) calls.
    pub answered: Option<bool>,
    /// Only calls started at or after this Unix time, ms.
    pub since: Option<i64>,
    /// Only calls started before this Unix time, ms.
    pub until: Option<i64>,
}

/// Finished calls' records (ended, or cut off by a crash), newest first, searched and
/// filtered.
#[utoipa::path(get, path = "/records", tag = "calls", params(RecordsQuery), responses(
    (status = 200, description = "a page of records", body = Vec<CallRecord>),
    (status = 404, description = "call records are not kept", body = ErrorBody),
))]
pub(super) async fn list_records(
    State(state): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<RecordsQuery>, QueryRejection>,
) -> Result<Json<Vec<CallRecord>>, ApiError> {
    authorize(&state, &headers)?;
    let q = query(q)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let limit = q.limit.unwrap_or(DEFAULT_RECORDS_LIMIT);
    if limit == 0 || limit > MAX_RECORDS_LIMIT {
        return Err(bad(format!(
            "limit must be 1 to {MAX_RECORDS_LIMIT}, got {limit}"
        )));
    }
    if q.q
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_QUERY_LEN)
    {
        return Err(bad(format!("q must be at most {MAX_QUERY_LEN} characters")));
    }
    let direction = match q.direction.as_deref() {
        None => None,
        Some(d) => Some(
            Direction::parse(d)
                .ok_or_else(|| bad(format!("direction must be inbound or outbound, got {d:?}")))?,
        ),
    };
    let filter = RecordFilter {
        q: q.q,
        agent: q.agent,
        direction,
        answered: q.answered,
        since: q.since.map(UnixMs::new),
        until: q.until.map(UnixMs::new),
    };
    let offset = q.offset.unwrap_or(0);
    let reader = reader(&state)?;
    let page = tokio::task::spawn_blocking(move || reader.search(&filter, limit, offset))
        .await
        .map_err(|e| ApiError::internal(format!("records search failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(page))
}

fn reader(state: &ApiState) -> Result<RecordReader, ApiError> {
    state
        .records
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "call records are not kept"))
}

/// A call's recording (WAV, the caller left, the agent right), whole or the byte range the
/// `Range` header asks for (one range, RFC 9110 §14).
#[utoipa::path(get, path = "/records/{id}/recording", tag = "calls",
    params(
        ("id" = String, Path, description = "the record id"),
        ("Range" = Option<String>, Header, description = "one byte range: `bytes=START-END`, `bytes=START-` or `bytes=-LENGTH`"),
    ),
    responses(
        (status = 200, description = "the whole recording", body = Vec<u8>, content_type = "audio/wav"),
        (status = 206, description = "the range asked for", body = Vec<u8>, content_type = "audio/wav"),
        (status = 404, description = "no such record, or it has no recording (none kept, or deleted by retention)", body = ErrorBody),
        (status = 502, description = "the recording was uploaded (`[recording_upload]`) and the bucket cannot be read", body = ErrorBody),
        (status = 416, description = "the range is outside the recording"),
    ))]
pub(super) async fn recording(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let reader = reader(&state)?;
    let key = id.clone();
    let record = tokio::task::spawn_blocking(move || reader.get(&key))
        .await
        .map_err(|e| ApiError::internal(format!("record lookup failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let not_found = |why: &str| ApiError::new(StatusCode::NOT_FOUND, format!("{why}: {id}"));
    let record = record.ok_or_else(|| not_found("no record"))?;
    let local = match &record.recording_path {
        Some(path) => tokio::fs::File::open(path).await.ok(),
        None => None,
    };
    let mut file = match (local, &record.recording_url) {
        (Some(file), _) => file,
        // Uploaded (`[recording_upload]`), and the local file deleted: the stored copy.
        (None, Some(url)) => return from_bucket(&state, &id, url, &headers).await,
        (None, None) if record.recording_path.is_some() => {
            return Err(not_found("the recording's file is gone"));
        }
        (None, None) => return Err(not_found("the call has no recording")),
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the recording: {e}")))?
        .len();
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(r) => match byte_range(r, size) {
            Ok(r) => r,
            Err(()) => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                )
                    .into_response());
            }
        },
    };
    let (start, len) = range.map_or((0, size), |(s, e)| (s, e - s + 1));
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(format!("cannot read the recording: {e}")))?;
    }
    let body = Body::from_stream(futures_util::stream::unfold(
        (file, len),
        |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let mut buf = vec![0u8; want];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), (file, left - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        },
    ));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some((s, e)) = range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{e}/{size}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}

/// A recording from `[recording_upload]`'s bucket, the byte range the request asks for
/// passed on: S3's status (200, 206 or 416), length and range headers, and its body streamed.
async fn from_bucket(
    state: &ApiState,
    id: &str,
    url: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let gone = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "the recording was uploaded to {url}, which recording_upload no longer names: {id}"
            ),
        )
    };
    let client = state.recordings_s3.as_ref().ok_or_else(gone)?;
    let key = client.key_in(url).ok_or_else(gone)?;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let upstream = client.get(&key, range).await.map_err(|e| {
        tracing::warn!(record = %id, error = %e, "uploaded recording not readable");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the uploaded recording cannot be read: {e}"),
        )
    })?;
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::OK);
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for name in [header::CONTENT_LENGTH, header::CONTENT_RANGE] {
        if let Some(v) = upstream
            .headers()
            .get(name.as_str())
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            h.insert(name, v);
        }
    }
    *resp.body_mut() = Body::from_stream(upstream.bytes_stream());
    Ok(resp)
}

/// The one byte range of a `Range` header over `size` bytes, as (first, last) inclusive;
/// `Ok(None)` for a header to ignore (another unit, several ranges: RFC 9110 §14.2 lets a
/// server answer those with the whole content), `Err` when it cannot be satisfied.
fn byte_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => {
            let n = num(b).ok_or(())?;
            if n == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size - 1)
        }
        // bytes=S-: from S to the end.
        (false, true) => {
            let s = num(a).ok_or(())?;
            if s >= size {
                return Err(());
            }
            (s, size - 1)
        }
        (false, false) => {
            let (s, e) = (num(a).ok_or(())?, num(b).ok_or(())?);
            if s > e || s >= size {
                return Err(());
            }
            (s, e.min(size - 1))
        }
        (true, true) => return Err(()),
    };
    Ok(Some(range))
}

/// Query of `GET /analytics`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// From this Unix time, ms (default: 30 days before `until`).
    pub since: Option<i64>,
    /// Until this Unix time, ms, exclusive (default: now). At most 366 days after `since`.
    pub until: Option<i64>,
    /// Only this agent.
    pub agent: Option<String>,
    /// The IANA time zone days are counted in (default `UTC`).
    pub tz: Option<String>,
}

/// One agent's day with its cost estimate.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayFigures {
    #[serde(flatten)]
    figures: DayAgent,
    /// The estimated cost of the day's answered minutes (`[pricing]`), in `currency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<f64>,
}

/// `GET /analytics` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Analytics {
    /// The span, Unix ms: `[since, until)`.
    since: i64,
    /// End of the span, exclusive.
    until: i64,
    /// The time zone of the days.
    tz: String,
    /// The currency of `cost` (`[pricing] currency`); absent without `[pricing]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// Per day, then agent.
    days: Vec<DayFigures>,
}

/// Per agent and per day: calls, answer rate, talk time, turn-latency percentiles, barge-ins,
/// failovers, outcomes, and the cost estimate of `[pricing]`.
#[utoipa::path(get, path = "/analytics", tag = "calls", params(AnalyticsQuery), responses(
    (status = 200, description = "the figures", body = Analytics),
    (status = 404, description = "call records are not kept", body = ErrorBody),
))]
pub(super) async fn analytics(
    State(state): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Json<Analytics>, ApiError> {
    authorize(&state, &headers)?;
    let q = query(q)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let until = q.until.unwrap_or_else(|| UnixMs::now().0);
    let since = q
        .since
        .unwrap_or_else(|| until.saturating_sub(DEFAULT_ANALYTICS_DAYS * DAY_MS));
    if since >= until {
        return Err(bad(format!(
            "since ({since}) must be before until ({until})"
        )));
    }
    if until.saturating_sub(since) > MAX_ANALYTICS_DAYS * DAY_MS {
        return Err(bad(format!(
            "the span is at most {MAX_ANALYTICS_DAYS} days"
        )));
    }
    let tz_name = q.tz.unwrap_or_else(|| "UTC".into());
    let tz = jiff::tz::TimeZone::get(&tz_name)
        .map_err(|_| bad(format!("tz: unknown time zone {tz_name:?}")))?;
    let reader = reader(&state)?;
    let agent = q.agent;
    let figures = tokio::task::spawn_blocking(move || {
        reader.analytics(
            UnixMs::new(since),
            UnixMs::new(until),
            agent.as_deref(),
            &tz,
        )
    })
    .await
    .map_err(|e| ApiError::internal(format!("analytics failed: {e}")))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let pricing = state.pricing.as_deref();
    let days = figures
        .into_iter()
        .map(|figures| DayFigures {
            cost: pricing.map(|p| {
                let c = p.cost(&figures.agent, figures.talk_seconds);
                (c * 1e6).round() / 1e6
            }),
            figures,
        })
        .collect();
    Ok(Json(Analytics {
        since,
        until,
        tz: tz_name,
        currency: pricing.map(|p| p.currency.clone()),
        days,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(byte_range("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(byte_range("bytes=500-", 1000), Ok(Some((500, 999))));
        assert_eq!(byte_range("bytes=-100", 1000), Ok(Some((900, 999))));
        assert_eq!(byte_range("bytes=-5000", 1000), Ok(Some((0, 999))));
        assert_eq!(byte_range("bytes=900-5000", 1000), Ok(Some((900, 999))));
        assert_eq!(byte_range("bytes=1000-", 1000), Err(()));
        assert_eq!(byte_range("bytes=5-4", 1000), Err(()));
        assert_eq!(byte_range("bytes=-0", 1000), Err(()));
        assert_eq!(byte_range("bytes=x-1", 1000), Err(()));
        // Ignored: the whole content is the answer.
        assert_eq!(byte_range("items=0-1", 1000), Ok(None));
        assert_eq!(byte_range("bytes=0-1,5-6", 1000), Ok(None));
    }
}
