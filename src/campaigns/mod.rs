//! Outbound campaigns: dialing a list of targets with an agent, within limits, durably.
//!
//! The state lives in the records database ([`crate::records::campaigns`]); this module
//! checks new campaigns ([`check_settings`], [`target_uri`]) and runs them ([`run`]): one
//! task that, every [`TICK`] or when woken, claims due targets of each running campaign while
//! its calling window is open and the store grants them: the campaign has fewer than
//! `max_concurrent` targets dialing and its calls-per-second pace allows one more, both kept
//! in the database so that they hold across the nodes of a cluster
//! ([`CampaignStore::claim_within`]). Each claim becomes a task that dials
//! the target, hangs up when it rings longer than `ring_timeout_s`, classifies how the call
//! ended and reports the attempt to the store, which retries or finalizes the target.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::call::{AgentSpec, CallService, DialRequest, OutboundResult};
use crate::records::campaigns::{
    Attempt, AttemptResult, CallingWindow, Campaign, CampaignStore, Target, TrunkLimits,
};
use crate::records::shared::Shared;
use crate::records::{RecordsError, UnixMs};
use crate::sip::{EndReason, Transport};

/// How often the runner looks for due targets when nothing wakes it.
pub const TICK: Duration = Duration::from_millis(50);

/// How often the runner looks for running campaigns while there are none (a campaign
/// created on this node wakes it at once; one created on another node of a cluster is
/// seen within this). One query a second per node instead of twenty.
pub const IDLE_TICK: Duration = Duration::from_secs(1);

/// The most calls per second a campaign may ask for.
pub const MAX_CALLS_PER_S: f64 = 100.0;

/// The longest ring timeout.
pub const MAX_RING_TIMEOUT_S: u32 = 300;

/// The most attempts per target.
pub const MAX_ATTEMPTS: u32 = 10;

/// How long a target waits when its trunk was at its limit (no attempt is counted).
pub const TRUNK_BUSY_DELAY: Duration = Duration::from_millis(500);

/// Finds the agent a campaign names (voxline.toml's or the API's newest version).
pub type AgentLookup =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Option<AgentSpec>> + Send>> + Send + Sync>;

/// The campaigns, as the API and the runner share them.
#[derive(Clone)]
pub struct Campaigns {
    store: Shared<CampaignStore>,
    wake: Arc<Notify>,
    /// The trunks' limits campaign claims keep across the cluster, by trunk name.
    trunk_limits: Arc<HashMap<String, TrunkLimits>>,
}

impl Campaigns {
    /// Shares `store`.
    pub fn new(store: CampaignStore) -> Campaigns {
        Campaigns {
            store: Shared::new(store),
            wake: Arc::new(Notify::new()),
            trunk_limits: Arc::default(),
        }
    }

    /// Campaign calls through these trunks keep their limits (`max_calls`,
    /// `max_calls_per_s`) in the store, so across every node of a cluster.
    pub fn with_trunk_limits(mut self, limits: Vec<TrunkLimits>) -> Campaigns {
        self.trunk_limits = Arc::new(limits.into_iter().map(|l| (l.name.clone(), l)).collect());
        self
    }

    /// Runs `f` on the store on the blocking pool.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut CampaignStore) -> Result<T, RecordsError> + Send + 'static,
    ) -> Result<T, RecordsError> {
        match self.store.run(f).await {
            Ok(r) => r,
            Err(e) => Err(RecordsError::WriterThread {
                path: std::path::PathBuf::new(),
                op: "campaigns",
                reason: e.to_string(),
            }),
        }
    }

    /// Makes the runner look at once (after a create, resume, or a call's end).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Why a campaign's settings or targets were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CampaignError {
    /// The field (`window.timezone`, `targets[3].number`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> CampaignError {
    CampaignError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks a campaign's settings: limits in range, a window with `HH:MM` times, an IANA time
