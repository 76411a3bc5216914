//! HTTP Digest authentication as used by SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).
//!
//! Sans-IO: nothing here reads a clock, draws random numbers or touches a socket. The caller
//! supplies the client nonce (`cnonce`) so that every computation is deterministic.
//!
//! Client side:
//! 1. A 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`) arrives. Parse every offered
//!    challenge and pick one with [`select_challenge`] (SHA-256 is preferred over MD5).
//! 2. Ask [`DigestClient::should_retry`] whether answering makes sense (see its documentation for
//!    the rule that stops a wrong password from looping), then [`DigestClient::set_challenge`]
//!    (or do both with [`DigestClient::on_challenge`]).
//! 3. Put [`DigestClient::authorization`] into `Authorization` (for 401) or
//!    `Proxy-Authorization` (for 407) of the re-sent request. Later requests to the same
//!    server may reuse the nonce; the nonce count (`nc`) is tracked per nonce.
//!
//! Server side: [`DigestResponse::parse`] an `Authorization` header and [`verify`] it against the
//! password. Nonce freshness and `nc` replay checks are the caller's job.
//!
//! Not supported: `userhash` and `username*` (RFC 7616 §3.4.4, §3.4.5; the plain username is
//! always sent), SHA-512-256, the `auth-param` extension mechanism, and `Authentication-Info`
//! (`rspauth`) checking.

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};
use sha2::Sha256;

/// Maximum number of consecutive `stale=true` challenges that [`DigestClient::should_retry`]
/// answers before giving up.
///
/// Voxline policy, not an RFC value: RFC 7616 §3.3 lets a server flag a nonce as stale any number
/// of times, so a broken server could otherwise keep a client re-sending forever.
pub const MAX_STALE_RETRIES: u32 = 3;

/// The authentication scheme name this module handles (RFC 3261 §25.1, `"Digest"`).
pub const DIGEST_SCHEME: &str = "Digest";

/// Errors from parsing challenges or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The header uses another authentication scheme (for example `Basic`).
    #[error("authentication scheme {0:?} is not Digest")]
    NotDigest(String),
    /// The parameter list is syntactically broken.
    #[error("malformed digest parameters: {0}")]
    Malformed(&'static str),
    /// A mandatory parameter is absent.
    #[error("missing digest parameter {0:?}")]
    MissingParam(&'static str),
    /// A parameter appears more than once (RFC 7616 §3.3: each directive at most once).
    #[error("duplicate digest parameter {0:?}")]
    DuplicateParam(String),
    /// The `algorithm` is not one of MD5, MD5-sess, SHA-256, SHA-256-sess.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The `qop` offers nothing this implementation supports (`auth`, `auth-int`).
    #[error("unsupported qop {0:?}")]
    UnsupportedQop(String),
    /// The `nc` value is not 8 hexadecimal digits (RFC 7616 §3.4).
    #[error("invalid nonce count {0:?}")]
    InvalidNonceCount(String),
}

/// Digest hash algorithm (RFC 7616 §3.3, RFC 8760 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DigestAlgorithm {
    /// `MD5`, the default when the `algorithm` parameter is absent (RFC 2617 §3.2.1).
    #[default]
    Md5,
    /// `MD5-sess`: HA1 additionally covers the server and client nonces.
    Md5Sess,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl DigestAlgorithm {
    /// Parses an `algorithm` value, case-insensitively.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        match s.to_ascii_lowercase().as_str() {
            "md5" => Ok(Self::Md5),
            "md5-sess" => Ok(Self::Md5Sess),
            "sha-256" => Ok(Self::Sha256),
            "sha-256-sess" => Ok(Self::Sha256Sess),
            _ => Err(AuthError::UnsupportedAlgorithm(s.to_owned())),
        }
    }

    /// The canonical token as written in headers (`MD5`, `MD5-sess`, `SHA-256`, `SHA-256-sess`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Whether this is a `-sess` variant (HA1 includes nonce and cnonce, RFC 7616 §3.4.2).
    pub fn is_session(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    /// Preference rank for [`select_challenge`]: higher is better (RFC 8760 §2.4).
    fn strength(self) -> u8 {
        match self {
            Self::Md5 | Self::Md5Sess => 0,
            Self::Sha256 | Self::Sha256Sess => 1,
        }
    }
}

impl FromStr for DigestAlgorithm {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quality of protection (RFC 7616 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: authentication only.
    Auth,
    /// `auth-int`: authentication with integrity protection of the message body.
    AuthInt,
}

impl Qop {
    /// Parses a single qop token, case-insensitively.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        match s.to_ascii_lowercase().as_str() {
            "auth" => Ok(Self::Auth),
            "auth-int" => Ok(Self::AuthInt),
            _ => Err(AuthError::UnsupportedQop(s.to_owned())),
        }
    }

    /// The token as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthInt => "auth-int",
        }
    }
}

