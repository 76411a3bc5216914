//! SDES keys for SRTP in offer/answer: the `a=crypto` attribute (RFC 4568 §9.1), its suites
//! and keys, and the SRTP policy of a call.
//!
//! ```text
//! a=crypto:<tag> <crypto-suite> <key-params> [<session-param>]*
//! key-params = "inline:" <base64 key||salt> ["|" lifetime] ["|" MKI ":" length]
//! ```
//!
//! Only what voxline can use is accepted: the AES-CM 128 suites with HMAC-SHA1 80 or 32 and
//! AEAD_AES_128_GCM (RFC 7714 §14.2) ([`SrtpSuite`]), one key, no MKI (an MKI changes the packet format and no trunk voxline
//! meets sends one), a lifetime at least 2^31 packets or absent, and no session parameters
//! that change the transform (`UNENCRYPTED_SRTP`, `UNAUTHENTICATED_SRTP`, `KDR`, `FEC_ORDER`,
//! `FEC_KEY`, `WSH` other than its default). Anything else is a [`CryptoError`]: the offer
//! may carry other lines voxline can take (offerers list several in order of preference).
//!
//! The keys are data here; `media::srtp` turns them into packet transforms (`media` sits
//! above `sdp`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The attribute's name.
pub const CRYPTO_ATTRIBUTE: &str = "crypto";
/// The smallest key lifetime accepted, in packets (2^31: a call never reaches it).
const MIN_LIFETIME_LOG2: u32 = 31;
/// Master key length for AES-128 suites, bytes (RFC 4568 §6.2.1).
pub const MASTER_KEY_LEN: usize = 16;
/// Master salt length of the AES-CM suites, bytes (RFC 3711 §8.2: 112 bits).
pub const MASTER_SALT_LEN: usize = 14;
/// Master salt length of AEAD_AES_128_GCM, bytes (RFC 7714 §12: 96 bits).
pub const GCM_MASTER_SALT_LEN: usize = 12;

/// The suites voxline offers, in its order of preference, each on its own `a=crypto` line
/// with tags 1, 2, ... (the 80-bit tag first, as RFC 4568 §6.2 recommends, as every trunk
/// takes it; AES-GCM last, as implementations read RFC 7714's salt differently before its
/// erratum 4938: a peer that picks it knows it).
pub const OFFERED_SUITES: [SrtpSuite; 3] = [
    SrtpSuite::AesCm128HmacSha1_80,
    SrtpSuite::AesCm128HmacSha1_32,
    SrtpSuite::AeadAes128Gcm,
];

/// Whether a call's media is SRTP (per trunk, and `[media]` for calls that match none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpMode {
    /// Plain RTP: offers carry no keys; an `RTP/SAVP` offer is refused with 488 and keys in
    /// an `RTP/AVP` offer are ignored.
    #[default]
    Off,
    /// Offer `RTP/AVP` with `a=crypto` lines (best-effort SRTP: a peer without SRTP answers
    /// plain); accept an `RTP/SAVP` offer with keys, an `RTP/AVP` offer with usable keys as
    /// SRTP, and one without as plain RTP.
    Optional,
    /// Offer `RTP/SAVP`; refuse an offer without usable keys with 488, and end a call whose
    /// answer has none.
    Mandatory,
}

impl SrtpMode {
    /// Parses `off`, `optional` or `mandatory`.
    pub fn parse(text: &str) -> Option<SrtpMode> {
        match text {
            "off" => Some(SrtpMode::Off),
            "optional" => Some(SrtpMode::Optional),
            "mandatory" => Some(SrtpMode::Mandatory),
            _ => None,
        }
    }

    /// Its configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            SrtpMode::Off => "off",
            SrtpMode::Optional => "optional",
            SrtpMode::Mandatory => "mandatory",
        }
    }
}

