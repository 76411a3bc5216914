//! SDES key exchange: the `a=crypto` attribute (RFC 4568 §9.1), parsed and printed.
//!
//! ```text
//! a=crypto:<tag> <crypto-suite> <key-params> [<session-param>]*
//! key-params = "inline:" <base64 key||salt> ["|" lifetime] ["|" MKI ":" length]
//! ```
//!
//! Only what voxline can use is accepted: the AES-CM 128 suites with HMAC-SHA1 80 or 32
//! ([`SrtpSuite`]), one key, no MKI (an MKI changes the packet format and no trunk voxline
//! meets sends one), a lifetime at least 2^31 packets or absent, and no session parameters
//! that change the transform (`UNENCRYPTED_SRTP`, `UNAUTHENTICATED_SRTP`, `KDR`, `FEC_ORDER`,
//! `FEC_KEY`, `WSH` other than its default). Anything else is a [`CryptoError`]: the offer
//! may carry other lines voxline can take (offerers list several in order of preference).
//! It lives in `media` beside [`crate::media::srtp`], whose keys it carries (`sdp` stays
//! below `media`). Not yet wired into offer/answer.

use crate::media::srtp::{MasterKey, SrtpSuite};

/// The attribute's name.
pub const CRYPTO_ATTRIBUTE: &str = "crypto";
/// The smallest key lifetime accepted, in packets (2^31: a call never reaches it).
const MIN_LIFETIME_LOG2: u32 = 31;

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
        let key = MasterKey::from_base64(key_b64)
            .map_err(|_| CryptoError::Malformed("the key is not 30 bytes of base64"))?;
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
/// preference), or why none is: the first line's error.
pub fn first_usable<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<CryptoAttribute, CryptoError> {
    let mut first_err = None;
    for v in values {
        match CryptoAttribute::parse(v) {
            Ok(a) => return Ok(a),
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
                CryptoError::Malformed("the key is not 30 bytes of base64"),
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
    fn the_first_usable_line_of_an_offer_is_taken() {
        let lines = [
            "1 AEAD_AES_256_GCM inline:x".to_owned(),
            format!("2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
            format!("3 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"),
        ];
        let a = first_usable(lines.iter().map(String::as_str)).unwrap();
        assert_eq!(a.tag, 2);
        assert_eq!(
            first_usable(["1 AEAD_AES_256_GCM inline:x"]),
            Err(CryptoError::UnsupportedSuite("AEAD_AES_256_GCM".into()))
        );
    }
}
