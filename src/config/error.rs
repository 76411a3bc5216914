//! Configuration errors. Every message names the file, the dotted key and the reason.

use std::collections::HashMap;
use std::fmt;

use super::cidr::CidrError;

/// An error in `voxline.toml` or in a SIP profile file.
///
/// Displays as `FILE[:LINE:COLUMN]: KEY: REASON`, for example
/// `voxline.toml: media.ptime_ms: must be 10, 20 or 30 (got 25)` or
/// `voxline.toml:7:13: trunk[0].transport: unknown variant `tls`, expected `udp` or `tcp``.
/// The position is present for errors found while reading the TOML text (syntax and
/// type errors); the key is absent only when the file itself cannot be read or a syntax
/// error sits outside any key.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file the error is in (as given to [`Config::load`](super::Config::load),
    /// the `origin` argument of `from_toml_str`, or a profile file's path).
    pub origin: String,
    /// 1-based line and column, when known.
    pub position: Option<Position>,
    /// Dotted key path such as `trunk[0].transport` or `media.ptime_ms`.
    pub key: Option<String>,
    /// What is wrong (boxed to keep `Result<_, ConfigError>` small).
    pub kind: Box<ConfigErrorKind>,
}

/// A 1-based line and column (in characters) inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number in characters, starting at 1.
    pub column: usize,
}