/// The suites a trunk (or `[media]`) offers and accepts, in its order of preference: not
/// empty, no duplicates. The default is [`OFFERED_SUITES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SrtpSuites(Vec<SrtpSuite>);

impl Default for SrtpSuites {
    fn default() -> Self {
        SrtpSuites(OFFERED_SUITES.to_vec())
    }
}

impl SrtpSuites {
    /// The list, or `None` when it is empty or names a suite twice.
    pub fn new(suites: impl IntoIterator<Item = SrtpSuite>) -> Option<SrtpSuites> {
        let mut out: Vec<SrtpSuite> = Vec::new();
        for s in suites {
            if out.contains(&s) {
                return None;
            }
            out.push(s);
        }
        (!out.is_empty()).then_some(SrtpSuites(out))
    }

    /// The suites, most preferred first.
    pub fn iter(&self) -> impl Iterator<Item = SrtpSuite> + '_ {
        self.0.iter().copied()
    }

    /// Whether `suite` is one of them.
    pub fn contains(&self, suite: SrtpSuite) -> bool {
        self.0.contains(&suite)
    }

    /// The suite an offer's `a=crypto` tag stands for: our offers number their lines 1, 2,
    /// ... in this order.
    pub fn by_tag(&self, tag: u32) -> Option<SrtpSuite> {
        let i = usize::try_from(tag).ok()?.checked_sub(1)?;
        self.0.get(i).copied()
    }
}

/// Our side of SRTP for one call: the mode, the suites, and the key we send with (generated
/// by the caller from a cryptographic random source, one per call; a re-offer keeps it, so
/// the crypto context carries on, RFC 4568 §7.1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSrtp {
    /// Off, optional or mandatory.
    pub mode: SrtpMode,
    /// The suites offered (one `a=crypto` line each) and accepted, in order.
    pub suites: SrtpSuites,
    /// Our master key and salt.
    pub key: MasterKey,
}

/// SRTP as negotiated for a call: the suite, and the key of each direction (RFC 4568 §6.1:
/// each side's `a=crypto` key protects what that side sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedSrtp {
    /// The suite both sides use.
    pub suite: SrtpSuite,
    /// Our key: we protect with it.
    pub local: MasterKey,
    /// The peer's key: we unprotect with it.
    pub remote: MasterKey,
}

/// An SDES crypto suite (RFC 4568 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// AES-CM 128, HMAC-SHA1 80-bit tag.
    AesCm128HmacSha1_80,
    /// AES-CM 128, HMAC-SHA1 32-bit tag on SRTP (80 on SRTCP).
    AesCm128HmacSha1_32,
    /// AES-128 in Galois/Counter Mode, a 16-byte tag (RFC 7714).
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// Parses an `a=crypto` suite name.
    pub fn parse(name: &str) -> Option<SrtpSuite> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(SrtpSuite::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(SrtpSuite::AesCm128HmacSha1_32),
            "AEAD_AES_128_GCM" => Some(SrtpSuite::AeadAes128Gcm),
            _ => None,
        }
    }

    /// Its `a=crypto` name.
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The SRTP authentication tag length, bytes.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm => GCM_TAG_LEN,
        }
    }

    /// The SRTCP authentication tag length, bytes (80 bits for both AES-CM suites, RFC 4568
    /// §6.2.2; GCM's 16 bytes).
    pub fn rtcp_tag_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes128Gcm => GCM_TAG_LEN,
            _ => 10,
        }
    }

    /// The master salt length its keys carry, bytes.
    pub fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes128Gcm => GCM_MASTER_SALT_LEN,
            _ => MASTER_SALT_LEN,
        }
    }

    /// Whether it is an AEAD suite (RFC 7714), whose packets carry no separate HMAC.
    pub fn is_aead(self) -> bool {
        self == SrtpSuite::AeadAes128Gcm
    }
}

/// AES-GCM's authentication tag length, bytes (RFC 7714 §5: 16).
pub const GCM_TAG_LEN: usize = 16;