/// zone and weekday names.
pub fn check_settings(
    s: &crate::records::campaigns::CampaignSettings,
) -> Result<(), CampaignError> {
    if s.max_concurrent == 0 {
        return Err(bad("max_concurrent", "must be at least 1"));
    }
    if !(s.calls_per_s > 0.0 && s.calls_per_s <= MAX_CALLS_PER_S) {
        return Err(bad(
            "calls_per_s",
            format!("must be more than 0 and at most {MAX_CALLS_PER_S}"),
        ));
    }
    if !(1..=MAX_RING_TIMEOUT_S).contains(&s.ring_timeout_s) {
        return Err(bad(
            "ring_timeout_s",
            format!("must be 1 to {MAX_RING_TIMEOUT_S}"),
        ));
    }
    if !(1..=MAX_ATTEMPTS).contains(&s.retry.max_attempts) {
        return Err(bad(
            "retry.max_attempts",
            format!("must be 1 to {MAX_ATTEMPTS}"),
        ));
    }
    if s.retry.on.contains(&AttemptResult::Answered) {
        return Err(bad("retry.on", "an answered call is not retried"));
    }
    if let Some(w) = &s.window {
        Window::parse(w)?;
    }
    Ok(())
}

/// The SIP URI a target is dialled at: a `sip:`/`sips:` URI as given, or a number through
/// the campaign's trunk (`sip:NUMBER@HOST[:PORT][;transport=…]`).
pub fn target_uri(number: &str, trunk: Option<&crate::call::TrunkSpec>) -> Result<String, String> {
    if number.starts_with("sip:") || number.starts_with("sips:") {
        if number.len() > 256
            || number
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
        {
            return Err("not a usable SIP URI".into());
        }
        return Ok(number.to_owned());
    }
    let valid = !number.is_empty()
        && number.len() <= 64
        && number
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+*#._-".contains(c));
    if !valid {
        return Err("a number is 1 to 64 of 0-9 A-Z a-z + * # . _ - (or give a sip: URI)".into());
    }
    let Some(t) = trunk else {
        return Err("a number needs the campaign's trunk (or give a sip: URI)".into());
    };
    let port = t.port.map(|p| format!(":{p}")).unwrap_or_default();
    let transport = match t.transport {
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        _ => "",
    };
    Ok(format!("sip:{number}@{}{port}{transport}", t.host))
}

/// A calling window, parsed.
struct Window {
    start: jiff::civil::Time,
    end: jiff::civil::Time,
    tz: jiff::tz::TimeZone,
    days: Vec<jiff::civil::Weekday>,
}

impl Window {
    fn parse(w: &CallingWindow) -> Result<Window, CampaignError> {
        let time = |field: &str, text: &str| {
            let (h, m) = text
                .split_once(':')
                .and_then(|(h, m)| Some((h.parse::<i8>().ok()?, m.parse::<i8>().ok()?)))
                .filter(|_| text.len() == 5)
                .ok_or_else(|| bad(field, format!("{text:?} is not HH:MM")))?;
            jiff::civil::Time::new(h, m, 0, 0).map_err(|e| bad(field, e.to_string()))
        };
        let start = time("window.start", &w.start)?;
        let end = time("window.end", &w.end)?;
        if start == end {
            return Err(bad("window.end", "the window is empty (start = end)"));
        }
        let tz = jiff::tz::TimeZone::get(&w.timezone).map_err(|_| {
            bad(
                "window.timezone",
                format!(
                    "{:?} is not an IANA time zone (e.g. Europe/Berlin)",
                    w.timezone
                ),
            )
        })?;
        let mut days = Vec::new();
        for (i, d) in w.days.iter().enumerate() {
            use jiff::civil::Weekday::*;
            let day = match d.to_ascii_lowercase().as_str() {
                "mon" => Monday,
                "tue" => Tuesday,
                "wed" => Wednesday,
                "thu" => Thursday,
                "fri" => Friday,
                "sat" => Saturday,
                "sun" => Sunday,
                _ => {
                    return Err(bad(
                        format!("window.days[{i}]"),
                        format!("{d:?} is not one of mon tue wed thu fri sat sun"),
                    ));
                }
            };
            days.push(day);
        }
        Ok(Window {
            start,
            end,
            tz,
            days,
        })
    }

