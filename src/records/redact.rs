//! PII redaction of what voxline stores and sends: transcripts, caller memory, post-call
//! analyses and webhook payloads (`[redaction]` in voxline.toml). Each rule finds one kind of
//! personal data by pattern and replaces it with `[redacted:KIND]`.
//!
//! Built-in kinds:
//! - `card`: 13 to 19 digits, spaces or dashes between them allowed, that pass the Luhn
//!   check (so an order number of 16 digits is kept unless it is a valid card number);
//! - `email`: `local@domain.tld`;
//! - `phone`: a `+` or a digit, then digits, spaces, dots, dashes and parentheses, 8 to 15
//!   digits in all;
//! - `ssn`: a US Social Security number, `123-45-6789`;
//! - `iban`: two letters, two check digits and 11 to 30 letters or digits (spaces every four
//!   allowed), with a valid ISO 7064 mod-97 checksum.
//!
//! Custom rules are regular expressions (`regex` syntax), named for the replacement.
//!
//! What stays readable in JSON ([`Redactor::json`]): identifiers and routing — ids, Call-IDs,
//! From/To, agent, trunk, paths, times, states, a campaign target's `number` — since a
//! webhook consumer needs them to know which call it is about. Every other string (tool
//! arguments and outputs, summaries, outcomes, variables, errors) is redacted.

use std::borrow::Cow;

use regex::Regex;
use serde_json::Value;

/// A built-in kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PiiKind {
    /// Payment card numbers (Luhn-checked).
    Card,
    /// E-mail addresses.
    Email,
    /// Phone numbers.
    Phone,
    /// US Social Security numbers.
    Ssn,
    /// IBANs (mod-97 checked).
    Iban,
}

impl PiiKind {
    /// Every kind, in the order rules run (the most specific first).
    pub const ALL: [PiiKind; 5] = [
        PiiKind::Card,
        PiiKind::Iban,
        PiiKind::Email,
        PiiKind::Ssn,
        PiiKind::Phone,
    ];

    /// Its name in `[redaction] kinds` and in the replacement.
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Card => "card",
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Ssn => "ssn",
            PiiKind::Iban => "iban",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<PiiKind> {
        PiiKind::ALL.into_iter().find(|k| k.name() == s)
    }

    fn pattern(self) -> &'static str {
        match self {
            PiiKind::Card => r"\b\d(?:[ -]?\d){12,18}\b",
            PiiKind::Email => r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
            PiiKind::Phone => r"(?:\+|\b)\d(?:[ .()-]{0,2}\d){7,14}\b",
            PiiKind::Ssn => r"\b\d{3}-\d{2}-\d{4}\b",
            PiiKind::Iban => r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
        }
    }

    fn check(self, found: &str) -> bool {
        match self {
            PiiKind::Card => luhn(found),
            PiiKind::Iban => iban_checksum(found),
            _ => true,
        }
    }
}

/// A rule: a pattern, an optional check of each match, and the replacement's name.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    re: Regex,
    kind: Option<PiiKind>,
}

/// The redaction rules in force. An empty redactor changes nothing.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    rules: Vec<Rule>,
}

/// JSON keys whose string values identify or route (kept by [`Redactor::json`]).
const KEPT_KEYS: &[&str] = &[
    "id",
    "call_id",
    "record_id",
    "from",
    "to",
    "direction",
    "trunk",
    "agent",
    "agent_version",
    "codec",
    "end_reason",
    "transcript_path",
    "recording_path",
    "started_at",
    "answered_at",
    "ended_at",
    "campaign",
    "campaign_name",
    "number",
    "state",
    "last_result",
    "result",
    "model",
    "at",
    "name",
    "role",
    "timestamp",
    "type",
];

/// Two redactors are equal when they have the same rules in the same order.
impl PartialEq for Redactor {
    fn eq(&self, other: &Redactor) -> bool {
        self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|(a, b)| a.name == b.name && a.re.as_str() == b.re.as_str())
    }
}

impl Eq for Redactor {}

impl Redactor {
    /// Rules for the built-in `kinds` and the custom `(name, regex)` patterns, in that order.
    /// Errors name the pattern that does not compile.
    pub fn new(kinds: &[PiiKind], custom: &[(String, String)]) -> Result<Redactor, String> {
        let mut rules = Vec::new();
        for k in PiiKind::ALL.into_iter().filter(|k| kinds.contains(k)) {
            rules.push(Rule {
                name: k.name().to_owned(),
                re: Regex::new(k.pattern()).map_err(|e| format!("{}: {e}", k.name()))?,
                kind: Some(k),
            });
        }
        for (name, pattern) in custom {
            rules.push(Rule {
                name: name.clone(),
                re: Regex::new(pattern).map_err(|e| format!("{name}: {e}"))?,
                kind: None,
            });
        }
        Ok(Redactor { rules })
    }

