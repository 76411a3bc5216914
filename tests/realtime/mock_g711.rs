//! The mock's own G.711 codec (kept separate on purpose, so it cannot mirror a client bug)
//! agrees with voxline's media codec on every code and on a sweep of samples.

use voxline::media::codec::g711;
use voxline_mock_realtime as mock;

#[test]
fn mock_g711_matches_the_media_codec() {
    for code in 0..=255u8 {
        assert_eq!(
            mock::ulaw_decode(code),
            g711::ulaw_decode(code),
            "ulaw {code:#x}"
        );
        assert_eq!(
            mock::alaw_decode(code),
            g711::alaw_decode(code),
            "alaw {code:#x}"
        );
    }
    for s in (i16::MIN..=i16::MAX).step_by(7) {
        assert_eq!(mock::ulaw_encode(s), g711::ulaw_encode(s), "ulaw {s}");
        assert_eq!(mock::alaw_encode(s), g711::alaw_encode(s), "alaw {s}");
    }
}