    /// Whether a call may start at `now`.
    fn is_open(&self, now: jiff::Timestamp) -> bool {
        let z = self.tz.to_datetime(now);
        let t = z.time();
        let day_ok = |d: jiff::civil::Weekday| self.days.is_empty() || self.days.contains(&d);
        if self.start < self.end {
            day_ok(z.weekday()) && self.start <= t && t < self.end
        } else if t >= self.start {
            // Across midnight: the evening part belongs to today's window …
            day_ok(z.weekday())
        } else {
            // … the morning part to yesterday's.
            t < self.end && day_ok(z.weekday().previous())
        }
    }
}

/// Whether `window` is open at `now` (an unparseable window never is: the campaign waits
/// and the log says why).
pub fn window_open(window: &CallingWindow, now: jiff::Timestamp) -> Result<bool, CampaignError> {
    Ok(Window::parse(window)?.is_open(now))
}

/// Runs the campaigns until voxline stops. Call [`CampaignStore::recover`] first.
pub async fn run(campaigns: Campaigns, service: CallService, agents: AgentLookup) {
    let mut window_logged: HashMap<String, bool> = HashMap::new();
    loop {
        let running = match campaigns.with(|s| s.running()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "campaigns: cannot read the running campaigns");
                Vec::new()
            }
        };
        let idle = running.is_empty();
        for c in running {
            let id = c.id.clone();
            if let Some(w) = &c.settings.window {
                match window_open(w, jiff::Timestamp::now()) {
                    Ok(true) => {
                        window_logged.remove(&id);
                    }
                    Ok(false) | Err(_) => {
                        if window_logged.insert(id.clone(), true).is_none() {
                            tracing::info!(campaign = %id, "campaign outside its calling window: waiting");
                        }
                        continue;
                    }
                }
            }
            // The limits (max_concurrent, calls_per_s) are the database's, so they hold
            // across every node dialing the campaign.
            loop {
                let cid = id.clone();
                let (max, cps) = (c.settings.max_concurrent, c.settings.calls_per_s);
                let trunk = c
                    .settings
                    .trunk
                    .as_ref()
                    .and_then(|t| campaigns.trunk_limits.get(t).cloned());
                let claimed = campaigns
                    .with(move |s| s.claim_within(&cid, UnixMs::now(), max, cps, trunk.as_ref()))
                    .await;
                let target = match claimed {
                    Ok(Some(t)) => t,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(campaign = %id, error = %e, "campaign: cannot claim a target");
                        break;
                    }
                };
                tokio::spawn(attempt(
                    campaigns.clone(),
                    service.clone(),
                    agents.clone(),
                    c.clone(),
                    target,
                ));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(if idle { IDLE_TICK } else { TICK }) => {}
            _ = campaigns.wake.notified() => {}
        }
    }
}

/// One attempt on one target: dial, wait for the end (hanging up at the ring timeout),
/// report.
async fn attempt(
    campaigns: Campaigns,
    service: CallService,
    agents: AgentLookup,
    c: Campaign,
    target: Target,
) {
    let Some((result, record_id, sip_code)) = dial_once(&service, &agents, &c, &target).await
    else {
        // The trunk is full: the target goes back, its attempt not counted.
        let (id, seq) = (c.id.clone(), target.seq);
        let delay = TRUNK_BUSY_DELAY.as_millis() as i64;
        if let Err(e) = campaigns
            .with(move |s| s.release(&id, seq, UnixMs::now(), delay))
            .await
        {
            tracing::error!(campaign = %c.id, target = target.seq, error = %e, "campaign target not released");
        }
        return;
    };
    tracing::info!(campaign = %c.id, target = target.seq, attempt = target.attempts, result = result.as_str(), "campaign attempt");
    let (id, seq) = (c.id.clone(), target.seq);
    let attempt = Attempt {
        at: UnixMs::now(),
        result,
        record_id,
        sip_code,
    };
    if let Err(e) = campaigns
        .with(move |s| s.finish_attempt(&id, seq, attempt, UnixMs::now()))
        .await
    {
        // The target stays `dialing`; the next start's recovery retries it.
        tracing::error!(campaign = %c.id, target = target.seq, error = %e, "campaign attempt not stored");
    }
    campaigns.wake();
}

