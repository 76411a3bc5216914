//! SRTP and SRTCP (RFC 3711) with keys from SDES (RFC 4568 `a=crypto`), sans-IO: the keys
//! come in, packets are protected and unprotected in place of the caller's buffers.
//!
//! * **Suites:** `AES_CM_128_HMAC_SHA1_80` and `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2):
//!   AES-128 in counter mode, HMAC-SHA1 tags of 80 or 32 bits (SRTCP always 80); and
//!   `AEAD_AES_128_GCM` (RFC 7714): AES-128-GCM with a 16-byte tag, the RTP header (SRTCP:
//!   its first 8 bytes, the E flag and index) as associated data.
//! * **Keys** (RFC 3711 §4.3): the session encryption key, salt and authentication key are
//!   derived from the master key and salt with the AES-CM PRF, key derivation rate 0. GCM's
//!   96-bit master salt is padded with 16 zero bits for it (RFC 7714 §11, erratum 4938) and
//!   its session salt is 96 bits; it has no authentication key.
//! * **Packet index** (§3.3.1): the rollover counter is kept per SSRC and the index of an
//!   incoming packet is estimated from its sequence number against the highest seen.
//! * **Replay protection** (§3.3.2): a 64-packet window per SSRC, updated only after a
//!   packet authenticates. A packet that fails authentication or is replayed is refused
//!   with [`SrtpError`]; the caller drops it and counts it.
//! * **SRTCP** (§3.4): the E flag and a 31-bit index follow the encrypted part; the index
//!   has its own replay window.
//!
//! The crypto is RustCrypto's (aes, ctr, hmac, sha1, aes-gcm): pure Rust, constant-time tag
//! comparison (hmac's `verify_truncated_left`, aes-gcm's own check). Checked against the
//! vectors of RFC 3711 Appendix B and RFC 7714 §16 and §17.

use std::collections::HashMap;

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, KeyIvInit, StreamCipher};
use aes_gcm::Aes128Gcm;
use aes_gcm::aead::AeadInPlace;
use hmac::{Hmac, Mac};
use sha1::Sha1;

pub use crate::sdp::{
    GCM_MASTER_SALT_LEN, GCM_TAG_LEN, MASTER_KEY_LEN, MASTER_SALT_LEN, MasterKey, SrtpSuite,
};

type Aes128Ctr = ctr::Ctr128BE<Aes128>;
type HmacSha1 = Hmac<Sha1>;

/// HMAC-SHA1 authentication key length, bytes (RFC 3711 §8.2: 160 bits).
const AUTH_KEY_LEN: usize = 20;
/// The replay window, packets (RFC 3711 §3.3.2 asks for at least 64).
pub const REPLAY_WINDOW: u64 = 64;
/// Most SSRCs tracked per direction (a bound against a flood of made-up SSRCs).
const MAX_SSRCS: usize = 64;
/// SRTCP's E flag (RFC 3711 §3.4).
const SRTCP_E_FLAG: u32 = 0x8000_0000;
/// Key derivation labels (RFC 3711 §4.3.1, §4.3.2).
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// Why a packet or key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// Too short for its header and tag.
    #[error("packet too short")]
    TooShort,
    /// The authentication tag does not verify (tampered, or another key).
    #[error("authentication failed")]
    AuthFailed,
    /// Already received, or older than the replay window.
    #[error("replayed packet")]
    Replayed,
}

/// The AES-CM PRF of RFC 3711 §4.3.3 for `label` (key derivation rate 0), `out.len()` bytes.
fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    // x = (label || r) XOR master_salt, r = 0, then used as IV << 16. A 96-bit GCM salt is
    // the high bits of the 112 (RFC 7714 erratum 4938: multiplied by 2^16).
    let salt = master.salt();
    let mut iv = [0u8; 16];
    iv[..salt.len()].copy_from_slice(salt);
    iv[7] ^= label;
    out.fill(0);
    let mut c = Aes128Ctr::new(&(*master.key()).into(), &iv.into());
    c.apply_keystream(out);
}

