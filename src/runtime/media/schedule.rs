//! When each call on a media worker next needs the worker: the tick grid, the wake-up queue
//! and the calls removed before they were added. Pure code (no clock, no I/O), so the tests
//! below drive it with made-up instants.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::sip::CallHandle;

/// The grid every call's tick schedule starts on: points `step` apart from `epoch`. Calls on
/// one grid share their deadlines, so one wake-up serves them all.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grid {
    epoch: Instant,
    step: Duration,
}

impl Grid {
    /// A grid of points `step` apart, counted from `epoch`.
    pub(super) fn new(epoch: Instant, step: Duration) -> Self {
        Self {
            epoch,
            step: step.max(Duration::from_nanos(1)),
        }
    }

    /// The first grid point at or after `t` (the epoch for anything before it).
    pub(super) fn at_or_after(&self, t: Instant) -> Instant {
        // In u64 nanoseconds (584 years), not `as_nanos`'s u128: this runs for every call
        // served.
        let since = t.saturating_duration_since(self.epoch);
        let since = since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()));
        let g = u64::try_from(self.step.as_nanos()).unwrap_or(u64::MAX);
        self.epoch + Duration::from_nanos(since.div_ceil(g).saturating_mul(g))
    }
}

/// When a call next needs service: its next frame tick, or sooner the grid point at or after
/// its next other deadline (RTCP, statistics, timeouts), so that these never cost a wake-up
/// of their own.
pub(super) fn service_at(grid: &Grid, next_tick: Option<Instant>, other: Instant) -> Instant {
    let other = grid.at_or_after(other);
    match next_tick {
        Some(tick) => tick.min(other),
        None => other,
    }
}

/// When the worker must next look at a call: at its service, or sooner to pump a live
/// backend's events (`pump`).
pub(super) fn next_wake(service: Instant, pump: Option<Instant>) -> Instant {
    match pump {
        Some(p) => service.min(p),
        None => service,
    }
}

/// Most emptied lists a [`WakeQueue`] keeps for reuse.
const SPARE_LISTS: usize = 8;

/// The slots of every scheduled call by wake-up time. Calls tick on a shared grid, so a few
/// times hold all the calls: queuing a call is a push onto its time's list.
#[derive(Debug, Default)]
pub(super) struct WakeQueue {
    queue: BTreeMap<Instant, Vec<usize>>,
    /// Emptied lists, for reuse.
    spare: Vec<Vec<usize>>,
}

impl WakeQueue {
    /// Queues `slot` to wake at `at`.
    pub(super) fn insert(&mut self, at: Instant, slot: usize) {
        let spare = &mut self.spare;
        self.queue
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(slot);
    }

    /// Takes `slot`'s wake-up at `at` out of the queue (before its deadline changes).
    pub(super) fn remove(&mut self, at: Instant, slot: usize) {
        if let Some(list) = self.queue.get_mut(&at)
            && let Some(i) = list.iter().position(|&s| s == slot)
        {
            list.swap_remove(i);
            if list.is_empty()
                && let Some(list) = self.queue.remove(&at)
                && self.spare.len() < SPARE_LISTS
            {
                self.spare.push(list);
            }
        }
    }

    /// The earliest wake-up queued.
    pub(super) fn next(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|(&t, _)| t)
    }

    /// Moves the slots due at `now` out of the queue into `due`, earliest first (they must
    /// be queued again after service).
    pub(super) fn take_due(&mut self, now: Instant, due: &mut Vec<usize>) {
        while let Some(entry) = self.queue.first_entry()
            && *entry.key() <= now
        {
            let mut list = entry.remove();
            due.append(&mut list);
            if self.spare.len() < SPARE_LISTS {
                self.spare.push(list);
            }
        }
    }
}

/// Calls removed before their media reached the worker. Starting a call's media hands back
/// its handle at once but sends the call to its worker only once the call layer has prepared
/// it (a play agent reads its file), so a BYE right after the 200 can drop the handle (and
/// send `Remove`) first; the `Add` that follows must then end the media instead of starting
/// it (it used to run, and hold its ports, until the RTP timeout hung up the already-ended
/// call). Bounded: a `Remove` whose `Add` never comes is forgotten after [`EARLY_REMOVALS`]
/// others.
#[derive(Debug, Default)]
pub(super) struct EarlyRemovals {
    calls: VecDeque<CallHandle>,
}

/// How many early removals a worker remembers.
pub(super) const EARLY_REMOVALS: usize = 1024;

