//! DTMF key presses in the three forms a SIP peer may send them, sans-IO.
//!
//! * [`rfc4733`]: RTP `telephone-event` packets (RFC 4733): payload parsing, a receiver that
//!   reports each key press exactly once, and a sender that produces the packet sequence.
//! * [`info`]: SIP INFO bodies, `application/dtmf-relay` and `application/dtmf`.
//! * [`inband`]: tones in the audio itself, found by a Goertzel detector (ITU-T Q.23/Q.24).
//! * [`tone`]: the sending side of in-band DTMF, Q.23 tones written into outgoing frames.
//!
//! All three report a [`DtmfDigit`]. A peer may send the same key press in more than one
//! form (typically RFC 4733 *and* in-band audio, or RFC 4733 and INFO); [`DtmfDetector`]
//! drives all three receivers and reports each key press once; its rule is documented there.
//!
//! Nothing here reads the clock: every time-dependent entry point takes `now: Instant`.

pub mod inband;
pub mod info;
pub mod rfc4733;
pub mod tone;

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use self::inband::{InbandConfig, InbandDetector, InbandError};
use self::info::InfoError;
use self::rfc4733::{Rfc4733Error, Rfc4733Receiver, Rfc4733ReceiverConfig};

/// One DTMF key: `0`-`9`, `*`, `#` and `A`-`D` (ITU-T Q.23).
///
/// The discriminant is the RFC 4733 event code (RFC 4733 §3.2: 0-9, `*` = 10, `#` = 11,
/// `A`-`D` = 12-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Digit {
    /// Key `0`.
    D0 = 0,
    /// Key `1`.
    D1 = 1,
    /// Key `2`.
    D2 = 2,
    /// Key `3`.
    D3 = 3,
    /// Key `4`.
    D4 = 4,
    /// Key `5`.
    D5 = 5,
    /// Key `6`.
    D6 = 6,
    /// Key `7`.
    D7 = 7,
    /// Key `8`.
    D8 = 8,
    /// Key `9`.
    D9 = 9,
    /// Key `*`.
    Star = 10,
    /// Key `#`.
    Hash = 11,
    /// Key `A`.
    A = 12,
    /// Key `B`.
    B = 13,
    /// Key `C`.
    C = 14,
    /// Key `D`.
    D = 15,
}

/// Low-group (row) frequencies in Hz, top row first (ITU-T Q.23 §2).
pub const ROW_FREQUENCIES_HZ: [u32; 4] = [697, 770, 852, 941];

/// High-group (column) frequencies in Hz, left column first (ITU-T Q.23 §2).
pub const COLUMN_FREQUENCIES_HZ: [u32; 4] = [1209, 1336, 1477, 1633];

/// The keypad as rows x columns (ITU-T Q.23 Figure 1): `KEYPAD[row][column]`.
pub const KEYPAD: [[Digit; 4]; 4] = [
    [Digit::D1, Digit::D2, Digit::D3, Digit::A],
    [Digit::D4, Digit::D5, Digit::D6, Digit::B],
    [Digit::D7, Digit::D8, Digit::D9, Digit::C],
    [Digit::Star, Digit::D0, Digit::Hash, Digit::D],
];

impl Digit {
    /// All sixteen keys, in event-code order.
    pub const ALL: [Digit; 16] = [
        Digit::D0,
        Digit::D1,
        Digit::D2,
        Digit::D3,
        Digit::D4,
        Digit::D5,
        Digit::D6,
        Digit::D7,
        Digit::D8,
        Digit::D9,
        Digit::Star,
        Digit::Hash,
        Digit::A,
        Digit::B,
        Digit::C,
        Digit::D,
    ];

    /// The key for a character: `0`-`9`, `*`, `#`, `A`-`D` (lower case accepted).
    pub const fn from_char(c: char) -> Option<Digit> {
        Some(match c {
            '0' => Digit::D0,
            '1' => Digit::D1,
            '2' => Digit::D2,
            '3' => Digit::D3,
            '4' => Digit::D4,
            '5' => Digit::D5,
            '6' => Digit::D6,
            '7' => Digit::D7,
            '8' => Digit::D8,
            '9' => Digit::D9,
            '*' => Digit::Star,
            '#' => Digit::Hash,
            'A' | 'a' => Digit::A,
            'B' | 'b' => Digit::B,
            'C' | 'c' => Digit::C,
            'D' | 'd' => Digit::D,
            _ => return None,
        })
    }