/// One direction's session keys for RTP or RTCP, with the AES key schedule and the keyed
/// HMAC prepared once: a packet clones them instead of expanding the keys again.
#[derive(Clone)]
struct SessionKeys {
    salt: [u8; MASTER_SALT_LEN],
    #[cfg(test)]
    enc: [u8; 16],
    #[cfg(test)]
    auth: [u8; AUTH_KEY_LEN],
    aes: Aes128,
    hmac: HmacSha1,
}

impl SessionKeys {
    fn new(enc: [u8; 16], salt: [u8; MASTER_SALT_LEN], auth: [u8; AUTH_KEY_LEN]) -> SessionKeys {
        // HMAC takes keys of any length: this cannot fail.
        let hmac = match <HmacSha1 as Mac>::new_from_slice(&auth) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        SessionKeys {
            salt,
            #[cfg(test)]
            enc,
            #[cfg(test)]
            auth,
            aes: Aes128::new(&enc.into()),
            hmac,
        }
    }

    fn derive(master: &MasterKey, labels: [u8; 3]) -> SessionKeys {
        let (mut enc, mut salt, mut auth) = ([0; 16], [0; MASTER_SALT_LEN], [0; AUTH_KEY_LEN]);
        derive(master, labels[0], &mut enc);
        derive(master, labels[1], &mut auth);
        derive(master, labels[2], &mut salt);
        SessionKeys::new(enc, salt, auth)
    }

    /// XORs the AES-CM keystream for (`ssrc`, `index`) into `data` (RFC 3711 §4.1.1).
    fn crypt(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..MASTER_SALT_LEN].copy_from_slice(&self.salt);
        for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
            iv[4 + i] ^= b;
        }
        for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
            iv[8 + i] ^= b;
        }
        let core = ctr::CtrCore::<Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(
            self.aes.clone(),
            &iv.into(),
        );
        let mut c = Aes128Ctr::from_core(core);
        c.apply_keystream(data);
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha1 {
        let mut m = self.hmac.clone();
        for p in parts {
            m.update(p);
        }
        m
    }
}

/// One direction's AES-GCM session key and salt for RTP or RTCP (RFC 7714).
#[derive(Clone)]
struct GcmKeys {
    salt: [u8; GCM_MASTER_SALT_LEN],
    gcm: Aes128Gcm,
}

impl GcmKeys {
    /// Keys from the encryption and salt labels.
    fn derive(master: &MasterKey, labels: [u8; 2]) -> GcmKeys {
        let (mut enc, mut salt) = ([0u8; 16], [0u8; GCM_MASTER_SALT_LEN]);
        derive(master, labels[0], &mut enc);
        derive(master, labels[1], &mut salt);
        GcmKeys::new(enc, salt)
    }

    fn new(enc: [u8; 16], salt: [u8; GCM_MASTER_SALT_LEN]) -> GcmKeys {
        GcmKeys {
            salt,
            gcm: Aes128Gcm::new(&enc.into()),
        }
    }

    /// The 12-byte IV: `00 00 || SSRC || ROC || SEQ` (RTP, RFC 7714 §8.1) or
    /// `00 00 || SSRC || 00 00 || 0 || index` (SRTCP, §9.1), XOR the session salt.
    fn iv(&self, ssrc: u32, tail: [u8; 6]) -> aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
        let mut iv = [0u8; GCM_MASTER_SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..].copy_from_slice(&tail);
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        iv.into()
    }

    fn rtp_iv(&self, ssrc: u32, roc: u32, seq: u16) -> aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
        let mut tail = [0u8; 6];
        tail[..4].copy_from_slice(&roc.to_be_bytes());
        tail[4..].copy_from_slice(&seq.to_be_bytes());
        self.iv(ssrc, tail)
    }

    fn rtcp_iv(&self, ssrc: u32, index: u32) -> aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
        let mut tail = [0u8; 6];
        tail[2..].copy_from_slice(&(index & !SRTCP_E_FLAG).to_be_bytes());
        self.iv(ssrc, tail)
    }
}