/// A master key and salt (the `inline:` key of `a=crypto`): 14 bytes of salt for the AES-CM
/// suites, 12 for AES-GCM.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    key: [u8; MASTER_KEY_LEN],
    salt: [u8; MASTER_SALT_LEN],
    /// How much of `salt` is the salt (the rest is zero).
    salt_len: usize,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// An AES-CM key from its parts.
    pub fn new(key: [u8; MASTER_KEY_LEN], salt: [u8; MASTER_SALT_LEN]) -> MasterKey {
        MasterKey {
            key,
            salt,
            salt_len: MASTER_SALT_LEN,
        }
    }

    /// An AES-GCM key from its parts.
    pub fn new_gcm(key: [u8; MASTER_KEY_LEN], salt: [u8; GCM_MASTER_SALT_LEN]) -> MasterKey {
        let mut padded = [0u8; MASTER_SALT_LEN];
        padded[..GCM_MASTER_SALT_LEN].copy_from_slice(&salt);
        MasterKey {
            key,
            salt: padded,
            salt_len: GCM_MASTER_SALT_LEN,
        }
    }

    /// Parses the base64 of key || salt for an AES-CM suite (30 bytes), as `inline:` carries
    /// it.
    pub fn from_base64(text: &str) -> Result<MasterKey, CryptoError> {
        MasterKey::from_base64_for(SrtpSuite::AesCm128HmacSha1_80, text)
    }

    /// Parses the base64 of key || salt for `suite` (30 bytes for AES-CM, 28 for AES-GCM).
    pub fn from_base64_for(suite: SrtpSuite, text: &str) -> Result<MasterKey, CryptoError> {
        let raw = BASE64
            .decode(text.as_bytes())
            .map_err(|_| CryptoError::Malformed("the key is not base64"))?;
        if raw.len() != MASTER_KEY_LEN + suite.salt_len() {
            return Err(CryptoError::Malformed(if suite.is_aead() {
                "the key is not 28 bytes of key and salt"
            } else {
                "the key is not 30 bytes of key and salt"
            }));
        }
        let mut key = [0u8; MASTER_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        key.copy_from_slice(&raw[..MASTER_KEY_LEN]);
        salt[..suite.salt_len()].copy_from_slice(&raw[MASTER_KEY_LEN..]);
        Ok(MasterKey {
            key,
            salt,
            salt_len: suite.salt_len(),
        })
    }

    /// This key as `suite` takes it: the salt cut to (or padded with zeros to) its length.
    /// A call's key is made once with the longer AES-CM salt and cut for GCM when the peer
    /// picks it.
    pub fn for_suite(&self, suite: SrtpSuite) -> MasterKey {
        let mut salt = self.salt;
        salt[suite.salt_len()..].fill(0);
        MasterKey {
            key: self.key,
            salt,
            salt_len: suite.salt_len(),
        }
    }

    /// The master key.
    pub fn key(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.key
    }

    /// The master salt (14 bytes for AES-CM, 12 for AES-GCM).
    pub fn salt(&self) -> &[u8] {
        &self.salt[..self.salt_len]
    }

    /// The base64 of key || salt.
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(MASTER_KEY_LEN + MASTER_SALT_LEN);
        raw.extend_from_slice(&self.key);
        raw.extend_from_slice(self.salt());
        BASE64.encode(raw)
    }
}

/// One usable `a=crypto` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag (1 to 9 digits), echoed in the answer.
    pub tag: u32,
    /// The suite.
    pub suite: SrtpSuite,
    /// The master key and salt.
    pub key: MasterKey,
}