/// Dials once: the result, the call's record and its final status; `None` when the trunk
/// was at its limit and no call was placed.
async fn dial_once(
    service: &CallService,
    agents: &AgentLookup,
    c: &Campaign,
    target: &Target,
) -> Option<(AttemptResult, Option<String>, Option<u16>)> {
    let Some(mut agent) = agents(c.agent.clone()).await else {
        tracing::error!(campaign = %c.id, agent = %c.agent, "campaign: its agent no longer exists");
        return Some((AttemptResult::Failed, None, None));
    };
    agent.variables = target.variables.clone();
    let trunk = c.settings.trunk.as_deref().and_then(|t| service.trunk(t));
    let uri = match target_uri(&target.number, trunk) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(campaign = %c.id, target = target.seq, error = %e, "campaign: bad target");
            return Some((AttemptResult::Failed, None, None));
        }
    };
    let dialed = service
        .dial(DialRequest {
            target: uri,
            trunk: c.settings.trunk.clone(),
            agent,
        })
        .await;
    let (call, mut done) = match dialed {
        Ok(d) => d,
        Err(crate::call::DialError::TrunkBusy(reason)) => {
            tracing::debug!(campaign = %c.id, target = target.seq, %reason, "campaign: trunk full, target back in line");
            return None;
        }
        Err(e) => {
            tracing::warn!(campaign = %c.id, target = target.seq, error = %e, "campaign: dial failed");
            return Some((AttemptResult::Failed, None, None));
        }
    };
    let record_id = service.calls.read(call, |i| i.record_id.clone());
    let ring = Duration::from_secs(u64::from(c.settings.ring_timeout_s));
    let mut timed_out = false;
    // `Some(..)`: the call ended (its outcome, or `None` when the call layer stopped);
    // `None`: it is still ringing after `ring`. `done` is awaited once more only then: a
    // oneshot receiver must not be polled after it completed.
    let ended = tokio::select! {
        r = &mut done => Some(r.ok()),
        _ = tokio::time::sleep(ring) => None,
    };
    let outcome = match ended {
        Some(o) => o,
        None => {
            let answered = service
                .calls
                .read(call, |i| i.answered_at.is_some())
                .unwrap_or(false);
            if !answered {
                timed_out = true;
                let _ = service.hangup(call).await;
            }
            done.await.ok()
        }
    };
    Some(match outcome {
        Some(o) => {
            let (r, code) = classify(&o, timed_out);
            (r, record_id, code)
        }
        // The call layer stopped (voxline is shutting down): the recovery at the next start
        // counts it as interrupted.
        None => (AttemptResult::Interrupted, record_id, None),
    })
}