    /// The key's character: `0`-`9`, `*`, `#`, `A`-`D`.
    pub const fn as_char(self) -> char {
        match self {
            Digit::D0 => '0',
            Digit::D1 => '1',
            Digit::D2 => '2',
            Digit::D3 => '3',
            Digit::D4 => '4',
            Digit::D5 => '5',
            Digit::D6 => '6',
            Digit::D7 => '7',
            Digit::D8 => '8',
            Digit::D9 => '9',
            Digit::Star => '*',
            Digit::Hash => '#',
            Digit::A => 'A',
            Digit::B => 'B',
            Digit::C => 'C',
            Digit::D => 'D',
        }
    }

    /// The key for an RFC 4733 event code (RFC 4733 §3.2), or `None` for codes above 15
    /// (flash and non-DTMF events).
    pub const fn from_event_code(code: u8) -> Option<Digit> {
        if code < 16 {
            // invariant: `code < 16` and `ALL` has 16 entries.
            Some(Digit::ALL[code as usize])
        } else {
            None
        }
    }

    /// The RFC 4733 event code of this key (RFC 4733 §3.2).
    pub const fn event_code(self) -> u8 {
        self as u8
    }

    /// The key's keypad position: `(row, column)`, each 0..=3 (see [`KEYPAD`]).
    pub const fn position(self) -> (usize, usize) {
        match self {
            Digit::D1 => (0, 0),
            Digit::D2 => (0, 1),
            Digit::D3 => (0, 2),
            Digit::A => (0, 3),
            Digit::D4 => (1, 0),
            Digit::D5 => (1, 1),
            Digit::D6 => (1, 2),
            Digit::B => (1, 3),
            Digit::D7 => (2, 0),
            Digit::D8 => (2, 1),
            Digit::D9 => (2, 2),
            Digit::C => (2, 3),
            Digit::Star => (3, 0),
            Digit::D0 => (3, 1),
            Digit::Hash => (3, 2),
            Digit::D => (3, 3),
        }
    }

    /// The key's two tone frequencies in Hz: `(low group, high group)` (ITU-T Q.23).
    pub const fn frequencies_hz(self) -> (u32, u32) {
        let (row, col) = self.position();
        // invariant: `position` returns indices 0..=3 and both tables have 4 entries.
        (ROW_FREQUENCIES_HZ[row], COLUMN_FREQUENCIES_HZ[col])
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// A string or character that is not a DTMF key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a DTMF key: '{0}' (expected one of 0-9 * # A-D)")]
pub struct ParseDigitError(pub String);

impl FromStr for Digit {
    type Err = ParseDigitError;

    /// Parses exactly one key character (no surrounding space).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Digit::from_char(c).ok_or_else(|| ParseDigitError(s.to_owned())),
            _ => Err(ParseDigitError(s.to_owned())),
        }
    }
}

impl TryFrom<char> for Digit {
    type Error = ParseDigitError;

    fn try_from(c: char) -> Result<Self, Self::Error> {
        Digit::from_char(c).ok_or_else(|| ParseDigitError(c.to_string()))
    }
}

/// How a key press reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfMethod {
    /// RTP `telephone-event` packets (RFC 4733).
    Rfc4733,
    /// A SIP INFO request (`application/dtmf-relay` or `application/dtmf`).
    SipInfo,
    /// Tones in the audio stream (ITU-T Q.23), found by [`inband::InbandDetector`].
    InBand,
}

impl DtmfMethod {
    const fn index(self) -> usize {
        match self {
            DtmfMethod::Rfc4733 => 0,
            DtmfMethod::SipInfo => 1,
            DtmfMethod::InBand => 2,
        }
    }
}

impl fmt::Display for DtmfMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DtmfMethod::Rfc4733 => "rfc4733",
            DtmfMethod::SipInfo => "info",
            DtmfMethod::InBand => "inband",
        })
    }
}

/// One key press, as reported by any of the three receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// The key.
    pub digit: Digit,
    /// How it was received.
    pub method: DtmfMethod,
    /// How long the key was held, in milliseconds, as the method tells it: the RFC 4733
    /// duration field, the INFO `Duration=` (or its default), the measured tone length.
    pub duration_ms: u32,
    /// When the key press began, as well as the receiver can tell: for RFC 4733 the arrival
    /// of the first packet seen minus the duration it already reported; for in-band the
    /// first sample of the tone; for INFO the arrival of the request.
    pub at: Instant,
}

impl DtmfDigit {
    /// When the key press ended: `at + duration_ms` (or `at`, if that is beyond what an
    /// `Instant` can hold).
    pub fn end(&self) -> Instant {
        self.at
            .checked_add(Duration::from_millis(u64::from(self.duration_ms)))
            .unwrap_or(self.at)
    }
}

/// Default for [`DtmfDetectorConfig::dedup_window`].
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_millis(500);