/// Why an `a=crypto` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Not the attribute's grammar.
    #[error("malformed a=crypto: {0}")]
    Malformed(&'static str),
    /// A suite voxline does not implement (its name).
    #[error("unsupported crypto suite {0}")]
    UnsupportedSuite(String),
    /// Key parameters voxline does not take (MKI, several keys, a short lifetime).
    #[error("unsupported key parameters: {0}")]
    UnsupportedKey(&'static str),
    /// A session parameter that changes the transform.
    #[error("unsupported session parameter {0}")]
    UnsupportedParam(String),
}

impl CryptoAttribute {
    /// Parses the attribute's value (what follows `a=crypto:`).
    pub fn parse(value: &str) -> Result<CryptoAttribute, CryptoError> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields.next().ok_or(CryptoError::Malformed("no tag"))?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::Malformed("the tag is not 1 to 9 digits"));
        }
        let tag: u32 = tag
            .parse()
            .map_err(|_| CryptoError::Malformed("the tag is not 1 to 9 digits"))?;
        let suite_name = fields.next().ok_or(CryptoError::Malformed("no suite"))?;
        let suite = SrtpSuite::parse(suite_name)
            .ok_or_else(|| CryptoError::UnsupportedSuite(suite_name.to_owned()))?;
        let key_params = fields.next().ok_or(CryptoError::Malformed("no key"))?;
        if key_params.contains(';') {
            return Err(CryptoError::UnsupportedKey("more than one key"));
        }
        let inline = key_params
            .strip_prefix("inline:")
            .ok_or(CryptoError::Malformed("the key method is not inline"))?;
        let mut parts = inline.split('|');
        let key_b64 = parts.next().unwrap_or_default();
        let key = MasterKey::from_base64_for(suite, key_b64)?;
        for p in parts {
            if p.contains(':') {
                return Err(CryptoError::UnsupportedKey("an MKI"));
            }
            let log2 = match p.strip_prefix("2^") {
                Some(e) => e
                    .parse::<u32>()
                    .map_err(|_| CryptoError::Malformed("bad lifetime"))?,
                None => {
                    let n: u64 = p
                        .parse()
                        .map_err(|_| CryptoError::Malformed("bad lifetime"))?;
                    63 - n.max(1).leading_zeros()
                }
            };
            if log2 < MIN_LIFETIME_LOG2 {
                return Err(CryptoError::UnsupportedKey("a lifetime under 2^31 packets"));
            }
        }
        for param in fields {
            let name = param.split('=').next().unwrap_or(param);
            let harmless = name == "WSH" && param == "WSH=64";
            if !harmless {
                return Err(CryptoError::UnsupportedParam(name.to_owned()));
            }
        }
        Ok(CryptoAttribute { tag, suite, key })
    }

    /// The attribute's value, as this crate prints it: `TAG SUITE inline:KEY`.
    pub fn value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            self.key.to_base64()
        )
    }
}