    /// Whether it has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `text` with every match replaced by `[redacted:NAME]`.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for rule in &self.rules {
            if !rule.re.is_match(&out) {
                continue;
            }
            let replaced = rule.re.replace_all(&out, |c: &regex::Captures<'_>| {
                let found = &c[0];
                match rule.kind {
                    Some(k) if !k.check(found) => found.to_owned(),
                    _ => format!("[redacted:{}]", rule.name),
                }
            });
            if let Cow::Owned(s) = replaced {
                out = Cow::Owned(s);
            }
        }
        out
    }

    /// Redacts the free-text strings of `v` in place (strings under [`KEPT_KEYS`] stay).
    pub fn json(&self, v: &mut Value) {
        if self.is_empty() {
            return;
        }
        self.json_inner(v, false);
    }

    fn json_inner(&self, v: &mut Value, kept: bool) {
        match v {
            Value::String(s) if !kept => {
                if let Cow::Owned(r) = self.text(s) {
                    *s = r;
                }
            }
            Value::Array(items) => {
                for i in items {
                    self.json_inner(i, kept);
                }
            }
            Value::Object(map) => {
                for (k, sub) in map.iter_mut() {
                    // A key's own value is kept when the key identifies; the values inside
                    // an object under it (variables, outcome) are judged by their own keys.
                    let keep = KEPT_KEYS.contains(&k.as_str()) && !sub.is_object();
                    self.json_inner(sub, keep);
                }
            }
            _ => {}
        }
    }
}

/// The Luhn checksum of the digits in `s`.
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616 / ISO 7064 mod-97-10: the IBAN with its first four characters moved to the
/// end, letters as 10..35, is 1 modulo 97.
fn iban_checksum(s: &str) -> bool {
    let compact: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 15 || compact.len() > 34 {
        return false;
    }
    let mut rem: u32 = 0;
    for c in compact[4..].iter().chain(&compact[..4]) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(&PiiKind::ALL, &[("member".into(), r"\bM-\d{6}\b".into())]).unwrap()
    }

    #[test]
    fn each_kind_is_found_and_look_alikes_are_kept() {
        let r = all();
        for (text, want) in [
            (
                "my card is 4111 1111 1111 1111 thanks",
                "my card is [redacted:card] thanks",
            ),
            (
                "order 4111111111111112 please",
                "order 4111111111111112 please",
            ),
            ("mail ada@example.co.uk now", "mail [redacted:email] now"),
            (
                "call +49 30 1234567 or 030-1234567",
                "call [redacted:phone] or [redacted:phone]",
            ),
            ("ssn 078-05-1120.", "ssn [redacted:ssn]."),
            (
                "IBAN DE89 3704 0044 0532 0130 00 ok",
                "IBAN [redacted:iban] ok",
            ),
            ("member M-123456 here", "member [redacted:member] here"),
            ("it costs 42 euros at 10:30", "it costs 42 euros at 10:30"),
        ] {
            assert_eq!(r.text(text), want, "{text}");
        }
    }

    #[test]
    fn checksums_decide_for_cards_and_ibans() {
        let r = Redactor::new(&[PiiKind::Iban, PiiKind::Card], &[]).unwrap();
        // A wrong check digit: not an IBAN (with only these kinds, nothing else matches).
        let bad = "IBAN DE00 3704 0044 0532 0130 00 ok";
        assert_eq!(r.text(bad), bad);
        assert_eq!(r.text("GB82WEST12345698765432"), "[redacted:iban]");
        assert_eq!(r.text("5500-0000-0000-0004"), "[redacted:card]");
        assert_eq!(r.text("5500-0000-0000-0005"), "5500-0000-0000-0005");
    }

    #[test]
    fn json_keeps_identifiers_and_redacts_free_text() {
        let r = all();
        let mut v = serde_json::json!({
            "id": "1796-4",
            "from": "sip:+4930123456@trunk",
            "tool_call": {"name": "lookup", "arguments": "{\"email\":\"ada@example.com\"}"},
            "analysis": {"summary": "Ada (ada@example.com) called", "outcome": {"phone": "+4930123456"}},
            "target": {"number": "+4930123456", "variables": {"card": "4111111111111111"}}
        });
        r.json(&mut v);
        assert_eq!(v["id"], "1796-4");
        assert_eq!(v["from"], "sip:+4930123456@trunk");
        assert_eq!(v["tool_call"]["name"], "lookup");
        assert_eq!(
            v["tool_call"]["arguments"],
            "{\"email\":\"[redacted:email]\"}"
        );
        assert_eq!(v["analysis"]["summary"], "Ada ([redacted:email]) called");
        assert_eq!(v["analysis"]["outcome"]["phone"], "[redacted:phone]");
        assert_eq!(v["target"]["number"], "+4930123456");
        assert_eq!(v["target"]["variables"]["card"], "[redacted:card]");
    }

    #[test]
    fn a_bad_custom_pattern_is_named() {
        let e = Redactor::new(&[], &[("broken".into(), "(".into())]).unwrap_err();
        assert!(e.starts_with("broken: "), "{e}");
    }
}