impl fmt::Display for Qop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed Digest challenge from `WWW-Authenticate` or `Proxy-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    /// Protection space (`realm`).
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque string the client must echo back unchanged.
    pub opaque: Option<String>,
    /// Hash algorithm; [`DigestAlgorithm::Md5`] when absent.
    pub algorithm: DigestAlgorithm,
    /// Offered qop values this implementation understands, in the server's order. Empty means
    /// the server sent no `qop` (legacy RFC 2069 computation).
    pub qop: Vec<Qop>,
    /// `stale=true`: the previous nonce expired but the credentials were right (RFC 7616 §3.3).
    pub stale: bool,
}

impl DigestChallenge {
    /// Parses a header value such as
    /// `Digest realm="asterisk", nonce="1a2b", algorithm=MD5, qop="auth,auth-int", stale=TRUE`.
    ///
    /// Values may be quoted or bare tokens; unknown parameters are ignored; unknown qop tokens
    /// are dropped, but a `qop` with no known token is [`AuthError::UnsupportedQop`].
    pub fn parse(header_value: &str) -> Result<Self, AuthError> {
        let params = parse_digest_header(header_value)?;
        let realm = params
            .get("realm")
            .ok_or(AuthError::MissingParam("realm"))?;
        let nonce = params
            .get("nonce")
            .ok_or(AuthError::MissingParam("nonce"))?;
        let algorithm = match params.get("algorithm") {
            Some(a) => DigestAlgorithm::parse(a)?,
            None => DigestAlgorithm::Md5,
        };
        let qop = match params.get("qop") {
            None => Vec::new(),
            Some(list) => {
                let mut offered = Vec::new();
                for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if let Ok(q) = Qop::parse(token)
                        && !offered.contains(&q)
                    {
                        offered.push(q);
                    }
                }
                if offered.is_empty() {
                    return Err(AuthError::UnsupportedQop(list.to_owned()));
                }
                offered
            }
        };
        let stale = params
            .get("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok(Self {
            realm: realm.to_owned(),
            nonce: nonce.to_owned(),
            opaque: params.get("opaque").map(str::to_owned),
            algorithm,
            qop,
            stale,
        })
    }

    /// The qop the client will use: `auth` if offered, else `auth-int`, else none.
    pub fn preferred_qop(&self) -> Option<Qop> {
        if self.qop.contains(&Qop::Auth) {
            Some(Qop::Auth)
        } else if self.qop.contains(&Qop::AuthInt) {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }
}

/// Picks the challenge to answer among several offered ones (one per header value).
///
/// Unparsable or unsupported challenges (other schemes, unknown algorithms) are skipped. A
/// SHA-256 challenge is preferred over an MD5 one (RFC 8760 §2.4); among equals the first
/// offered wins. `None` if nothing usable was offered.
pub fn select_challenge(values: &[&str]) -> Option<DigestChallenge> {
    let mut best: Option<DigestChallenge> = None;
    for value in values {
        let Ok(challenge) = DigestChallenge::parse(value) else {
            continue;
        };
        let better = best
            .as_ref()
            .is_none_or(|b| challenge.algorithm.strength() > b.algorithm.strength());
        if better {
            best = Some(challenge);
        }
    }
    best
}

/// A username and password for one account.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Authentication user name (often differs from the SIP URI user).
    pub username: String,
    /// Plain-text password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Client-side Digest state for one server (one registrar or one proxy).
///
/// Remembers the current challenge and how many times its nonce has been used, so that a
/// nonce can be reused for later requests with an increasing `nc` (RFC 7616 §3.4). Use one
/// instance per header kind (`WWW-Authenticate` and `Proxy-Authenticate` are separate).
#[derive(Debug, Clone, Default)]
pub struct DigestClient {
    challenge: Option<DigestChallenge>,
    nonce_count: u32,
    consecutive_stale: u32,
}

impl DigestClient {
    /// A client with no challenge yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a challenge to answer. The nonce count restarts at zero when the nonce changes
    /// and continues when the server repeats the current nonce.
    pub fn set_challenge(&mut self, c: DigestChallenge) {
        let same_nonce = self
            .challenge
            .as_ref()
            .is_some_and(|old| old.nonce == c.nonce && old.realm == c.realm);
        if !same_nonce {
            self.nonce_count = 0;
        }
        if c.stale {
            self.consecutive_stale = self.consecutive_stale.saturating_add(1);
        } else {
            self.consecutive_stale = 0;
        }
        self.challenge = Some(c);
    }

    /// The challenge currently answered, if any.
    pub fn challenge(&self) -> Option<&DigestChallenge> {
        self.challenge.as_ref()
    }

    /// How many `Authorization` values have been produced for the current nonce (the `nc` of
    /// the last one).
    pub fn nonce_count(&self) -> u32 {
        self.nonce_count
    }

    /// Forgets the challenge (for example after the registration was removed).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Decides whether a request that drew `challenge` (in a 401/407) should be re-sent with
    /// credentials.
    ///
    /// The rule (RFC 3261 §22.2, RFC 7616 §3.3):
    /// * the challenged request carried no credentials (`request_had_credentials == false`):
    ///   retry — this is the normal first challenge;
    /// * it carried credentials and `stale=false`: the server rejected the credentials
    ///   themselves, so the password (or username) is wrong — do **not** retry, report failure;
    /// * it carried credentials and `stale=true`: only the nonce expired — retry with the new
    ///   nonce, which does not count as an authentication failure, but at most
    ///   [`MAX_STALE_RETRIES`] stale challenges in a row are answered.
    ///
    /// Call this before [`set_challenge`](Self::set_challenge) (or use
    /// [`on_challenge`](Self::on_challenge)).
    pub fn should_retry(&self, challenge: &DigestChallenge, request_had_credentials: bool) -> bool {
        if !request_had_credentials {
            return true;
        }
        challenge.stale && self.consecutive_stale < MAX_STALE_RETRIES
    }

    /// [`should_retry`](Self::should_retry), and if it says yes, [`set_challenge`](Self::set_challenge).
    /// Returns whether to re-send the request.
    pub fn on_challenge(
        &mut self,
        challenge: DigestChallenge,
        request_had_credentials: bool,
    ) -> bool {
        let retry = self.should_retry(&challenge, request_had_credentials);
        if retry {
            self.set_challenge(challenge);
        }
        retry
    }

    /// Computes the full `Authorization` / `Proxy-Authorization` header value for a request,
    /// consuming one nonce count.
    ///
    /// `uri` is the Request-URI exactly as it will be sent; `body` is the message body (hashed
    /// only for `auth-int`); `cnonce` is a fresh random string from the caller. `cnonce`, `qop`
    /// and `nc` are included only when the challenge offered a qop (`auth` is preferred), except
    /// that `-sess` algorithms always send `cnonce` because HA1 depends on it.
    ///
    /// `None` if no challenge is set, or if a value contains CR or LF (not representable in a
    /// quoted-string, RFC 3261 §25.1).
    pub fn authorization(
        &mut self,
        creds: &Credentials,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
    ) -> Option<String> {
        let challenge = self.challenge.as_ref()?;
        let qop = challenge.preferred_qop();
        let nc = self.nonce_count.saturating_add(1);
        let uses_cnonce = qop.is_some() || challenge.algorithm.is_session();
        let response = compute_response(&ResponseInput {
            algorithm: challenge.algorithm,
            username: &creds.username,
            realm: &challenge.realm,
            password: &creds.password,
            nonce: &challenge.nonce,
            cnonce: uses_cnonce.then_some(cnonce),
            qop,
            nc: qop.map(|_| nc),
            method,
            uri,
            body,
        })?;

        let mut out = String::from(DIGEST_SCHEME);
        out.push_str(" username=");
        push_quoted(&mut out, &creds.username)?;
        out.push_str(", realm=");
        push_quoted(&mut out, &challenge.realm)?;
        out.push_str(", nonce=");
        push_quoted(&mut out, &challenge.nonce)?;
        out.push_str(", uri=");
        push_quoted(&mut out, uri)?;
        out.push_str(", response=\"");
        out.push_str(&response);
        out.push_str("\", algorithm=");
        out.push_str(challenge.algorithm.as_str());
        if uses_cnonce {
            out.push_str(", cnonce=");
            push_quoted(&mut out, cnonce)?;
        }
        if let Some(opaque) = &challenge.opaque {
            out.push_str(", opaque=");
            push_quoted(&mut out, opaque)?;
        }
        if let Some(q) = qop {
            out.push_str(", qop=");
            out.push_str(q.as_str());
            out.push_str(&format!(", nc={nc:08x}"));
        }
        self.nonce_count = nc;
        Some(out)
    }
}

/// A parsed `Authorization` / `Proxy-Authorization` Digest header (server side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestResponse {
    /// User name the client claims.
    pub username: String,
    /// Realm the client answered.
    pub realm: String,
    /// Server nonce the client used.
    pub nonce: String,
    /// `uri` directive (the Request-URI the client hashed).
    pub uri: String,
    /// The hex response digest as sent.
    pub response: String,
    /// Algorithm; MD5 when absent.
    pub algorithm: DigestAlgorithm,
    /// Client nonce.
    pub cnonce: Option<String>,
    /// Echoed opaque value.
    pub opaque: Option<String>,
    /// Chosen qop; `None` for the legacy RFC 2069 computation.
    pub qop: Option<Qop>,
    /// Nonce count.
    pub nc: Option<u32>,
}

impl DigestResponse {
    /// Parses an `Authorization` header value. `cnonce` and `nc` are required when `qop` is
    /// present; `nc` must be 8 hex digits.
    pub fn parse(header_value: &str) -> Result<Self, AuthError> {
        let params = parse_digest_header(header_value)?;
        let required = |name: &'static str| {
            params
                .get(name)
                .map(str::to_owned)
                .ok_or(AuthError::MissingParam(name))
        };
        let algorithm = match params.get("algorithm") {
            Some(a) => DigestAlgorithm::parse(a)?,
            None => DigestAlgorithm::Md5,
        };
        let qop = params.get("qop").map(Qop::parse).transpose()?;
        let nc = params.get("nc").map(parse_nc).transpose()?;
        let cnonce = params.get("cnonce").map(str::to_owned);
        if qop.is_some() {
            if cnonce.is_none() {
                return Err(AuthError::MissingParam("cnonce"));
            }
            if nc.is_none() {
                return Err(AuthError::MissingParam("nc"));
            }
        }
        if algorithm.is_session() && cnonce.is_none() {
            return Err(AuthError::MissingParam("cnonce"));
        }
        Ok(Self {
            username: required("username")?,
            realm: required("realm")?,
            nonce: required("nonce")?,
            uri: required("uri")?,
            response: required("response")?,
            algorithm,
            cnonce,
            opaque: params.get("opaque").map(str::to_owned),
            qop,
            nc,
        })
    }
}

/// Checks a client's Digest response against the password, in constant time.
///
/// Recomputes the digest from the fields of `resp` (realm, nonce, uri, cnonce, nc, qop,
/// algorithm) with `method` and `body` from the received request. It does **not** check that
/// the nonce was issued by this server, is fresh, or that `nc` increased, nor that `uri`
/// matches the Request-URI — those are the caller's job.
pub fn verify(resp: &DigestResponse, password: &str, method: &str, body: &[u8]) -> bool {
    let Some(expected) = compute_response(&ResponseInput {
        algorithm: resp.algorithm,
        username: &resp.username,
        realm: &resp.realm,
        password,
        nonce: &resp.nonce,
        cnonce: resp.cnonce.as_deref(),
        qop: resp.qop,
        nc: resp.nc,
        method,
        uri: &resp.uri,
        body,
    }) else {
        return false;
    };
    let received = resp.response.to_ascii_lowercase();
    constant_time_eq(expected.as_bytes(), received.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Private helpers.

/// Everything that goes into one response digest.
struct ResponseInput<'a> {
    algorithm: DigestAlgorithm,
    username: &'a str,
    realm: &'a str,
    password: &'a str,
    nonce: &'a str,
    cnonce: Option<&'a str>,
    qop: Option<Qop>,
    nc: Option<u32>,
    method: &'a str,
    uri: &'a str,
    body: &'a [u8],
}

/// RFC 7616 §3.4.1-3.4.3 (and RFC 2069 when there is no qop). `None` when a value the
/// computation needs (cnonce for qop or `-sess`, nc for qop) is missing.
fn compute_response(i: &ResponseInput<'_>) -> Option<String> {
    let alg = i.algorithm;
    let mut ha1 = hash_hex(
        alg,
        &[
            i.username.as_bytes(),
            i.realm.as_bytes(),
            i.password.as_bytes(),
        ],
    );
    if alg.is_session() {
        let cnonce = i.cnonce?;
        ha1 = hash_hex(
            alg,
            &[ha1.as_bytes(), i.nonce.as_bytes(), cnonce.as_bytes()],
        );
    }
    let ha2 = match i.qop {
        Some(Qop::AuthInt) => {
            let body_hash = hash_hex(alg, &[i.body]);
            hash_hex(
                alg,
                &[i.method.as_bytes(), i.uri.as_bytes(), body_hash.as_bytes()],
            )
        }
        Some(Qop::Auth) | None => hash_hex(alg, &[i.method.as_bytes(), i.uri.as_bytes()]),
    };
    let response = match i.qop {
        Some(q) => {
            let nc = format!("{:08x}", i.nc?);
            let cnonce = i.cnonce?;
            hash_hex(
                alg,
                &[
                    ha1.as_bytes(),
                    i.nonce.as_bytes(),
                    nc.as_bytes(),
                    cnonce.as_bytes(),
                    q.as_str().as_bytes(),
                    ha2.as_bytes(),
                ],
            )
        }
        None => hash_hex(alg, &[ha1.as_bytes(), i.nonce.as_bytes(), ha2.as_bytes()]),
    };
    Some(response)
}

/// Lower-case hex of H(parts joined by ':').
fn hash_hex(alg: DigestAlgorithm, parts: &[&[u8]]) -> String {
    fn run<D: Digest>(parts: &[&[u8]]) -> String {
        let mut d = D::new();
        for (n, part) in parts.iter().enumerate() {
            if n > 0 {
                d.update(b":");
            }
            d.update(part);
        }
        to_hex(&d.finalize())
    }
    match alg {
        DigestAlgorithm::Md5 | DigestAlgorithm::Md5Sess => run::<Md5>(parts),
        DigestAlgorithm::Sha256 | DigestAlgorithm::Sha256Sess => run::<Sha256>(parts),
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // invariant: both indices are nibbles (< 16), HEX has 16 entries.
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Compares without an early exit on the first differing byte. Lengths are not secret (they
/// are fixed by the algorithm).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Appends `value` as a quoted-string, escaping `"` and `\`. `None` if it contains CR or LF.
fn push_quoted(out: &mut String, value: &str) -> Option<()> {
    out.push('"');
    for c in value.chars() {
        match c {
            '\r' | '\n' => return None,
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    Some(())
}

fn parse_nc(s: &str) -> Result<u32, AuthError> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::InvalidNonceCount(s.to_owned()));
    }
    u32::from_str_radix(s, 16).map_err(|_| AuthError::InvalidNonceCount(s.to_owned()))
}