/// The first usable line of `values` (an offer's `a=crypto` values, in its order of
/// preference) whose suite is one of `allowed`, or why none is: the first line's error.
pub fn first_usable<'a>(
    values: impl IntoIterator<Item = &'a str>,
    allowed: &SrtpSuites,
) -> Result<CryptoAttribute, CryptoError> {
    let mut first_err = None;
    for v in values {
        match CryptoAttribute::parse(v) {
            Ok(a) if allowed.contains(a.suite) => return Ok(a),
            Ok(a) => {
                first_err.get_or_insert(CryptoError::UnsupportedSuite(a.suite.name().to_owned()));
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(CryptoError::Malformed("no a=crypto line")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn the_rfc_4568_example_and_common_trunk_lines_parse() {
        // RFC 4568 §9.1's example, with its lifetime and without its MKI.
        let a = CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20"));
        assert_eq!(
            a,
            Err(CryptoError::UnsupportedKey("a lifetime under 2^31 packets"))
        );
        let a = CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31"))
            .unwrap();
        assert_eq!(a.tag, 1);
        assert_eq!(a.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(a.key.to_base64(), KEY);
        // What Asterisk and baresip send.
        let a = CryptoAttribute::parse(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}")).unwrap();
        assert_eq!(a.suite, SrtpSuite::AesCm128HmacSha1_32);
        assert_eq!(a.value(), format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"));
    }

    #[test]
    fn what_voxline_cannot_use_is_refused_with_the_reason() {
        let cases = [
            ("", CryptoError::Malformed("no tag")),
            (
                "x AES_CM_128_HMAC_SHA1_80 inline:K",
                CryptoError::Malformed("the tag is not 1 to 9 digits"),
            ),
            (
                "1 F8_128_HMAC_SHA1_80 inline:K",
                CryptoError::UnsupportedSuite("F8_128_HMAC_SHA1_80".into()),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80",
                CryptoError::Malformed("no key"),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 uri:x",
                CryptoError::Malformed("the key method is not inline"),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
                CryptoError::Malformed("the key is not 30 bytes of key and salt"),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(CryptoAttribute::parse(v), Err(want), "{v:?}");
        }
        let mki = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|1:4");
        assert_eq!(
            CryptoAttribute::parse(&mki),
            Err(CryptoError::UnsupportedKey("an MKI"))
        );
        let two = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY};inline:{KEY}");
        assert_eq!(
            CryptoAttribute::parse(&two),
            Err(CryptoError::UnsupportedKey("more than one key"))
        );
        let plain = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP");
        assert_eq!(
            CryptoAttribute::parse(&plain),
            Err(CryptoError::UnsupportedParam("UNENCRYPTED_SRTP".into()))
        );
        let wsh = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} WSH=64");
        assert!(CryptoAttribute::parse(&wsh).is_ok());
    }

    #[test]
    fn an_aes_gcm_line_takes_a_28_byte_key() {
        // 16 bytes of key, 12 of salt (RFC 7714 §14.2).
        let gcm_key = BASE64.encode([5u8; 28]);
        let a = CryptoAttribute::parse(&format!("3 AEAD_AES_128_GCM inline:{gcm_key}")).unwrap();
        assert_eq!(a.suite, SrtpSuite::AeadAes128Gcm);
        assert_eq!(a.key.salt(), &[5u8; 12][..]);
        assert_eq!(a.value(), format!("3 AEAD_AES_128_GCM inline:{gcm_key}"));
        assert_eq!(
            CryptoAttribute::parse(&format!("3 AEAD_AES_128_GCM inline:{KEY}")),
            Err(CryptoError::Malformed(
                "the key is not 28 bytes of key and salt"
            ))
        );
        // A call's AES-CM key cut for GCM, and back.
        let cm = MasterKey::new([1; 16], [2; 14]);
        let gcm = cm.for_suite(SrtpSuite::AeadAes128Gcm);
        assert_eq!(gcm.salt(), &[2u8; 12][..]);
        assert_eq!(BASE64.decode(gcm.to_base64()).unwrap().len(), 28);
        assert_eq!(
            gcm.for_suite(SrtpSuite::AesCm128HmacSha1_80).salt(),
            &[2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0][..]
        );
    }

    #[test]
    fn the_first_usable_line_of_an_offer_is_taken() {
        let lines = [
            "1 AEAD_AES_256_GCM inline:x".to_owned(),
            format!("2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
            format!("3 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"),
        ];
        let all = SrtpSuites::default();
        let a = first_usable(lines.iter().map(String::as_str), &all).unwrap();
        assert_eq!(a.tag, 2);
        // A suite the trunk does not allow is passed over.
        let only_32 = SrtpSuites::new([SrtpSuite::AesCm128HmacSha1_32]).unwrap();
        let a = first_usable(lines.iter().map(String::as_str), &only_32).unwrap();
        assert_eq!(a.tag, 3);
        assert_eq!(
            first_usable(["1 AEAD_AES_256_GCM inline:x"], &all),
            Err(CryptoError::UnsupportedSuite("AEAD_AES_256_GCM".into()))
        );
    }
}
