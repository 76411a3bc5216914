//! SRTP cost per packet: protecting and unprotecting a 20 ms G.711 packet (12-byte header,
//! 160 bytes of payload) with AES_CM_128_HMAC_SHA1_80 ("srtp ...") and AEAD_AES_128_GCM
//! ("srtp gcm ..."), the work SRTP adds to each packet of a call in each direction. For scale, docs/PERFORMANCE.md sets it against a whole echo
//! call's CPU per packet.
//!
//! ```sh
//! cargo bench --bench srtp
//! ```

// Benchmark setup fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use voxline::media::srtp::{MasterKey, SrtpContext, SrtpSuite};

fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5u8, 160));
    p
}

fn bench(c: &mut Criterion) {
    let key = MasterKey::from_base64("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz").unwrap();
    for (suite, name) in [
        (SrtpSuite::AesCm128HmacSha1_80, "srtp"),
        (SrtpSuite::AeadAes128Gcm, "srtp gcm"),
    ] {
        bench_suite(c, suite, name, &key);
    }
}

fn bench_suite(c: &mut Criterion, suite: SrtpSuite, name: &str, key: &MasterKey) {
    c.bench_function(&format!("{name} protect 20 ms PCMU packet"), |b| {
        let mut tx = SrtpContext::new(suite, key);
        let mut seq = 0u16;
        let mut buf = Vec::with_capacity(200);
        b.iter(|| {
            seq = seq.wrapping_add(1);
            buf.clear();
            buf.extend_from_slice(&packet(seq));
            tx.protect_rtp(&mut buf).unwrap();
            black_box(&buf);
        })
    });
    c.bench_function(&format!("{name} unprotect 20 ms PCMU packet"), |b| {
        let mut tx = SrtpContext::new(suite, key);
        let protected: Vec<Vec<u8>> = (0..60_000u16)
            .map(|s| {
                let mut p = packet(s);
                tx.protect_rtp(&mut p).unwrap();
                p
            })
            .collect();
        let mut rx = SrtpContext::new(suite, key);
        let mut i = 0usize;
        let mut buf = Vec::with_capacity(200);
        b.iter(|| {
            if i == protected.len() {
                // A fresh receiver: the window would refuse the same indexes again.
                rx = SrtpContext::new(suite, key);
                i = 0;
            }
            buf.clear();
            buf.extend_from_slice(&protected[i]);
            i += 1;
            rx.unprotect_rtp(&mut buf).unwrap();
            black_box(&buf);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