/// Parameters of a Digest header: lower-cased names, unquoted values, in order.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `Digest name=value, name="quoted, value", ...` (RFC 3261 §25.1 `challenge` /
/// `credentials`; RFC 7235 §2.1 auth-param syntax).
fn parse_digest_header(header_value: &str) -> Result<Params, AuthError> {
    let s = header_value.trim_start().as_bytes();
    let scheme_end = s
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(s.len());
    // invariant: scheme_end is a position in `s` or its length.
    let (scheme, mut rest) = s.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(DIGEST_SCHEME.as_bytes()) {
        return Err(AuthError::NotDigest(
            String::from_utf8_lossy(scheme).into_owned(),
        ));
    }

    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        rest = skip_list_separators(rest);
        if rest.is_empty() {
            break;
        }
        let name_len = rest.iter().take_while(|b| is_token_byte(**b)).count();
        if name_len == 0 {
            return Err(AuthError::Malformed("expected a parameter name"));
        }
        // invariant: name_len counts a prefix of `rest`.
        let (name_bytes, after_name) = rest.split_at(name_len);
        let name = String::from_utf8_lossy(name_bytes).to_ascii_lowercase();
        let after_ws = skip_ws(after_name);
        let Some((b'=', after_eq)) = after_ws.split_first() else {
            return Err(AuthError::Malformed("expected '=' after a parameter name"));
        };
        let after_eq = skip_ws(after_eq);
        let (value, after_value) = if let Some((b'"', inner)) = after_eq.split_first() {
            parse_quoted(inner)?
        } else {
            let len = after_eq.iter().take_while(|b| is_token_byte(**b)).count();
            if len == 0 {
                return Err(AuthError::Malformed("expected a parameter value"));
            }
            // invariant: len counts a prefix of `after_eq`.
            let (v, r) = after_eq.split_at(len);
            (v.to_vec(), r)
        };
        let value = String::from_utf8(value)
            .map_err(|_| AuthError::Malformed("parameter value is not UTF-8"))?;
        if params.iter().any(|(n, _)| *n == name) {
            return Err(AuthError::DuplicateParam(name));
        }
        params.push((name, value));

        rest = skip_ws(after_value);
        match rest.split_first() {
            None => break,
            Some((b',', _)) => {}
            Some(_) => return Err(AuthError::Malformed("expected ',' between parameters")),
        }
    }
    Ok(Params(params))
}

