//! The few calls of speexdsp's echo canceller and preprocessor this comparison needs,
//! declared by hand from Debian's `<speex/speex_echo.h>` and `<speex/speex_preprocess.h>`
//! (the `speexdsp` crate's bindings need bindgen 0.37 and libclang at build time).

use std::ffi::{c_int, c_void};

#[link(name = "speexdsp")]
unsafe extern "C" {
    fn speex_echo_state_init(frame_size: c_int, filter_length: c_int) -> *mut c_void;
    fn speex_echo_state_destroy(st: *mut c_void);
    fn speex_echo_cancellation(st: *mut c_void, rec: *const i16, play: *const i16, out: *mut i16);
    fn speex_echo_ctl(st: *mut c_void, request: c_int, ptr: *mut c_void) -> c_int;
    fn speex_preprocess_state_init(frame_size: c_int, sampling_rate: c_int) -> *mut c_void;
    fn speex_preprocess_state_destroy(st: *mut c_void);
    fn speex_preprocess_ctl(st: *mut c_void, request: c_int, ptr: *mut c_void) -> c_int;
    fn speex_preprocess_run(st: *mut c_void, x: *mut i16) -> c_int;
}

/// `speex_echo.h`: set the sampling rate.
const SPEEX_ECHO_SET_SAMPLING_RATE: c_int = 24;
/// `speex_preprocess.h`: noise suppression on/off.
const SPEEX_PREPROCESS_SET_DENOISE: c_int = 0;
/// `speex_preprocess.h`: the echo state for residual echo suppression.
const SPEEX_PREPROCESS_SET_ECHO_STATE: c_int = 24;

/// speexdsp's MDF echo canceller, optionally followed by its residual echo suppressor.
pub struct SpeexEcho {
    echo: *mut c_void,
    pre: Option<*mut c_void>,
    out: Vec<i16>,
}

impl SpeexEcho {
    /// A canceller for `frame` samples at `rate` with a filter of `taps` samples; with
    /// `suppress`, the preprocessor's residual echo suppression after it (its noise
    /// suppression off).
    pub fn new(frame: usize, taps: usize, rate: u32, suppress: bool) -> Option<SpeexEcho> {
        let frame_c = c_int::try_from(frame).ok()?;
        let taps = c_int::try_from(taps).ok()?;
        let mut rate_c = c_int::try_from(rate).ok()?;
        // SAFETY: plain constructor calls; null is checked; the ctl pointers point at live
        // ints of the type the header documents.
        unsafe {
            let echo = speex_echo_state_init(frame_c, taps);
            if echo.is_null() {
                return None;
            }
            speex_echo_ctl(
                echo,
                SPEEX_ECHO_SET_SAMPLING_RATE,
                (&mut rate_c as *mut c_int).cast(),
            );
            let pre = if suppress {
                let pre = speex_preprocess_state_init(frame_c, rate_c);
                if pre.is_null() {
                    speex_echo_state_destroy(echo);
                    return None;
                }
                let mut off: c_int = 0;
                speex_preprocess_ctl(
                    pre,
                    SPEEX_PREPROCESS_SET_DENOISE,
                    (&mut off as *mut c_int).cast(),
                );
                speex_preprocess_ctl(pre, SPEEX_PREPROCESS_SET_ECHO_STATE, echo);
                Some(pre)
            } else {
                None
            };
            Some(SpeexEcho {
                echo,
                pre,
                out: vec![0; frame],
            })
        }
    }

    /// Cancels `reference`'s echo from `capture` in place; both are one frame long.
    pub fn process(&mut self, reference: &[i16], capture: &mut [i16]) {
        assert_eq!(reference.len(), self.out.len());
        assert_eq!(capture.len(), self.out.len());
        // SAFETY: all three buffers hold exactly the frame size the state was made for.
        unsafe {
            speex_echo_cancellation(
                self.echo,
                capture.as_ptr(),
                reference.as_ptr(),
                self.out.as_mut_ptr(),
            );
            if let Some(pre) = self.pre {
                speex_preprocess_run(pre, self.out.as_mut_ptr());
            }
        }
        capture.copy_from_slice(&self.out);
    }
}

impl Drop for SpeexEcho {
    fn drop(&mut self) {
        // SAFETY: the states were made by the matching init calls and are freed once.
        unsafe {
            if let Some(pre) = self.pre {
                speex_preprocess_state_destroy(pre);
            }
            speex_echo_state_destroy(self.echo);
        }
    }
}