impl EarlyRemovals {
    /// Remembers that `call` was removed before it was added.
    pub(super) fn note(&mut self, call: CallHandle) {
        if self.calls.len() >= EARLY_REMOVALS {
            self.calls.pop_front();
        }
        self.calls.push_back(call);
    }

    /// Whether `call` was removed before it was added (and forgets it).
    pub(super) fn take(&mut self, call: CallHandle) -> bool {
        match self.calls.iter().position(|&c| c == call) {
            Some(i) => {
                self.calls.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grid_points_round_up_to_the_step() {
        let e = Instant::now();
        let g = Grid::new(e, 20 * MS);
        assert_eq!(g.at_or_after(e), e);
        assert_eq!(g.at_or_after(e + MS), e + 20 * MS);
        assert_eq!(g.at_or_after(e + 20 * MS), e + 20 * MS);
        assert_eq!(g.at_or_after(e + 21 * MS), e + 40 * MS);
        // Before the epoch: the epoch.
        if let Some(before) = e.checked_sub(5 * MS) {
            assert_eq!(g.at_or_after(before), e);
        }
    }

    #[test]
    fn service_is_the_tick_or_the_grid_point_after_another_deadline() {
        let e = Instant::now();
        let g = Grid::new(e, 20 * MS);
        // The tick comes first.
        assert_eq!(service_at(&g, Some(e + 20 * MS), e + 500 * MS), e + 20 * MS);
        // An RTCP deadline between ticks is served at the grid point after it, not on its own.
        assert_eq!(service_at(&g, Some(e + 60 * MS), e + 25 * MS), e + 40 * MS);
        // Not sending (hold): only the other deadlines, on the grid.
        assert_eq!(service_at(&g, None, e + 999 * MS), e + 1000 * MS);
    }

    #[test]
    fn a_pump_wakes_the_call_before_its_service() {
        let e = Instant::now();
        assert_eq!(next_wake(e + 20 * MS, Some(e + 5 * MS)), e + 5 * MS);
        assert_eq!(next_wake(e + 20 * MS, Some(e + 25 * MS)), e + 20 * MS);
        assert_eq!(next_wake(e + 20 * MS, None), e + 20 * MS);
    }

    #[test]
    fn the_queue_hands_out_only_the_calls_due_earliest_first() {
        let e = Instant::now();
        let mut q = WakeQueue::default();
        assert_eq!(q.next(), None);
        q.insert(e + 40 * MS, 3);
        q.insert(e + 20 * MS, 1);
        q.insert(e + 20 * MS, 2);
        q.insert(e + 60 * MS, 4);
        assert_eq!(q.next(), Some(e + 20 * MS));
        let mut due = Vec::new();
        q.take_due(e + 10 * MS, &mut due);
        assert!(due.is_empty(), "nothing is due before its time");
        q.take_due(e + 40 * MS, &mut due);
        assert_eq!(due, vec![1, 2, 3]);
        assert_eq!(q.next(), Some(e + 60 * MS));
    }

    #[test]
    fn a_removed_wake_up_does_not_fire() {
        let e = Instant::now();
        let mut q = WakeQueue::default();
        q.insert(e + 20 * MS, 1);
        q.insert(e + 20 * MS, 2);
        q.insert(e + 40 * MS, 3);
        q.remove(e + 20 * MS, 1);
        // Removing what is not there changes nothing.
        q.remove(e + 40 * MS, 9);
        q.remove(e + 80 * MS, 3);
        q.remove(e + 40 * MS, 3);
        assert_eq!(q.next(), Some(e + 20 * MS));
        let mut due = Vec::new();
        q.take_due(e + 100 * MS, &mut due);
        assert_eq!(due, vec![2]);
        assert_eq!(q.next(), None);
    }

    #[test]
    fn a_call_removed_before_it_is_added_is_remembered_once() {
        let mut early = EarlyRemovals::default();
        let call = CallHandle(7);
        assert!(!early.take(call), "nothing noted yet");
        early.note(call);
        assert!(
            early.take(call),
            "the Add after an early Remove is recognised"
        );
        assert!(!early.take(call), "and only once");
        // Bounded: the oldest is forgotten.
        for n in 0..EARLY_REMOVALS as u64 + 1 {
            early.note(CallHandle(100 + n));
        }
        assert!(!early.take(CallHandle(100)));
        assert!(early.take(CallHandle(101)));
    }
}
