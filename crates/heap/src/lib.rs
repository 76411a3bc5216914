//! Giving a burst's heap back to the OS under glibc: voxline's only foreign calls, in their
//! own crate so that the `voxline` package can forbid unsafe code (`[lints]` in its
//! Cargo.toml). Elsewhere than Linux with glibc both functions do nothing.
//!
//! Why voxline needs them (docs/PERFORMANCE.md, "Memory under a SIP flood"): glibc keeps the
//! memory a flood's transactions freed in its arenas, and left dynamic it raises its trim
//! threshold to twice the largest mmapped block freed (up to 64 MiB), so the free top of a
//! thread's arena, which `malloc_trim` does not trim, stayed resident (19 MiB).

/// glibc's `M_TRIM_THRESHOLD` (malloc.h).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const M_TRIM_THRESHOLD: std::os::raw::c_int = -1;

/// The trim threshold [`fix_trim_threshold`] sets: glibc's own initial value, 128 KiB.
pub const TRIM_THRESHOLD: usize = 128 * 1024;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" {
    fn mallopt(param: std::os::raw::c_int, value: std::os::raw::c_int) -> std::os::raw::c_int;
    fn malloc_trim(pad: usize) -> std::os::raw::c_int;
}

/// Fixes glibc's trim threshold at [`TRIM_THRESHOLD`] (which also pins the mmap threshold at
/// its 128 KiB, mallopt(3)), so a free arena top above it goes back to the OS when freed.
/// `true` if glibc accepted it. Call it first thing in `main`.
pub fn fix_trim_threshold() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // invariant: 128 KiB fits a C int.
        let value = std::os::raw::c_int::try_from(TRIM_THRESHOLD).unwrap_or(i32::MAX);
        // SAFETY: mallopt takes no pointers and may be called at any time (mallopt(3)).
        unsafe { mallopt(M_TRIM_THRESHOLD, value) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// `malloc_trim(0)`: returns the free memory of every malloc arena to the OS; `true` if some
/// was released. It walks every arena under its lock: run it off the async threads.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers, locks each arena itself and may be called
        // from any thread at any time (malloc(3)).
        unsafe { malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_the_threshold_and_trims() {
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(fix_trim_threshold());
            // A freed 8 MiB block (mmapped, then unmapped) leaves nothing to trim or
            // something: either answer is fine, the call must simply work.
            drop(vec![1u8; 8 << 20]);
            let _ = trim();
        } else {
            assert!(!fix_trim_threshold());
        }
    }
}
