//! Speech synthesis with libespeak-ng, loaded at run time.
//!
//! [`synthesize`] speaks a text with a voice (`en-us`, `de`, `fr`…) and returns PCM16 at
//! espeak-ng's rate (22 050 Hz). The library (`libespeak-ng.so.1`) is opened with `dlopen` the
//! first time it is needed; espeak-ng keeps global state, so synthesis is serialized by a lock
//! and runs in espeak-ng's synchronous mode, whose callback runs on the calling thread. Call it
//! from a blocking context (it takes some milliseconds per sentence).

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::sync::{Mutex, OnceLock};

use libloading::Library;

/// The library's file name on Debian and most Linux distributions.
pub const LIBRARY: &str = "libespeak-ng.so.1";
/// The longest text accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// `AUDIO_OUTPUT_SYNCHRONOUS`: audio through the callback, `espeak_Synth` returns when done.
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
/// `POS_CHARACTER`.
const POS_CHARACTER: c_int = 1;
/// `espeakCHARS_UTF8`.
const CHARS_UTF8: c_uint = 1;
/// `espeakRATE`.
const PARAM_RATE: c_int = 1;
/// `EE_OK`.
const EE_OK: c_int = 0;
/// Audio buffers of this many ms reach the callback.
const BUFFER_MS: c_int = 100;

/// Speech: mono PCM16 samples at `sample_rate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speech {
    /// The samples.
    pub samples: Vec<i16>,
    /// Their rate in Hz.
    pub sample_rate: u32,
}

/// Why speech could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EspeakError {
    /// The library could not be loaded (not installed: `apt-get install libespeak-ng1`).
    #[error("cannot load {LIBRARY} (install espeak-ng): {0}")]
    Load(String),
    /// `espeak_Initialize` failed (its data, `espeak-ng-data`, is missing).
    #[error("espeak-ng cannot start (is espeak-ng-data installed?)")]
    Init,
    /// No such voice.
    #[error("espeak-ng has no voice {0:?}")]
    Voice(String),
    /// The text is longer than [`MAX_TEXT_CHARS`].
    #[error("the text is longer than {MAX_TEXT_CHARS} characters")]
    TooLong,
    /// `espeak_Synth` failed with this code.
    #[error("espeak-ng failed to synthesize (error {0})")]
    Synth(i32),
}

type InitializeFn = unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int;
type Callback = extern "C" fn(*mut i16, c_int, *mut c_void) -> c_int;
type SetCallbackFn = unsafe extern "C" fn(Callback);
type SetVoiceFn = unsafe extern "C" fn(*const c_char) -> c_int;
type SetParameterFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type SynthFn = unsafe extern "C" fn(
    *const c_void,
    usize,
    c_uint,
    c_int,
    c_uint,
    c_uint,
    *mut c_uint,
    *mut c_void,
) -> c_int;

/// The loaded library and its functions.
struct Engine {
    // Kept alive as long as the function pointers below are used (for the process).
    _lib: Library,
    set_voice: SetVoiceFn,
    set_parameter: SetParameterFn,
    synth: SynthFn,
    sample_rate: u32,
}

static ENGINE: OnceLock<Result<Engine, EspeakError>> = OnceLock::new();
/// espeak-ng keeps global state: one synthesis at a time.
static LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// The samples of the synthesis running on this thread (synchronous mode calls back on
    /// the caller's thread).
    static SAMPLES: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
}

extern "C" fn on_audio(wav: *mut i16, count: c_int, _events: *mut c_void) -> c_int {
    if wav.is_null() || count <= 0 {
        return 0;
    }
    let Ok(n) = usize::try_from(count) else {
        return 0;
    };
    // SAFETY: espeak-ng passes `count` valid samples at `wav` for the duration of the call.
    let samples = unsafe { std::slice::from_raw_parts(wav, n) };
    SAMPLES.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            s.extend_from_slice(samples);
        }
    });
    0
}