/// A direction's transform for RTP or RTCP: AES-CM with HMAC-SHA1, or AES-GCM.
#[derive(Clone)]
enum Keys {
    Cm(SessionKeys),
    Gcm(GcmKeys),
}

impl Keys {
    fn derive(suite: SrtpSuite, master: &MasterKey, labels: [u8; 3]) -> Keys {
        let master = master.for_suite(suite);
        if suite.is_aead() {
            Keys::Gcm(GcmKeys::derive(&master, [labels[0], labels[2]]))
        } else {
            Keys::Cm(SessionKeys::derive(&master, labels))
        }
    }
}

/// A 64-packet replay window over packet indexes.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// Highest index accepted, and whether any was.
    top: Option<u64>,
    /// Bit i: index top - i was accepted.
    bits: u64,
}

impl Window {
    fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(top) = self.top else {
            return Ok(());
        };
        if index > top {
            return Ok(());
        }
        let age = top - index;
        if age >= REPLAY_WINDOW || self.bits & (1 << age) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        match self.top {
            None => {
                self.top = Some(index);
                self.bits = 1;
            }
            Some(top) if index > top => {
                let shift = index - top;
                self.bits = if shift >= REPLAY_WINDOW {
                    1
                } else {
                    (self.bits << shift) | 1
                };
                self.top = Some(index);
            }
            Some(top) => self.bits |= 1 << (top - index),
        }
    }
}

/// Per-SSRC state of an SRTP stream.
#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    /// Rollover counter and highest sequence number (s_l), once a packet was seen.
    roc: u32,
    s_l: Option<u16>,
    window: Window,
    /// SRTCP: the next index to send.
    rtcp_next: u32,
    rtcp_window: Window,
}

impl Stream {
    /// RFC 3711 §3.3.1 / Appendix A: the ROC the packet `seq` belongs to.
    fn estimate(&self, seq: u16) -> u32 {
        let Some(s_l) = self.s_l else {
            return self.roc;
        };
        let (seq, s_l) = (i32::from(seq), i32::from(s_l));
        if s_l < 32_768 {
            if seq - s_l > 32_768 {
                self.roc.wrapping_sub(1)
            } else {
                self.roc
            }
        } else if s_l - 32_768 > seq {
            self.roc.wrapping_add(1)
        } else {
            self.roc
        }
    }

    fn update(&mut self, seq: u16, roc: u32) {
        match self.s_l {
            None => {
                self.s_l = Some(seq);
                self.roc = roc;
            }
            Some(s_l) => {
                if roc > self.roc || (roc == self.roc && seq > s_l) {
                    self.roc = roc;
                    self.s_l = Some(seq);
                }
            }
        }
    }
}

/// One direction of an SRTP session (what we send, or what we receive), for every SSRC in it.
pub struct SrtpContext {
    suite: SrtpSuite,
    rtp: Keys,
    rtcp: Keys,
    streams: HashMap<u32, Stream>,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("ssrcs", &self.streams.len())
            .finish_non_exhaustive()
    }
}

/// The RTP header's length (fixed part, CSRCs, extension), if `p` holds it.
fn rtp_header_len(p: &[u8]) -> Option<usize> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let mut n = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p.get(n + 2..n + 4)?;
        n += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (n <= p.len()).then_some(n)
}

impl SrtpContext {
    /// A context for `suite` with `master`'s keys.
    pub fn new(suite: SrtpSuite, master: &MasterKey) -> SrtpContext {
        SrtpContext {
            suite,
            rtp: Keys::derive(
                suite,
                master,
                [LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTH, LABEL_RTP_SALT],
            ),
            rtcp: Keys::derive(
                suite,
                master,
                [LABEL_RTCP_ENCRYPTION, LABEL_RTCP_AUTH, LABEL_RTCP_SALT],
            ),
            streams: HashMap::new(),
        }
    }