/// The reason part of a [`ConfigError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read file: {0}")]
    Read(#[source] std::io::Error),
    /// TOML syntax error, or a value of the wrong type / an unknown key (message from the
    /// TOML parser).
    #[error("{0}")]
    Syntax(String),
    /// A number below its minimum.
    #[error("must be at least {min} (got {got})")]
    TooSmall {
        /// Smallest allowed value.
        min: u64,
        /// Value found.
        got: u64,
    },
    /// A number outside its allowed range.
    #[error("must be between {min} and {max} (got {got})")]
    OutOfRange {
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
        /// Value found.
        got: u64,
    },
    /// An agent's settings do not fit its kind.
    #[error("{0}")]
    AgentSetting(String),
    /// A TLS file or setting is unusable: the reason, with the file.
    #[error("{0}")]
    Tls(String),
    /// A `[[webhook]]` setting is unusable: the reason.
    #[error("{0}")]
    Webhook(String),
    /// A `[pricing]` setting is unusable: the reason.
    #[error("{0}")]
    Pricing(String),
    /// A `[recording_upload]` setting is unusable: the reason.
    #[error("{0}")]
    RecordingUpload(String),
    /// A `[store]` or `[cluster]` setting is unusable: the reason.
    #[error("{0}")]
    Cluster(String),
    /// `media.ptime_ms` is not one of the supported packet times.
    #[error("must be 10, 20 or 30 (got {0})")]
    Ptime(u32),
    /// `media.rtp_port_min` is odd (RTP uses even ports, RFC 3550 §11).
    #[error("must be even, RTP uses even ports (got {0})")]
    OddPort(u16),
    /// `media.rtp_port_min` is not below `media.rtp_port_max`.
    #[error("must be less than media.rtp_port_max (got {min} >= {max})")]
    PortOrder {
        /// `rtp_port_min`.
        min: u16,
        /// `rtp_port_max`.
        max: u16,
    },
    /// `sip.t1_ms` is larger than `sip.t2_ms`.
    #[error("must not be larger than sip.t2_ms (got {t1} > {t2})")]
    TimerOrder {
        /// T1 in milliseconds.
        t1: u32,
        /// T2 in milliseconds.
        t2: u32,
    },
    /// `sip.session_expires_s` is below `sip.min_se_s` (RFC 4028 §4).
    #[error("must be 0 (off) or at least sip.min_se_s = {min_se} (got {got})")]
    SessionExpiresBelowMinSe {
        /// `session_expires_s`.
        got: u32,
        /// `min_se_s`.
        min_se: u32,
    },
    /// `sip.udp_listen`, `tcp_listen`, `tls_listen`, `ws_listen` and `wss_listen` are all empty.
    #[error(
        "udp_listen, tcp_listen, tls_listen, ws_listen and wss_listen are all empty; at least \
         one listener is needed"
    )]
    NoListener,
    /// A trunk uses UDP but `sip.udp_listen` is empty.
    #[error("is \"udp\" but sip.udp_listen is empty")]
    NoUdpListener,
    /// `profile_dir` does not name a directory.
    #[error("\"{}\" is not a directory", .0.display())]
    NotADirectory(std::path::PathBuf),
    /// A list or string that must have content is empty.
    #[error("must not be empty")]
    Empty,
    /// A codec name outside the supported set.
    #[error("unknown codec \"{0}\" (known: pcmu, pcma, g722, opus)")]
    UnknownCodec(String),
    /// A codec listed twice.
    #[error("codec \"{0}\" is listed twice")]
    DuplicateCodec(String),
    /// An SRTP suite name voxline does not implement.
    #[error(
        "unknown SRTP suite \"{0}\" (known: AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM)"
    )]
    UnknownSrtpSuite(String),
    /// An SRTP suite listed twice.
    #[error("SRTP suite \"{0}\" is listed twice")]
    DuplicateSrtpSuite(String),
    /// A trunk or agent name used twice.
    #[error("duplicate name \"{name}\" (already used by {first})")]
    DuplicateName {
        /// The name.
        name: String,
        /// Key of the first use, e.g. `trunk[0].name`.
        first: String,
    },
    /// A name with characters outside `A-Z a-z 0-9 - _ .`.
    #[error("invalid name \"{0}\": use letters, digits, '-', '_' or '.'")]
    InvalidName(String),
    /// A trunk refers to a profile that exists neither in `profile_dir` nor built in.
    #[error("unknown profile \"{name}\" (looked in {searched})")]
    UnknownProfile {
        /// The profile name.
        name: String,
        /// Where it was looked for, human readable.
        searched: String,
    },
    /// A route names an agent that is not defined.
    #[error("unknown agent \"{name}\" (defined: {known})")]
    UnknownAgent {
        /// The agent name.
        name: String,
        /// Comma-separated names of the agents that exist.
        known: String,
    },
    /// An environment variable named by the file is not set (or empty / not UTF-8).
    #[error("environment variable {var} is not set{}", why_suffix(.why))]
    EnvVarNotSet {
        /// The variable's name.
        var: String,
        /// Why it is needed, if that helps (e.g. "register = true needs the password").
        why: Option<String>,
    },
    /// Both `password` and `password_env` are set on a trunk.
    #[error("set either password or password_env, not both")]
    PasswordConflict,
    /// `register = true` without a needed credential.
    #[error("register = true needs {0}")]
    MissingCredential(&'static str),
    /// An `allow_from` entry is not an address or CIDR network.
    #[error("invalid CIDR \"{text}\": {reason}")]
    InvalidCidr {
        /// The text given.
        text: String,
        /// The parse error.
        reason: CidrError,
    },
    /// A host name that is neither an IP address nor a DNS name.
    #[error("invalid host \"{text}\": {reason}")]
    InvalidHost {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A SIP URI (e.g. `outbound_proxy`) that voxline cannot use.
    #[error("invalid SIP URI \"{text}\": {reason}")]
    InvalidUri {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A route number pattern that is malformed.
    #[error("invalid pattern \"{text}\": {reason}")]
    InvalidPattern {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ConfigError {
    /// An error at a dotted key, without a text position (semantic validation).
    pub(crate) fn at(origin: &str, key: impl Into<String>, kind: ConfigErrorKind) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            position: None,
            key: Some(key.into()),
            kind: Box::new(kind),
        }
    }

    /// Converts a TOML parser error, locating line, column and key from its span.
    pub(crate) fn from_toml(origin: &str, text: &str, err: &toml::de::Error) -> Self {
        let reason = err
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let (position, key) = match err.span() {
            Some(span) => (
                Some(position_of(text, span.start)),
                key_at(text, span.start),
            ),
            None => (None, None),
        };
        ConfigError {
            origin: origin.to_owned(),
            position,
            key,
            kind: Box::new(ConfigErrorKind::Syntax(reason)),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if let Some(k) = &self.key {
            write!(f, ": {k}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

fn why_suffix(why: &Option<String>) -> String {
    match why {
        Some(w) => format!(" ({w})"),
        None => String::new(),
    }
}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn position_of(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    // invariant: offset <= text.len() and sits on a char boundary (loop above).
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Position { line, column }
}

/// The dotted key path (`trunk[1].transport`, `media.codecs`) of the statement that covers
/// byte `offset` of a TOML document, found by a light scan of table headers and key
/// lines. Returns `None` for a position at top level outside any key.
///
/// It understands `[table]`, `[[array.of.tables]]` (numbering entries from 0), dotted and
/// quoted keys, and values that span lines (arrays, inline tables, multi-line strings).
/// It does not look inside values, so an error in one element of an array reports the
/// array's key.
pub(crate) fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut table = String::new();
    let mut aot_counts: HashMap<String, usize> = HashMap::new();
    let mut state = ValueState::default();
    let mut stmt_key: Option<String> = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        let line_key: Option<String> = if state.continues() {
            state.scan(line);
            stmt_key.clone()
        } else {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix("[[") {
                let name = rest.split("]]").next().unwrap_or(rest);
                table = header_path(name, true, &mut aot_counts);
                stmt_key = None;
                Some(table.clone())
            } else if let Some(rest) = trimmed.strip_prefix('[') {
                let name = rest.split(']').next().unwrap_or(rest);
                table = header_path(name, false, &mut aot_counts);
                stmt_key = None;
                Some(table.clone())
            } else if trimmed.is_empty() || trimmed.starts_with('#') {
                non_empty(&table)
            } else {
                match split_key(trimmed) {
                    Some((key, value)) => {
                        let full = join(&table, &key);
                        state.scan(value);
                        stmt_key = Some(full.clone());
                        Some(full)
                    }
                    None => non_empty(&table),
                }
            }
        };
        if offset < pos && offset >= start {
            return line_key;
        }
    }
    stmt_key.or_else(|| non_empty(&table))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// Resolves a header like `trunk` / `a.b` to an indexed path, counting `[[...]]` entries.
fn header_path(name: &str, array: bool, counts: &mut HashMap<String, usize>) -> String {
    let segments = dotted_segments(name);
    let mut resolved = String::new();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        resolved = join(&resolved, seg);
        if i == last && array {
            let n = counts.entry(resolved.clone()).or_insert(0);
            *n += 1;
            resolved = format!("{resolved}[{}]", *n - 1);
        } else if let Some(n) = counts.get(&resolved) {
            resolved = format!("{resolved}[{}]", n.saturating_sub(1));
        }
    }
    resolved
}

/// Splits `a."b.c" . d` into `["a", "b.c", "d"]`.
fn dotted_segments(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in key.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None => match c {
                '"' | '\'' => quote = Some(c),
                '.' => out.push(std::mem::take(&mut cur).trim().to_owned()),
                _ => cur.push(c),
            },
        }
    }
    out.push(cur.trim().to_owned());
    out
}

/// Splits a key line `key = value` at the first `=` outside quotes.
fn split_key(line: &str) -> Option<(String, &str)> {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '=' => {
                    // invariant: i is the index of the one-byte '=' found by char_indices.
                    let key = dotted_segments(&line[..i]).join(".");
                    return Some((key, &line[i + 1..]));
                }
                _ => {}
            },
        }
    }
    None
}