/// Parses the inside of a quoted-string (after the opening quote); returns the unescaped bytes
/// and the input after the closing quote.
fn parse_quoted(mut s: &[u8]) -> Result<(Vec<u8>, &[u8]), AuthError> {
    let mut out = Vec::new();
    loop {
        match s.split_first() {
            None => return Err(AuthError::Malformed("unterminated quoted string")),
            Some((b'"', rest)) => return Ok((out, rest)),
            Some((b'\\', rest)) => match rest.split_first() {
                Some((c, rest)) => {
                    out.push(*c);
                    s = rest;
                }
                None => return Err(AuthError::Malformed("unterminated quoted string")),
            },
            Some((c, rest)) => {
                out.push(*c);
                s = rest;
            }
        }
    }
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    // invariant: n counts a prefix of `s`.
    &s[n..]
}

fn skip_list_separators(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|b| b.is_ascii_whitespace() || **b == b',')
        .count();
    // invariant: n counts a prefix of `s`.
    &s[n..]
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, pass: &str) -> Credentials {
        Credentials {
            username: user.to_owned(),
            password: pass.to_owned(),
        }
    }

    /// Extracts one parameter from a header value produced by `authorization()`.
    fn param(header: &str, name: &str) -> Option<String> {
        parse_digest_header(header)
            .ok()?
            .get(name)
            .map(str::to_owned)
    }

    // ---- known vectors -----------------------------------------------------------------

    #[test]
    fn rfc2617_section_3_5_example() {
        let challenge = DigestChallenge::parse(
            r#"Digest
                 realm="testrealm@host.com",
                 qop="auth,auth-int",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert_eq!(challenge.qop, vec![Qop::Auth, Qop::AuthInt]);
        let mut client = DigestClient::new();
        client.set_challenge(challenge);
        let header = client
            .authorization(
                &creds("Mufasa", "Circle Of Life"),
                "GET",
                "/dir/index.html",
                b"",
                "0a4f113b",
            )
            .unwrap();
        assert_eq!(
            header,
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
             response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, cnonce=\"0a4f113b\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", qop=auth, nc=00000001"
        );
    }

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    fn rfc7616_response(algorithm: &str) -> String {
        let challenge = DigestChallenge::parse(&format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
             algorithm={algorithm}, nonce=\"{RFC7616_NONCE}\", opaque=\"{RFC7616_OPAQUE}\""
        ))
        .unwrap();
        let mut client = DigestClient::new();
        client.set_challenge(challenge);
        let header = client
            .authorization(
                &creds("Mufasa", "Circle of Life"),
                "GET",
                "/dir/index.html",
                b"",
                RFC7616_CNONCE,
            )
            .unwrap();
        assert_eq!(param(&header, "algorithm").as_deref(), Some(algorithm));
        assert_eq!(param(&header, "opaque").as_deref(), Some(RFC7616_OPAQUE));
        param(&header, "response").unwrap()
    }

    #[test]
    fn rfc7616_section_3_9_1_sha256_example() {
        assert_eq!(
            rfc7616_response("SHA-256"),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc7616_section_3_9_1_md5_example() {
        assert_eq!(rfc7616_response("MD5"), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn legacy_rfc2069_without_qop() {
        // No qop: response = MD5(HA1:nonce:HA2), and no cnonce/qop/nc are sent.
        let mut client = DigestClient::new();
        client.set_challenge(
            DigestChallenge::parse(
                r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093""#,
            )
            .unwrap(),
        );
        let header = client
            .authorization(
                &creds("Mufasa", "Circle Of Life"),
                "GET",
                "/dir/index.html",
                b"",
                "ignored",
            )
            .unwrap();
        assert_eq!(
            header,
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
             response=\"670fd8c2df070c60b045671b8b24ff02\", algorithm=MD5"
        );
    }

    // Vectors below were computed independently with Python's hashlib.

    #[test]
    fn auth_int_hashes_the_body() {
        let body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n";
        let mut client = DigestClient::new();
        client.set_challenge(
            DigestChallenge::parse(r#"Digest realm="asterisk", nonce="abc123", qop="auth-int""#)
                .unwrap(),
        );
        let c = creds("alice", "secret");
        client
            .authorization(&c, "INVITE", "sip:bob@example.com", body, "deadbeef")
            .unwrap();
        let header = client
            .authorization(&c, "INVITE", "sip:bob@example.com", body, "deadbeef")
            .unwrap();
        assert_eq!(param(&header, "qop").as_deref(), Some("auth-int"));
        assert_eq!(param(&header, "nc").as_deref(), Some("00000002"));
        assert_eq!(
            param(&header, "response").as_deref(),
            Some("4e146ba47a959460e799ec74054ea2a0")
        );
        // A different body gives a different response.
        let other = client
            .authorization(&c, "INVITE", "sip:bob@example.com", b"x", "deadbeef")
            .unwrap();
        assert_ne!(param(&other, "response"), param(&header, "response"));
    }

    #[test]
    fn auth_int_with_empty_body() {
        let resp = compute_response(&ResponseInput {
            algorithm: DigestAlgorithm::Md5,
            username: "alice",
            realm: "asterisk",
            password: "secret",
            nonce: "abc123",
            cnonce: Some("deadbeef"),
            qop: Some(Qop::AuthInt),
            nc: Some(1),
            method: "REGISTER",
            uri: "sip:example.com",
            body: b"",
        });
        assert_eq!(resp.as_deref(), Some("87cb029ac0c95d8fe6ec3ea917ed61bf"));
    }

    fn sess_response(algorithm: &str) -> String {
        let mut client = DigestClient::new();
        client.set_challenge(
            DigestChallenge::parse(&format!(
                "Digest realm=\"asterisk\", nonce=\"abc123\", qop=auth, algorithm={algorithm}"
            ))
            .unwrap(),
        );
        let header = client
            .authorization(
                &creds("alice", "secret"),
                "REGISTER",
                "sip:example.com",
                b"",
                "deadbeef",
            )
            .unwrap();
        param(&header, "response").unwrap()
    }

    #[test]
    fn md5_sess_vector() {
        assert_eq!(
            sess_response("MD5-sess"),
            "99d0ec955fdcf7745dbe3caa608ef223"
        );
    }

    #[test]
    fn sha256_sess_vector() {
        assert_eq!(
            sess_response("sha-256-SESS"),
            "20cb126e28885fdc99ed398f99449b34d38b7d7f46ccb3567becfb32a8acc354"
        );
    }

    // ---- nonce counting and retry decisions --------------------------------------------

    fn challenge(nonce: &str, stale: bool) -> DigestChallenge {
        DigestChallenge {
            realm: "asterisk".into(),
            nonce: nonce.into(),
            opaque: None,
            algorithm: DigestAlgorithm::Md5,
            qop: vec![Qop::Auth],
            stale,
        }
    }

    #[test]
    fn nc_increments_per_use_and_resets_on_new_nonce() {
        let c = creds("alice", "secret");
        let mut client = DigestClient::new();
        assert_eq!(
            client.authorization(&c, "REGISTER", "sip:x", b"", "c"),
            None
        );
        client.set_challenge(challenge("n1", false));
        let nc = |client: &mut DigestClient| {
            let h = client
                .authorization(&c, "REGISTER", "sip:x", b"", "c")
                .unwrap();
            param(&h, "nc").unwrap()
        };
        assert_eq!(nc(&mut client), "00000001");
        assert_eq!(nc(&mut client), "00000002");
        assert_eq!(nc(&mut client), "00000003");
        assert_eq!(client.nonce_count(), 3);
        // The server repeats the same nonce: the count continues.
        client.set_challenge(challenge("n1", false));
        assert_eq!(nc(&mut client), "00000004");
        // New nonce: the count restarts.
        client.set_challenge(challenge("n2", true));
        assert_eq!(nc(&mut client), "00000001");
        for _ in 0..14 {
            nc(&mut client);
        }
        assert_eq!(nc(&mut client), "00000010", "nc is hexadecimal");
    }

    #[test]
    fn nc_changes_the_response() {
        let c = creds("alice", "secret");
        let mut client = DigestClient::new();
        client.set_challenge(challenge("n1", false));
        let a = client
            .authorization(&c, "REGISTER", "sip:x", b"", "c")
            .unwrap();
        let b = client
            .authorization(&c, "REGISTER", "sip:x", b"", "c")
            .unwrap();
        assert_ne!(param(&a, "response"), param(&b, "response"));
    }

    #[test]
    fn first_challenge_is_always_answered() {
        let client = DigestClient::new();
        assert!(client.should_retry(&challenge("n1", false), false));
        assert!(client.should_retry(&challenge("n1", true), false));
    }

    #[test]
    fn second_non_stale_challenge_means_wrong_password() {
        let mut client = DigestClient::new();
        assert!(client.on_challenge(challenge("n1", false), false));
        // We answered n1, the server challenges again without stale: credentials are wrong.
        assert!(!client.should_retry(&challenge("n2", false), true));
        assert!(!client.on_challenge(challenge("n2", false), true));
        // The rejected challenge was not stored.
        assert_eq!(client.challenge().unwrap().nonce, "n1");
    }

    #[test]
    fn stale_challenge_is_retried_with_the_new_nonce_but_bounded() {
        let c = creds("alice", "secret");
        let mut client = DigestClient::new();
        assert!(client.on_challenge(challenge("n1", false), false));
        client
            .authorization(&c, "REGISTER", "sip:x", b"", "c")
            .unwrap();
        for i in 0..MAX_STALE_RETRIES {
            let nonce = format!("s{i}");
            assert!(
                client.on_challenge(challenge(&nonce, true), true),
                "stale #{i}"
            );
            let h = client
                .authorization(&c, "REGISTER", "sip:x", b"", "c")
                .unwrap();
            assert_eq!(param(&h, "nonce").as_deref(), Some(nonce.as_str()));
            assert_eq!(param(&h, "nc").as_deref(), Some("00000001"));
        }
        // A server that never stops saying stale is given up on.
        assert!(!client.on_challenge(challenge("s-last", true), true));
        // A fresh non-stale challenge to an unauthenticated request resets the streak.
        assert!(client.on_challenge(challenge("fresh", false), false));
        assert!(client.on_challenge(challenge("s-again", true), true));
    }

    // ---- parsing ---------------------------------------------------------------------------

    #[test]
    fn parses_asterisk_style_challenge() {
        let c = DigestChallenge::parse(
            r#"Digest realm="asterisk", nonce="1a2b", algorithm=MD5, qop="auth,auth-int", stale=TRUE, opaque="x""#,
        )
        .unwrap();
        assert_eq!(
            c,
            DigestChallenge {
                realm: "asterisk".into(),
                nonce: "1a2b".into(),
                opaque: Some("x".into()),
                algorithm: DigestAlgorithm::Md5,
                qop: vec![Qop::Auth, Qop::AuthInt],
                stale: true,
            }
        );
    }

    #[test]
    fn parse_edge_cases() {
        // Lower-case scheme, bare tokens, whitespace around '=', empty list elements,
        // commas and escaped quotes inside quoted strings, unknown params, no algorithm.
        let c = DigestChallenge::parse(
            "  digest   realm = \"a, \\\"quoted\\\" realm\" ,, nonce=abc.def , \
             domain=\"sip:a sip:b\", foo=bar,qop=auth ,",
        )
        .unwrap();
        assert_eq!(c.realm, "a, \"quoted\" realm");
        assert_eq!(c.nonce, "abc.def");
        assert_eq!(c.algorithm, DigestAlgorithm::Md5);
        assert_eq!(c.qop, vec![Qop::Auth]);
        assert!(!c.stale);
        assert_eq!(c.opaque, None);

        // Unknown qop tokens are dropped; stale=false.
        let c = DigestChallenge::parse(
            r#"Digest realm="r", nonce="n", qop="auth-conf, auth-int", stale=false"#,
        )
        .unwrap();
        assert_eq!(c.qop, vec![Qop::AuthInt]);
        assert!(!c.stale);
        assert_eq!(c.preferred_qop(), Some(Qop::AuthInt));

        // Empty quoted value is allowed.
        let c = DigestChallenge::parse(r#"Digest realm="", nonce="n""#).unwrap();
        assert_eq!(c.realm, "");
    }

    #[test]
    fn parse_errors() {
        use AuthError::*;
        let err = |s: &str| DigestChallenge::parse(s).unwrap_err();
        assert_eq!(err(r#"Basic realm="x""#), NotDigest("Basic".into()));
        assert_eq!(err(""), NotDigest("".into()));
        assert_eq!(err("Digest"), MissingParam("realm"));
        assert_eq!(err(r#"Digest realm="x""#), MissingParam("nonce"));
        assert_eq!(err(r#"Digest nonce="x""#), MissingParam("realm"));
        assert_eq!(
            err(r#"Digest realm="x", nonce="n", algorithm=SHA-512-256"#),
            UnsupportedAlgorithm("SHA-512-256".into())
        );
        assert_eq!(
            err(r#"Digest realm="x", nonce="n", qop="auth-conf""#),
            UnsupportedQop("auth-conf".into())
        );
        assert!(matches!(err(r#"Digest realm="x, nonce="n""#), Malformed(_)));
        assert!(matches!(err(r#"Digest realm"x", nonce="n""#), Malformed(_)));
        assert!(matches!(err(r#"Digest realm=, nonce="n""#), Malformed(_)));
        assert!(matches!(err(r#"Digest realm="x" nonce="n""#), Malformed(_)));
        assert!(matches!(err("Digest realm=\"x\\"), Malformed(_)));
        assert_eq!(
            err(r#"Digest realm="x", nonce="n", Realm="y""#),
            DuplicateParam("realm".into())
        );
    }

    #[test]
    fn algorithm_tokens() {
        for (s, a) in [
            ("MD5", DigestAlgorithm::Md5),
            ("md5-SESS", DigestAlgorithm::Md5Sess),
            ("Sha-256", DigestAlgorithm::Sha256),
            ("SHA-256-sess", DigestAlgorithm::Sha256Sess),
        ] {
            assert_eq!(s.parse::<DigestAlgorithm>(), Ok(a));
            assert_eq!(DigestAlgorithm::parse(a.as_str()), Ok(a));
        }
        assert_eq!(DigestAlgorithm::default(), DigestAlgorithm::Md5);
    }

    #[test]
    fn select_prefers_sha256_and_skips_garbage() {
        let md5 = r#"Digest realm="r", nonce="m", algorithm=MD5"#;
        let sha = r#"Digest realm="r", nonce="s", algorithm=SHA-256"#;
        let bad = r#"Digest realm="r", nonce="x", algorithm=SHA-512-256"#;
        let basic = r#"Basic realm="r""#;
        assert_eq!(select_challenge(&[md5, sha]).unwrap().nonce, "s");
        assert_eq!(select_challenge(&[sha, md5]).unwrap().nonce, "s");
        assert_eq!(select_challenge(&[basic, bad, md5]).unwrap().nonce, "m");
        let md5_b = r#"Digest realm="r", nonce="m2""#;
        assert_eq!(select_challenge(&[md5, md5_b]).unwrap().nonce, "m");
        assert_eq!(select_challenge(&[basic, bad]), None);
        assert_eq!(select_challenge(&[]), None);
    }

    #[test]
    fn header_values_are_escaped_and_crlf_rejected() {
        let mut client = DigestClient::new();
        client.set_challenge(challenge("n1", false));
        let h = client
            .authorization(&creds("a\"b\\c", "p"), "REGISTER", "sip:x", b"", "c")
            .unwrap();
        assert!(h.starts_with(r#"Digest username="a\"b\\c", "#), "{h}");
        assert_eq!(param(&h, "username").as_deref(), Some("a\"b\\c"));
        assert_eq!(
            client.authorization(&creds("a\r\nVia: x", "p"), "REGISTER", "sip:x", b"", "c"),
            None
        );
    }

    #[test]
    fn credentials_debug_hides_password() {
        let s = format!("{:?}", creds("alice", "hunter2"));
        assert!(s.contains("alice"));
        assert!(!s.contains("hunter2"));
    }

    // ---- server side -----------------------------------------------------------------------

    #[test]
    fn parses_rfc2617_authorization() {
        let r = DigestResponse::parse(
            r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert_eq!(r.username, "Mufasa");
        assert_eq!(r.qop, Some(Qop::Auth));
        assert_eq!(r.nc, Some(1));
        assert_eq!(r.cnonce.as_deref(), Some("0a4f113b"));
        assert_eq!(r.algorithm, DigestAlgorithm::Md5);
        assert!(verify(&r, "Circle Of Life", "GET", b""));
        assert!(!verify(&r, "Circle of Life", "GET", b""));
        assert!(!verify(&r, "Circle Of Life", "POST", b""));
        // Upper-case hex from the client is accepted.
        let upper = DigestResponse {
            response: r.response.to_ascii_uppercase(),
            ..r.clone()
        };
        assert!(verify(&upper, "Circle Of Life", "GET", b""));
    }

    #[test]
    fn verify_round_trip_for_every_algorithm_and_qop() {
        let algorithms = ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"];
        let qops = [None, Some("auth"), Some("auth-int")];
        let body = b"v=0\r\n";
        for alg in algorithms {
            for qop in qops {
                let qop_param = qop.map(|q| format!(", qop=\"{q}\"")).unwrap_or_default();
                let c = DigestChallenge::parse(&format!(
                    "Digest realm=\"voxline\", nonce=\"n0\", opaque=\"op\", algorithm={alg}{qop_param}"
                ))
                .unwrap();
                let mut client = DigestClient::new();
                client.set_challenge(c);
                let header = client
                    .authorization(
                        &creds("bob", "s3cret"),
                        "INVITE",
                        "sip:alice@example.com",
                        body,
                        "cn0",
                    )
                    .unwrap();
                let r = DigestResponse::parse(&header).unwrap();
                let ctx = format!("{alg} {qop:?}: {header}");
                assert_eq!(r.algorithm.as_str(), alg, "{ctx}");
                assert_eq!(r.qop.map(Qop::as_str), qop, "{ctx}");
                assert_eq!(r.opaque.as_deref(), Some("op"), "{ctx}");
                assert!(verify(&r, "s3cret", "INVITE", body), "{ctx}");
                assert!(!verify(&r, "wrong", "INVITE", body), "{ctx}");
                let body_matters = qop == Some("auth-int");
                assert_eq!(
                    verify(&r, "s3cret", "INVITE", b"other"),
                    !body_matters,
                    "{ctx}"
                );
            }
        }
    }

    #[test]
    fn verify_rejects_tampering() {
        let mut client = DigestClient::new();
        client.set_challenge(challenge("n1", false));
        let header = client
            .authorization(
                &creds("bob", "pw"),
                "REGISTER",
                "sip:example.com",
                b"",
                "c1",
            )
            .unwrap();
        let good = DigestResponse::parse(&header).unwrap();
        assert!(verify(&good, "pw", "REGISTER", b""));
        let tampered = [
            DigestResponse {
                nc: Some(2),
                ..good.clone()
            },
            DigestResponse {
                cnonce: Some("c2".into()),
                ..good.clone()
            },
            DigestResponse {
                uri: "sip:evil.com".into(),
                ..good.clone()
            },
            DigestResponse {
                username: "eve".into(),
                ..good.clone()
            },
            DigestResponse {
                nonce: "n2".into(),
                ..good.clone()
            },
            DigestResponse {
                response: "00".into(),
                ..good.clone()
            },
            DigestResponse {
                cnonce: None,
                ..good.clone()
            },
        ];
        for t in tampered {
            assert!(!verify(&t, "pw", "REGISTER", b""), "{t:?}");
        }
    }

    #[test]
    fn response_parse_errors() {
        use AuthError::*;
        let base = r#"Digest username="u", realm="r", nonce="n", uri="sip:x", response="00""#;
        assert!(DigestResponse::parse(base).is_ok());
        let err = |extra: &str| DigestResponse::parse(&format!("{base}{extra}")).unwrap_err();
        assert_eq!(err(", qop=auth, nc=00000001"), MissingParam("cnonce"));
        assert_eq!(err(", qop=auth, cnonce=\"c\""), MissingParam("nc"));
        assert_eq!(
            err(", qop=auth, cnonce=\"c\", nc=1"),
            InvalidNonceCount("1".into())
        );
        assert_eq!(
            err(", qop=auth, cnonce=\"c\", nc=0000000g"),
            InvalidNonceCount("0000000g".into())
        );
        assert_eq!(err(", algorithm=MD5-sess"), MissingParam("cnonce"));
        assert_eq!(
            DigestResponse::parse(r#"Digest username="u", realm="r", nonce="n", uri="sip:x""#),
            Err(MissingParam("response"))
        );
    }
}