/// How an attempt ended, from the call's outcome.
pub fn classify(o: &OutboundResult, ring_timed_out: bool) -> (AttemptResult, Option<u16>) {
    if o.answered {
        return (AttemptResult::Answered, Some(200));
    }
    if ring_timed_out {
        return (AttemptResult::NoAnswer, None);
    }
    match o.reason {
        EndReason::Failed(code) | EndReason::Rejected(code) => {
            let r = match code {
                486 | 600 => AttemptResult::Busy,
                408 | 480 | 487 => AttemptResult::NoAnswer,
                _ => AttemptResult::Failed,
            };
            (r, (code > 0).then_some(code))
        }
        // voxline cancelled the INVITE, and not for the ring timeout (handled above): it is
        // shutting down, or someone hung the call up through the API. Not the target's doing.
        EndReason::Cancelled => (AttemptResult::Interrupted, Some(487)),
        _ => (AttemptResult::Failed, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: &str, end: &str, days: &[&str]) -> CallingWindow {
        CallingWindow {
            start: start.into(),
            end: end.into(),
            timezone: "Europe/Berlin".into(),
            days: days.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn at(rfc3339: &str) -> jiff::Timestamp {
        rfc3339.parse().unwrap()
    }

    #[test]
    fn windows_follow_the_time_zone_days_and_midnight() {
        let office = window("09:00", "17:00", &["mon", "tue", "wed", "thu", "fri"]);
        // 2026-12-04 is a Friday; Berlin is UTC+1 in December.
        assert!(window_open(&office, at("2026-12-04T08:00:00Z")).unwrap()); // 09:00 local
        assert!(!window_open(&office, at("2026-12-04T07:59:00Z")).unwrap()); // 08:59
        assert!(!window_open(&office, at("2026-12-04T16:00:00Z")).unwrap()); // 17:00
        assert!(!window_open(&office, at("2026-12-05T10:00:00Z")).unwrap()); // Saturday
        // Summer time: 09:00 in Berlin is 07:00 UTC.
        assert!(window_open(&office, at("2026-07-01T07:00:00Z")).unwrap());
        let night = window("22:00", "02:00", &["fri"]);
        assert!(window_open(&night, at("2026-12-04T21:30:00Z")).unwrap()); // Fri 22:30
        assert!(window_open(&night, at("2026-12-05T00:30:00Z")).unwrap()); // Sat 01:30
        assert!(!window_open(&night, at("2026-12-05T21:30:00Z")).unwrap()); // Sat 22:30
    }

    #[test]
    fn bad_windows_name_the_field() {
        for (w, field) in [
            (window("9:00", "17:00", &[]), "window.start"),
            (window("09:00", "25:00", &[]), "window.end"),
            (window("09:00", "09:00", &[]), "window.end"),
            (window("09:00", "17:00", &["monday"]), "window.days[0]"),
            (
                CallingWindow {
                    timezone: "Mars/Olympus".into(),
                    ..window("09:00", "17:00", &[])
                },
                "window.timezone",
            ),
        ] {
            assert_eq!(
                window_open(&w, at("2026-12-04T08:00:00Z"))
                    .unwrap_err()
                    .field,
                field
            );
        }
    }

    #[test]
    fn outcomes_are_classified() {
        let o = |answered, reason| OutboundResult { answered, reason };
        assert_eq!(
            classify(&o(true, EndReason::RemoteBye), false).0,
            AttemptResult::Answered
        );
        assert_eq!(
            classify(&o(false, EndReason::Failed(486)), false),
            (AttemptResult::Busy, Some(486))
        );
        assert_eq!(
            classify(&o(false, EndReason::Failed(480)), false).0,
            AttemptResult::NoAnswer
        );
        assert_eq!(
            classify(&o(false, EndReason::Failed(404)), false),
            (AttemptResult::Failed, Some(404))
        );
        assert_eq!(
            classify(&o(false, EndReason::LocalBye), true).0,
            AttemptResult::NoAnswer
        );
        // Cancelled by voxline at its ring timeout: no answer; otherwise (shutting down, a
        // hang-up through the API): interrupted, not the target's doing.
        assert_eq!(
            classify(&o(false, EndReason::Cancelled), true).0,
            AttemptResult::NoAnswer
        );
        assert_eq!(
            classify(&o(false, EndReason::Cancelled), false),
            (AttemptResult::Interrupted, Some(487))
        );
    }

    #[test]
    fn numbers_go_through_the_trunk() {
        let trunk = crate::call::TrunkSpec {
            name: "pbx".into(),
            host: "pbx.example.com".into(),
            port: Some(5080),
            transport: Transport::Tcp,
            credentials: None,
            from_user: None,
            from_domain: None,
            outbound_proxy: None,
        };
        assert_eq!(
            target_uri("+4930123", Some(&trunk)).unwrap(),
            "sip:+4930123@pbx.example.com:5080;transport=tcp"
        );
        assert_eq!(target_uri("sip:a@b", None).unwrap(), "sip:a@b");
        assert!(target_uri("+49 30", Some(&trunk)).is_err());
        assert!(target_uri("+4930", None).is_err());
        assert!(target_uri("sip:a@b>", None).is_err());
    }
}