/// Tracks whether a value continues on the next line.
#[derive(Default)]
struct ValueState {
    /// Nesting depth of `[` and `{`.
    depth: usize,
    /// Inside a multi-line string with this delimiter (`"""` or `'''`).
    multiline: Option<&'static str>,
}

impl ValueState {
    fn continues(&self) -> bool {
        self.depth > 0 || self.multiline.is_some()
    }

    fn scan(&mut self, text: &str) {
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(delim) = self.multiline {
                match rest.find(delim) {
                    Some(i) => {
                        // invariant: `find` returned the start of `delim` inside `rest`.
                        rest = &rest[i + delim.len()..];
                        self.multiline = None;
                    }
                    None => return,
                }
                continue;
            }
            if let Some(r) = rest.strip_prefix("\"\"\"") {
                self.multiline = Some("\"\"\"");
                rest = r;
                continue;
            }
            if let Some(r) = rest.strip_prefix("'''") {
                self.multiline = Some("'''");
                rest = r;
                continue;
            }
            let mut chars = rest.chars();
            let Some(c) = chars.next() else { return };
            rest = chars.as_str();
            match c {
                '#' => return,
                '[' | '{' => self.depth += 1,
                ']' | '}' => self.depth = self.depth.saturating_sub(1),
                '"' => rest = skip_basic_string(rest),
                '\'' => rest = rest.split_once('\'').map_or("", |(_, r)| r),
                _ => {}
            }
        }
    }
}