fn load() -> Result<Engine, EspeakError> {
    // SAFETY: loading libespeak-ng runs no initialisers with preconditions of ours.
    let lib = unsafe { Library::new(LIBRARY) }.map_err(|e| EspeakError::Load(e.to_string()))?;
    let load_err = |e: libloading::Error| EspeakError::Load(e.to_string());
    // SAFETY: the symbols have the C signatures of speak_lib.h (API revision 12), which the
    // types above spell out.
    unsafe {
        let initialize: InitializeFn = *lib.get(b"espeak_Initialize\0").map_err(load_err)?;
        let set_callback: SetCallbackFn =
            *lib.get(b"espeak_SetSynthCallback\0").map_err(load_err)?;
        let set_voice: SetVoiceFn = *lib.get(b"espeak_SetVoiceByName\0").map_err(load_err)?;
        let set_parameter: SetParameterFn = *lib.get(b"espeak_SetParameter\0").map_err(load_err)?;
        let synth: SynthFn = *lib.get(b"espeak_Synth\0").map_err(load_err)?;
        // 0x8000: do not exit the process when the data is missing (return -1 instead).
        let rate = initialize(
            AUDIO_OUTPUT_SYNCHRONOUS,
            BUFFER_MS,
            std::ptr::null(),
            0x8000,
        );
        let sample_rate = u32::try_from(rate)
            .ok()
            .filter(|r| *r > 0)
            .ok_or(EspeakError::Init)?;
        set_callback(on_audio);
        Ok(Engine {
            _lib: lib,
            set_voice,
            set_parameter,
            synth,
            sample_rate,
        })
    }
}

/// Whether the library loads and starts (loading it if not done yet).
pub fn available() -> Result<u32, EspeakError> {
    match ENGINE.get_or_init(load) {
        Ok(e) => Ok(e.sample_rate),
        Err(e) => Err(e.clone()),
    }
}

/// Speaks `text` with `voice` at `rate_wpm` words per minute (80–450; `None`: espeak-ng's
/// default, 175).
pub fn synthesize(voice: &str, rate_wpm: Option<u32>, text: &str) -> Result<Speech, EspeakError> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(EspeakError::TooLong);
    }
    let engine = match ENGINE.get_or_init(load) {
        Ok(e) => e,
        Err(e) => return Err(e.clone()),
    };
    // A NUL inside would end the C string early.
    let c_text = CString::new(text.replace('\0', " ")).map_err(|_| EspeakError::Synth(-1))?;
    let c_voice = CString::new(voice).map_err(|_| EspeakError::Voice(voice.to_owned()))?;
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    SAMPLES.with(|s| s.borrow_mut().clear());
    // SAFETY: the engine is initialised; the strings are NUL-terminated and outlive the
    // calls; synchronous mode returns only when synthesis is complete, so nothing keeps the
    // pointers afterwards; the lock keeps other threads out of espeak-ng's global state.
    unsafe {
        if (engine.set_voice)(c_voice.as_ptr()) != EE_OK {
            return Err(EspeakError::Voice(voice.to_owned()));
        }
        let rate = rate_wpm.map_or(175, |r| r.clamp(80, 450));
        (engine.set_parameter)(PARAM_RATE, c_int::try_from(rate).unwrap_or(175), 0);
        let bytes = c_text.as_bytes_with_nul();
        let code = (engine.synth)(
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            POS_CHARACTER,
            0,
            CHARS_UTF8,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        if code != EE_OK {
            return Err(EspeakError::Synth(code));
        }
    }
    let samples = SAMPLES.with(|s| std::mem::take(&mut *s.borrow_mut()));
    Ok(Speech {
        samples,
        sample_rate: engine.sample_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // These need libespeak-ng1 and espeak-ng-data (installed by .ci/run with espeak-ng).
    #[test]
    fn speaks_a_sentence_at_its_rate() {
        let s = synthesize("en-us", None, "One moment, please.").unwrap();
        assert_eq!(s.sample_rate, 22050);
        let secs = s.samples.len() as f64 / f64::from(s.sample_rate);
        assert!((0.5..3.0).contains(&secs), "{secs} s");
        let loud = s.samples.iter().filter(|x| x.unsigned_abs() > 1000).count();
        assert!(loud > s.samples.len() / 10, "mostly silent");
        // Faster speech is shorter.
        let fast = synthesize("en-us", Some(350), "One moment, please.").unwrap();
        assert!(fast.samples.len() < s.samples.len());
    }

    #[test]
    fn bad_input_is_an_error_not_a_crash() {
        assert_eq!(
            synthesize("xx-no-such-voice", None, "hello"),
            Err(EspeakError::Voice("xx-no-such-voice".into()))
        );
        assert_eq!(
            synthesize("en", None, &"a".repeat(MAX_TEXT_CHARS + 1)),
            Err(EspeakError::TooLong)
        );
        // A NUL in the text does not cut it short, and threads take turns.
        let t: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| synthesize("en", None, "one\0two").unwrap()))
            .collect();
        for h in t {
            assert!(!h.join().unwrap().samples.is_empty());
        }
    }
}