    /// The suite.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    fn stream(&mut self, ssrc: u32) -> &mut Stream {
        if !self.streams.contains_key(&ssrc) && self.streams.len() >= MAX_SSRCS {
            self.streams.clear();
        }
        self.streams.entry(ssrc).or_default()
    }

    /// Encrypts and authenticates the RTP packet in `packet` (the tag is appended).
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let hdr = rtp_header_len(packet).ok_or(SrtpError::TooShort)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let st = self.stream(ssrc);
        let roc = match st.s_l {
            // A sender's sequence numbers go up: a wrap means the next rollover.
            Some(s_l) if seq < s_l && s_l - seq > 32_768 => st.roc.wrapping_add(1),
            _ => st.roc,
        };
        st.update(seq, roc);
        let index = (u64::from(roc) << 16) | u64::from(seq);
        match &self.rtp {
            Keys::Cm(k) => {
                k.crypt(ssrc, index, &mut packet[hdr..]);
                let tag = k.mac(&[packet, &roc.to_be_bytes()]).finalize();
                packet.extend_from_slice(&tag.into_bytes()[..self.suite.rtp_tag_len()]);
            }
            Keys::Gcm(k) => {
                let (header, payload) = packet.split_at_mut(hdr);
                let tag = k
                    .gcm
                    .encrypt_in_place_detached(&k.rtp_iv(ssrc, roc, seq), header, payload)
                    .map_err(|_| SrtpError::TooShort)?;
                packet.extend_from_slice(&tag);
            }
        }
        Ok(())
    }

    /// Checks and decrypts the SRTP packet in `packet` (the tag is removed). A packet that
    /// does not authenticate or is replayed is refused and leaves the state as it was.
    pub fn unprotect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        if packet.len() < 12 + tag_len {
            return Err(SrtpError::TooShort);
        }
        let body = packet.len() - tag_len;
        let hdr = rtp_header_len(&packet[..body]).ok_or(SrtpError::TooShort)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let st = *self.stream(ssrc);
        let roc = st.estimate(seq);
        let index = (u64::from(roc) << 16) | u64::from(seq);
        st.window.check(index)?;
        match &self.rtp {
            Keys::Cm(k) => {
                k.mac(&[&packet[..body], &roc.to_be_bytes()])
                    .verify_truncated_left(&packet[body..])
                    .map_err(|_| SrtpError::AuthFailed)?;
                packet.truncate(body);
                k.crypt(ssrc, index, &mut packet[hdr..]);
            }
            Keys::Gcm(k) => {
                let (header, rest) = packet.split_at_mut(hdr);
                let (payload, tag) = rest.split_at_mut(body - hdr);
                k.gcm
                    .decrypt_in_place_detached(
                        &k.rtp_iv(ssrc, roc, seq),
                        header,
                        payload,
                        aes_gcm::Tag::from_slice(tag),
                    )
                    .map_err(|_| SrtpError::AuthFailed)?;
                packet.truncate(body);
            }
        }
        let s = self.stream(ssrc);
        s.window.accept(index);
        s.update(seq, roc);
        Ok(())
    }

    /// Encrypts and authenticates the RTCP compound packet in `packet` (E flag, index and
    /// tag appended).
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < 8 {
            return Err(SrtpError::TooShort);
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let st = self.stream(ssrc);
        let index = st.rtcp_next & !SRTCP_E_FLAG;
        st.rtcp_next = (index + 1) & !SRTCP_E_FLAG;
        let e_index = (index | SRTCP_E_FLAG).to_be_bytes();
        match &self.rtcp {
            Keys::Cm(k) => {
                k.crypt(ssrc, u64::from(index), &mut packet[8..]);
                packet.extend_from_slice(&e_index);
                let tag = k.mac(&[packet]).finalize();
                packet.extend_from_slice(&tag.into_bytes()[..self.suite.rtcp_tag_len()]);
            }
            Keys::Gcm(k) => {
                // RFC 7714 §9.1: header || ciphertext || tag || E+index, the header's first
                // 8 bytes and E+index as associated data.
                let (header, payload) = packet.split_at_mut(8);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(header);
                aad[8..].copy_from_slice(&e_index);
                let tag = k
                    .gcm
                    .encrypt_in_place_detached(&k.rtcp_iv(ssrc, index), &aad, payload)
                    .map_err(|_| SrtpError::TooShort)?;
                packet.extend_from_slice(&tag);
                packet.extend_from_slice(&e_index);
            }
        }
        Ok(())
    }

    /// Checks and decrypts the SRTCP packet in `packet` (index and tag removed).
    pub fn unprotect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let tag_len = self.suite.rtcp_tag_len();
        if packet.len() < 8 + 4 + tag_len {
            return Err(SrtpError::TooShort);
        }
        if let Keys::Gcm(k) = &self.rtcp {
            let k = k.clone();
            return self.unprotect_rtcp_gcm(&k, packet);
        }
        let body = packet.len() - tag_len;
        let e_index = u32::from_be_bytes([
            packet[body - 4],
            packet[body - 3],
            packet[body - 2],
            packet[body - 1],
        ]);
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let index = e_index & !SRTCP_E_FLAG;
        let st = *self.stream(ssrc);
        st.rtcp_window.check(u64::from(index))?;
        let Keys::Cm(k) = &self.rtcp else {
            return Err(SrtpError::AuthFailed);
        };
        k.mac(&[&packet[..body]])
            .verify_truncated_left(&packet[body..])
            .map_err(|_| SrtpError::AuthFailed)?;
        packet.truncate(body - 4);
        if e_index & SRTCP_E_FLAG != 0 {
            k.crypt(ssrc, u64::from(index), &mut packet[8..]);
        }
        self.stream(ssrc).rtcp_window.accept(u64::from(index));
        Ok(())
    }

    /// SRTCP with AES-GCM (RFC 7714 §9): `header || ciphertext || tag || E+index`; with the
    /// E flag clear the packet is only authenticated (all of it is associated data).
    fn unprotect_rtcp_gcm(&mut self, k: &GcmKeys, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let len = packet.len();
        let e_bytes = [
            packet[len - 4],
            packet[len - 3],
            packet[len - 2],
            packet[len - 1],
        ];
        let e_index = u32::from_be_bytes(e_bytes);
        let index = e_index & !SRTCP_E_FLAG;
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let st = *self.stream(ssrc);
        st.rtcp_window.check(u64::from(index))?;
        let body = len - 4 - GCM_TAG_LEN;
        let tag = *aes_gcm::Tag::from_slice(&packet[body..len - 4]);
        let iv = k.rtcp_iv(ssrc, index);
        if e_index & SRTCP_E_FLAG != 0 {
            let mut aad = [0u8; 12];
            aad[..8].copy_from_slice(&packet[..8]);
            aad[8..].copy_from_slice(&e_bytes);
            let payload = &mut packet[8..body];
            k.gcm
                .decrypt_in_place_detached(&iv, &aad, payload, &tag)
                .map_err(|_| SrtpError::AuthFailed)?;
        } else {
            let mut aad = packet[..body].to_vec();
            aad.extend_from_slice(&e_bytes);
            k.gcm
                .decrypt_in_place_detached(&iv, &aad, &mut [], &tag)
                .map_err(|_| SrtpError::AuthFailed)?;
        }
        packet.truncate(body);
        self.stream(ssrc).rtcp_window.accept(u64::from(index));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn aes_cm_keystream_matches_rfc3711_b2() {
        // RFC 3711 Appendix B.2: session key, salt F0F1...FD, SSRC 0, index 0.
        let keys = SessionKeys::new(
            hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap(),
            hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap(),
            [0; AUTH_KEY_LEN],
        );
        let mut ks = vec![0u8; 16 * 0xff02];
        keys.crypt(0, 0, &mut ks);
        assert_eq!(ks[..16], hex("E03EAD0935C95E80E166B16DD92B4EB4")[..]);
        assert_eq!(ks[16..32], hex("D23513162B02D0F72A43A2FE4A5F97AB")[..]);
        assert_eq!(ks[32..48], hex("41E95B3BB0A2E8DD477901E4FCA894C0")[..]);
        assert_eq!(
            ks[16 * 0xfeff..16 * 0xff00],
            hex("EC8CDF7398607CB0F2D21675EA9EA1E4")[..]
        );
        assert_eq!(
            ks[16 * 0xff00..16 * 0xff01],
            hex("362B7C3C6773516318A077D7FC5073AE")[..]
        );
        assert_eq!(
            ks[16 * 0xff01..16 * 0xff02],
            hex("6A2CC3787889374FBEB4C81B17BA6C44")[..]
        );
    }

    #[test]
    fn key_derivation_matches_rfc3711_b3() {
        let master = MasterKey::new(
            hex("E1F97A0D3E018BE0D64FA32C06DE4139").try_into().unwrap(),
            hex("0EC675AD498AFEEBB6960B3AABE6").try_into().unwrap(),
        );
        let k = SessionKeys::derive(&master, [0, 1, 2]);
        assert_eq!(k.enc[..], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
        assert_eq!(k.salt[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
        assert_eq!(
            k.auth[..],
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")[..]
        );
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn pair(suite: SrtpSuite) -> (SrtpContext, SrtpContext) {
        let master = MasterKey::from_base64("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz").unwrap();
        (
            SrtpContext::new(suite, &master),
            SrtpContext::new(suite, &master),
        )
    }

    #[test]
    fn rtp_round_trips_through_a_rollover_and_refuses_tampering_and_replay() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
            SrtpSuite::AeadAes128Gcm,
        ] {
            let (mut tx, mut rx) = pair(suite);
            for seq in (65_530u16..=65_535).chain(0..5) {
                let clear = rtp(seq, b"hello srtp payload");
                let mut p = clear.clone();
                tx.protect_rtp(&mut p).unwrap();
                assert_eq!(p.len(), clear.len() + suite.rtp_tag_len());
                assert_ne!(p[12..clear.len()], clear[12..]);
                let sent = p.clone();
                rx.unprotect_rtp(&mut p).unwrap();
                assert_eq!(p, clear, "seq {seq}");
                // The same packet again is a replay.
                let mut again = sent.clone();
                assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
                // A flipped payload bit does not authenticate.
                let mut bad = sent;
                bad[14] ^= 1;
                let seq2 = seq.wrapping_add(1);
                bad[2..4].copy_from_slice(&seq2.to_be_bytes());
                assert_eq!(rx.unprotect_rtp(&mut bad), Err(SrtpError::AuthFailed));
            }
            // After the wrap the rollover counter is 1 on both sides.
            assert_eq!(rx.streams[&0xdeadbeef].roc, 1);
        }
    }

    #[test]
    fn late_packets_within_the_window_pass_once() {
        let (mut tx, mut rx) = pair(SrtpSuite::AesCm128HmacSha1_80);
        let mut sent = Vec::new();
        for seq in 100u16..200 {
            let mut p = rtp(seq, b"x");
            tx.protect_rtp(&mut p).unwrap();
            sent.push(p);
        }
        // 199 first, then 150 (late, within 64), then 100 (too old).
        let mut p = sent[99].clone();
        rx.unprotect_rtp(&mut p).unwrap();
        let mut p = sent[50].clone();
        rx.unprotect_rtp(&mut p).unwrap();
        let mut p = sent[50].clone();
        assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::Replayed));
        let mut p = sent[0].clone();
        assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::Replayed));
    }

    #[test]
    fn rtcp_round_trips_with_its_index() {
        let (mut tx, mut rx) = pair(SrtpSuite::AesCm128HmacSha1_32);
        for _ in 0..3 {
            // A receiver report: V=2, RC=0, PT=201, length 1, SSRC.
            let clear = vec![0x80, 201, 0, 1, 0xde, 0xad, 0xbe, 0xef];
            let mut p = clear.clone();
            tx.protect_rtcp(&mut p).unwrap();
            assert_eq!(p.len(), clear.len() + 4 + 10);
            let copy = p.clone();
            rx.unprotect_rtcp(&mut p).unwrap();
            assert_eq!(p, clear);
            let mut again = copy;
            assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replayed));
        }
    }

    /// A GCM context with RFC 7714's session key and salt for RTP and RTCP alike (its
    /// vectors start after key derivation).
    fn rfc7714_context() -> SrtpContext {
        let keys = GcmKeys::new(
            hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap(),
            hex("517569642070726f2071756f").try_into().unwrap(),
        );
        SrtpContext {
            suite: SrtpSuite::AeadAes128Gcm,
            rtp: Keys::Gcm(keys.clone()),
            rtcp: Keys::Gcm(keys),
            streams: HashMap::new(),
        }
    }

    #[test]
    fn gcm_rtp_matches_rfc7714_16_1() {
        let clear = hex(
            "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
             20646976 69736120 696e2070 61727465 73207472 6573",
        );
        let protected = hex(
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
             be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
             6a9152cf 765ee439 0cce",
        );
        let keys = GcmKeys::new([0; 16], hex("517569642070726f2071756f").try_into().unwrap());
        assert_eq!(
            keys.rtp_iv(0x5501_a0b2, 0, 0xf17b)[..],
            hex("51753c6580c2726f20718414")[..]
        );
        let mut p = clear.clone();
        rfc7714_context().protect_rtp(&mut p).unwrap();
        assert_eq!(p, protected);
        let mut rx = rfc7714_context();
        let mut bad = protected.clone();
        bad[20] ^= 1;
        assert_eq!(rx.unprotect_rtp(&mut bad), Err(SrtpError::AuthFailed));
        let mut p = protected;
        rx.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p, clear);
    }

    #[test]
    fn gcm_rtcp_matches_rfc7714_16_2() {
        let clear = hex(
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
             deadbeef deadbeef deadbeef deadbeef deadbeef",
        );
        let protected = hex(
            "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
             c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
             45d9eade 800005d4",
        );
        let keys = GcmKeys::new([0; 16], hex("517569642070726f2071756f").try_into().unwrap());
        assert_eq!(
            keys.rtcp_iv(0x4d61_7273, 0x5d4)[..],
            hex("517524055203726f207170bb")[..]
        );
        let mut tx = rfc7714_context();
        tx.stream(0x4d61_7273).rtcp_next = 0x5d4;
        let mut p = clear.clone();
        tx.protect_rtcp(&mut p).unwrap();
        assert_eq!(p, protected);
        let mut rx = rfc7714_context();
        let mut p = protected.clone();
        rx.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p, clear);
        let mut again = protected;
        assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replayed));
    }

    #[test]
    fn gcm_key_derivation_pads_the_96_bit_salt() {
        // RFC 7714 erratum 4938: the 96-bit master salt times 2^16 goes into the AES-CM PRF.
        // The session salt libsrtp derives for this master key and salt.
        let master = MasterKey::new_gcm(
            (0..16u8).collect::<Vec<_>>().try_into().unwrap(),
            (0x40..0x4cu8).collect::<Vec<_>>().try_into().unwrap(),
        );
        let k = GcmKeys::derive(&master, [LABEL_RTP_ENCRYPTION, LABEL_RTP_SALT]);
        assert_eq!(k.salt[..], hex("1fcd5d561e66dc49ec1c3ccb")[..]);
    }

    #[test]
    fn keys_parse_from_inline_base64() {
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64("AAAA").is_err());
        let k = MasterKey::from_base64("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz").unwrap();
        assert_eq!(k.to_base64(), "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz");
        assert_eq!(format!("{k:?}"), "MasterKey(..)");
    }
}
