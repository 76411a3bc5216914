//! `GET /events`: the calls in progress as Server-Sent Events, for the console's live view.
//!
//! * `calls`: every second, the calls in progress (as `GET /calls` lists them);
//! * `transcript`: each transcript line of a call in progress as it is written
//!   (`{"call": ID, "record_id": "...", "line": {...}}`); on connecting, the lines so far.
//!
//! Each stream has a task of its own that reads the call table and tails the transcripts
//! of the calls in it (250 ms apart, on the blocking pool), and ends when the client goes.
//! At most [`MAX_EVENT_STREAMS`] streams are open at once (503 beyond).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::mpsc;

use super::doc::ErrorBody;
use super::{ApiError, ApiState, authorize};
use crate::call::{CallInfo, CallTable};
use crate::records::TranscriptEntry;

/// The most event streams open at once.
pub const MAX_EVENT_STREAMS: usize = 32;

/// How often a stream looks at the transcripts.
const POLL: Duration = Duration::from_millis(250);

/// `calls` is sent every this many polls (1 s).
const CALLS_EVERY: u32 = 4;

/// The most of a transcript read in one poll: 256 KiB.
const READ_LIMIT: u64 = 256 * 1024;

/// Streams open now.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// One open stream's place under [`MAX_EVENT_STREAMS`].
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        OPEN.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_EVENT_STREAMS).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The data of a `transcript` event.
#[derive(Debug, Serialize)]
struct LineEvent<'a> {
    call: u64,
    record_id: &'a str,
    line: &'a TranscriptEntry,
}

/// The calls in progress, live (`text/event-stream`: `calls` and `transcript` events).
#[utoipa::path(get, path = "/events", tag = "calls", responses(
    (status = 200, description = "an endless stream of `calls` (every second) and `transcript` events", body = String, content_type = "text/event-stream"),
    (status = 503, description = "too many event streams are open", body = ErrorBody),
))]
pub(super) async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let slot = Slot::take().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("at most {MAX_EVENT_STREAMS} event streams at once"),
        )
    })?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(feed(state.handle.calls.clone(), tx, slot));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Where a stream is in one call's transcript.
struct Tail {
    path: Arc<str>,
    offset: u64,
}

/// Feeds one stream until its client goes.
async fn feed(calls: CallTable, tx: mpsc::Sender<Event>, _slot: Slot) {
    let mut tails: HashMap<u64, Tail> = HashMap::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        let live: Vec<CallInfo> = calls.active();
        if n.is_multiple_of(CALLS_EVERY) {
            let event = Event::default().event("calls").json_data(&live);
            match event {
                Ok(e) => {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "the calls event cannot be encoded"),
            }
        }
        n = n.wrapping_add(1);
        tails.retain(|id, _| live.iter().any(|c| c.id == *id));
        for call in &live {
            let Some(path) = &call.transcript else {
                continue;
            };
            let tail = tails.entry(call.id).or_insert_with(|| Tail {
                path: Arc::from(path.as_str()),
                offset: 0,
            });
            let (path, offset) = (tail.path.clone(), tail.offset);
            let read = tokio::task::spawn_blocking(move || read_lines(&path, offset)).await;
            let Ok(Ok((lines, consumed))) = read else {
                continue;
            };
            tail.offset += consumed;
            for line in &lines {
                let data = LineEvent {
                    call: call.id,
                    record_id: &call.record_id,
                    line,
                };
                let Ok(e) = Event::default().event("transcript").json_data(&data) else {
                    continue;
                };
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The complete transcript lines after `offset` (at most [`READ_LIMIT`] bytes of them), and
/// how many bytes they took. A line still being written waits for the next poll; a line that
/// does not parse is skipped.
fn read_lines(path: &str, offset: u64) -> std::io::Result<(Vec<TranscriptEntry>, u64)> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(READ_LIMIT).read_to_end(&mut buf)?;
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return Ok((Vec::new(), 0));
    };
    let lines = buf[..end]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    Ok((lines, end as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_lines_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let line = r#"{"t_ms":5,"at":1,"role":"caller","text":"hi","final":true}"#;
        std::fs::write(&path, format!("{line}\n{line}\n{{\"t_ms\":9")).unwrap();
        let p = path.to_str().unwrap();
        let (lines, used) = read_lines(p, 0).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(used, 2 * (line.len() as u64 + 1));
        let (lines, more) = read_lines(p, used).unwrap();
        assert!(lines.is_empty());
        assert_eq!(more, 0);
    }
}