/// Settings of a [`DtmfDetector`].
#[derive(Debug, Clone, PartialEq)]
pub struct DtmfDetectorConfig {
    /// How far apart (gap between the two key-press intervals) two reports of the same key by
    /// different methods may be and still be taken as one key press. INFO requests travel
    /// through SIP proxies and may lag the media by a few hundred milliseconds.
    pub dedup_window: Duration,
    /// The RFC 4733 receiver's settings.
    pub rfc4733: Rfc4733ReceiverConfig,
    /// The in-band detector's settings, or `None` not to look at the audio at all.
    pub inband: Option<InbandConfig>,
}

impl Default for DtmfDetectorConfig {
    fn default() -> Self {
        Self {
            dedup_window: DEFAULT_DEDUP_WINDOW,
            rfc4733: Rfc4733ReceiverConfig::default(),
            inband: Some(InbandConfig::default()),
        }
    }
}

/// Why a [`DtmfDetector`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DtmfConfigError {
    /// The RFC 4733 settings are unusable.
    #[error(transparent)]
    Rfc4733(#[from] Rfc4733Error),
    /// The in-band settings are unusable.
    #[error(transparent)]
    Inband(#[from] InbandError),
}

/// All three DTMF receivers of one call behind one object, reporting each key press once.
///
/// # De-duplication rule
///
/// Each method's own receiver already reports each key press once. A report is dropped here
/// only when an *earlier accepted* report of the **same key** by a **different method**
/// describes an overlapping key press: the two intervals `[at, at + duration]` overlap once
/// each is widened by [`DtmfDetectorConfig::dedup_window`]. Each accepted key press absorbs
/// at most one report per other method, so a key pressed twice quickly and sent by two
/// methods still gives two key presses: the second report of a method matches the second
/// press. Reports of the same method are never merged (the same key pressed twice arrives
/// as two reports of one method). Whichever method reports first wins; nothing is delayed.
///
/// Limitation: if one method misses a press entirely, a later press of the same key within
/// the window may be absorbed by the earlier press's record; for the peers this is built
/// for (RFC 4733 plus in-band or INFO copies of every press), that does not happen.
#[derive(Debug)]
pub struct DtmfDetector {
    rfc4733: Rfc4733Receiver,
    inband: Option<InbandDetector>,
    dedup: Dedup,
}

impl DtmfDetector {
    /// A detector with these settings.
    pub fn new(config: DtmfDetectorConfig) -> Result<Self, DtmfConfigError> {
        let rfc4733 = Rfc4733Receiver::new(config.rfc4733)?;
        let inband = match config.inband {
            Some(c) => Some(InbandDetector::new(c)?),
            None => None,
        };
        Ok(Self {
            rfc4733,
            inband,
            dedup: Dedup::new(config.dedup_window),
        })
    }

    /// Feeds one RTP packet of the negotiated `telephone-event` payload type.
    pub fn handle_rtp_event(
        &mut self,
        now: Instant,
        rtp_timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<DtmfDigit>, Rfc4733Error> {
        let digit = self.rfc4733.handle(now, rtp_timestamp, marker, payload)?;
        Ok(digit.and_then(|d| self.dedup.report(d)))
    }

    /// The RTP stream restarted (new SSRC or sequence restart): the RFC 4733 receiver forgets
    /// the old stream's timestamps (see [`Rfc4733Receiver::new_stream`]).
    pub fn new_rtp_stream(&mut self) {
        self.rfc4733.new_stream();
    }

    /// Feeds decoded audio (at the in-band detector's sample rate); `now` is the capture
    /// time of `samples[0]`. Returns nothing when in-band detection is off.
    pub fn handle_audio(&mut self, now: Instant, samples: &[i16]) -> Vec<DtmfDigit> {
        let Some(inband) = self.inband.as_mut() else {
            return Vec::new();
        };
        let found = inband.process(now, samples);
        found
            .into_iter()
            .filter_map(|d| self.dedup.report(d))
            .collect()
    }

    /// Feeds the body of a SIP INFO request received at `now`.
    pub fn handle_info(
        &mut self,
        now: Instant,
        content_type: &str,
        body: &[u8],
    ) -> Result<Option<DtmfDigit>, InfoError> {
        let info = info::parse_info_body(content_type, body)?;
        Ok(self.dedup.report(info.to_dtmf_digit(now)))
    }

    /// Reports a key press found elsewhere, under the same de-duplication rule.
    pub fn report(&mut self, digit: DtmfDigit) -> Option<DtmfDigit> {
        self.dedup.report(digit)
    }

    /// Call at (or after) [`poll_timeout`](Self::poll_timeout): reports an RFC 4733 key
    /// press whose end packets were lost. Call again while it returns `Some`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DtmfDigit> {
        while let Some(d) = self.rfc4733.handle_timeout(now) {
            if let Some(d) = self.dedup.report(d) {
                return Some(d);
            }
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rfc4733.poll_timeout()
    }

    /// Call when the audio stops (hold, end of call): reports a key press whose tone was
    /// still under way, and restarts the in-band detector for the next audio.
    pub fn end_audio(&mut self) -> Option<DtmfDigit> {
        let found = self.inband.as_mut()?.flush()?;
        self.dedup.report(found)
    }
}

/// One accepted key press, remembered for de-duplication.
#[derive(Debug, Clone, Copy)]
struct Press {
    digit: Digit,
    start: Instant,
    end: Instant,
    /// Which methods have reported this press, by [`DtmfMethod::index`].
    seen: [bool; 3],
}

/// How many accepted presses [`Dedup`] remembers at most.
const DEDUP_MEMORY: usize = 64;

/// The de-duplication rule of [`DtmfDetector`].
#[derive(Debug)]
struct Dedup {
    window: Duration,
    recent: VecDeque<Press>,
}

impl Dedup {
    fn new(window: Duration) -> Self {
        Self {
            window,
            recent: VecDeque::new(),
        }
    }

    fn report(&mut self, d: DtmfDigit) -> Option<DtmfDigit> {
        let (start, end) = (d.at, d.end());
        let m = d.method.index();
        let window = self.window;
        // Forget presses that ended long before this one began.
        let memory = window
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(1));
        self.recent
            .retain(|p| p.end.checked_add(memory).is_none_or(|t| t >= start));
        let matching = self.recent.iter_mut().find(|p| {
            p.digit == d.digit
                && !p.seen[m]
                && end.checked_add(window).is_none_or(|t| p.start <= t)
                && p.end.checked_add(window).is_none_or(|t| start <= t)
        });
        if let Some(p) = matching {
            p.seen[m] = true;
            return None;
        }
        if self.recent.len() >= DEDUP_MEMORY {
            self.recent.pop_front();
        }
        let mut seen = [false; 3];
        seen[m] = true;
        self.recent.push_back(Press {
            digit: d.digit,
            start,
            end,
            seen,
        });
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_round_trips_through_char_event_code_and_keypad() {
        for d in Digit::ALL {
            assert_eq!(Digit::from_char(d.as_char()), Some(d));
            assert_eq!(Digit::from_event_code(d.event_code()), Some(d));
            assert_eq!(d.to_string().parse::<Digit>(), Ok(d));
            let (r, c) = d.position();
            assert_eq!(KEYPAD[r][c], d);
        }
        assert_eq!(Digit::from_event_code(16), None);
        assert_eq!("a".parse::<Digit>(), Ok(Digit::A));
        assert!("55".parse::<Digit>().is_err());
        assert!("".parse::<Digit>().is_err());
        assert!("x".parse::<Digit>().is_err());
        assert_eq!(Digit::D5.frequencies_hz(), (770, 1336));
        assert_eq!(Digit::Hash.frequencies_hz(), (941, 1477));
        assert_eq!(Digit::Star.event_code(), 10);
        assert_eq!(Digit::D.event_code(), 15);
    }

    fn press(digit: Digit, method: DtmfMethod, at: Instant, ms: u32) -> DtmfDigit {
        DtmfDigit {
            digit,
            method,
            duration_ms: ms,
            at,
        }
    }

    #[test]
    fn dedup_merges_other_methods_but_not_repeats() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Dedup::new(Duration::from_millis(200));
        // Key 5 pressed twice, each sent by RFC 4733 and in band.
        assert!(
            d.report(press(Digit::D5, DtmfMethod::Rfc4733, ms(0), 100))
                .is_some()
        );
        assert!(
            d.report(press(Digit::D5, DtmfMethod::InBand, ms(10), 95))
                .is_none()
        );
        assert!(
            d.report(press(Digit::D5, DtmfMethod::Rfc4733, ms(200), 100))
                .is_some()
        );
        assert!(
            d.report(press(Digit::D5, DtmfMethod::InBand, ms(205), 90))
                .is_none()
        );
        // A different key is never merged.
        assert!(
            d.report(press(Digit::D6, DtmfMethod::InBand, ms(400), 90))
                .is_some()
        );
        // Far apart: a new press.
        assert!(
            d.report(press(Digit::D5, DtmfMethod::InBand, ms(2000), 90))
                .is_some()
        );
        // INFO 160 ms after the press ended (window 200 ms): the same press.
        assert!(
            d.report(press(Digit::D5, DtmfMethod::SipInfo, ms(2250), 250))
                .is_none()
        );
        // That press already has its INFO copy: a second INFO is a new press.
        assert!(
            d.report(press(Digit::D5, DtmfMethod::SipInfo, ms(2900), 250))
                .is_some()
        );
    }
}