/// Skips the rest of a one-line basic string (handles `\"` escapes).
fn skip_basic_string(s: &str) -> &str {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            // invariant: '"' is one byte at index i.
            return &s[i + 1..];
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(text: &str, needle: &str) -> Option<String> {
        key_at(text, text.find(needle).unwrap())
    }

    #[test]
    fn position_counts_lines_and_chars() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(position_of(t, 0), Position { line: 1, column: 1 });
        let off = t.find("= 2").unwrap();
        assert_eq!(position_of(t, off), Position { line: 2, column: 4 });
        assert_eq!(position_of(t, t.len()), Position { line: 3, column: 1 });
    }

    #[test]
    fn finds_keys_in_tables_and_arrays_of_tables() {
        let t = "data_dir = \"x\"\n\n[media]\nptime_ms = 25\n\n[[trunk]]\nname = \"a\"\n\n[[trunk]]\n# c\nname = \"b\"\ntransport = \"tls\"\n";
        assert_eq!(key_of(t, "\"x\""), Some("data_dir".into()));
        assert_eq!(key_of(t, "25"), Some("media.ptime_ms".into()));
        assert_eq!(key_of(t, "\"a\""), Some("trunk[0].name".into()));
        assert_eq!(key_of(t, "\"tls\""), Some("trunk[1].transport".into()));
        assert_eq!(key_of(t, "# c"), Some("trunk[1]".into()));
        assert_eq!(
            key_at(t, t.rfind("[[trunk]]").unwrap()),
            Some("trunk[1]".into())
        );
    }

    #[test]
    fn multi_line_values_belong_to_their_key() {
        let t = "[media]\ncodecs = [\n  \"pcmu\", # first\n  \"g729\",\n]\nptime_ms = 20\n[x]\nnotes = \"\"\"\n[not a header]\nk = 1\n\"\"\"\nafter = 1\n";
        assert_eq!(key_of(t, "\"g729\""), Some("media.codecs".into()));
        assert_eq!(key_of(t, "ptime_ms"), Some("media.ptime_ms".into()));
        assert_eq!(key_of(t, "[not a header]"), Some("x.notes".into()));
        assert_eq!(key_of(t, "k = 1"), Some("x.notes".into()));
        assert_eq!(key_of(t, "after"), Some("x.after".into()));
    }

    #[test]
    fn quoted_and_dotted_keys() {
        let t = "[sip]\n\"t1_ms\" = \"x\"\nsub.key = 1\nurl = \"a=b#c\"\nnext = 2\n";
        assert_eq!(key_of(t, "\"x\""), Some("sip.t1_ms".into()));
        assert_eq!(key_of(t, "sub.key"), Some("sip.sub.key".into()));
        assert_eq!(key_of(t, "next"), Some("sip.next".into()));
    }

    #[test]
    fn subtable_of_array_entry_is_indexed() {
        let t = "[[a]]\nx = 1\n[[a]]\n[a.b]\ny = 2\n";
        assert_eq!(key_of(t, "y = 2"), Some("a[1].b.y".into()));
    }

    #[test]
    fn top_level_outside_key_is_none() {
        assert_eq!(key_at("\n# comment\n", 2), None);
    }
}
