//! SIP profiles: per-peer defaults for a trunk (`sip-profiles/NAME.toml`).
//!
//! The shipped profiles are embedded in the binary, so `voxline run` works from any
//! directory. A `profile_dir` in `voxline.toml` is searched first, which both adds new
//! profiles and overrides shipped ones of the same name.

use std::path::Path;
use std::time::Duration;

use super::error::{ConfigError, ConfigErrorKind};
use super::file::FileProfile;
use super::resolve::{at_least, parse_codecs, valid_name};
use super::{Codec, DtmfMode, PrackMode, SrtpMode, TrunkTransport};

/// Profile used by a trunk that names none.
pub const DEFAULT_PROFILE: &str = "generic";

/// The profiles shipped in `sip-profiles/`, embedded at build time.
const BUILTIN: &[(&str, &str)] = &[
    ("asterisk", include_str!("../../sip-profiles/asterisk.toml")),
    (
        "freeswitch",
        include_str!("../../sip-profiles/freeswitch.toml"),
    ),
    ("jambonz", include_str!("../../sip-profiles/jambonz.toml")),
    ("kamailio", include_str!("../../sip-profiles/kamailio.toml")),
    ("twilio", include_str!("../../sip-profiles/twilio.toml")),
    ("telnyx", include_str!("../../sip-profiles/telnyx.toml")),
    (
        "twilio-secure",
        include_str!("../../sip-profiles/twilio-secure.toml"),
    ),
    (
        "telnyx-secure",
        include_str!("../../sip-profiles/telnyx-secure.toml"),
    ),
    ("generic", include_str!("../../sip-profiles/generic.toml")),
    (
        "generic-tls",
        include_str!("../../sip-profiles/generic-tls.toml"),
    ),
];

/// Default `port` of a profile file that sets none.
const DEFAULT_PORT: u16 = 5060;
/// Default `register_expires_s` (RFC 3261 §10.2.1.1 suggests 3600 s).
const DEFAULT_REGISTER_EXPIRES_S: u32 = 3600;
/// Smallest accepted `register_expires_s`. RFC 3261 §10.3 lets a registrar refuse short
/// intervals with 423; 60 s is the common floor (Asterisk's `minimum_expiration`).
pub(crate) const MIN_REGISTER_EXPIRES_S: u32 = 60;

/// A parsed profile. Fields absent from the file take the defaults documented on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The profile's name (file name without `.toml`).
    pub name: String,
    /// `description` (default empty).
    pub description: String,
    /// `transport` (default udp).
    pub transport: TrunkTransport,
    /// `port` (default 5060).
    pub port: u16,
    /// `register` (default false).
    pub register: bool,
    /// `register_expires_s` (default 3600).
    pub register_expires: Duration,
    /// `dtmf` (default rfc4733).
    pub dtmf: DtmfMode,
    /// `srtp` (default off).
    pub srtp: SrtpMode,
    /// `codecs`; `None` means "use `media.codecs`".
    pub codecs: Option<Vec<Codec>>,
    /// `session_timers` (default true).
    pub session_timers: bool,
    /// `prack` (default supported).
    pub prack: PrackMode,
    /// `options_keepalive_s`; `None` (0 or absent) means no OPTIONS pings.
    pub options_keepalive: Option<Duration>,
    /// `from_domain_from_host` (default true): when the trunk sets no `from_domain`,
    /// use its `host` as the From domain.
    pub from_domain_from_host: bool,
    /// `notes`: setup advice for a person (default empty).
    pub notes: String,
}

impl Profile {
    /// Names of the profiles built into the binary.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// The TOML text of a built-in profile.
    pub fn builtin_source(name: &str) -> Option<&'static str> {
        BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// A built-in profile, parsed. `None` if there is no built-in of that name.
    pub fn builtin(name: &str) -> Option<Result<Profile, ConfigError>> {
        let text = Profile::builtin_source(name)?;
        let origin = format!("sip-profiles/{name}.toml (built in)");
        Some(Profile::from_toml_str(name, text, &origin))
    }

    /// Parses a profile file's text; `origin` names the file in errors.
    pub fn from_toml_str(name: &str, text: &str, origin: &str) -> Result<Profile, ConfigError> {
        let file: FileProfile =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(origin, text, &e))?;
        let port = file.port.unwrap_or(DEFAULT_PORT);
        at_least(origin, "port", u64::from(port), 1)?;
        let register_expires_s = file
            .register_expires_s
            .unwrap_or(DEFAULT_REGISTER_EXPIRES_S);
        at_least(
            origin,
            "register_expires_s",
            u64::from(register_expires_s),
            u64::from(MIN_REGISTER_EXPIRES_S),
        )?;
        let codecs = match &file.codecs {
            Some(list) => Some(parse_codecs(list, origin, "codecs")?),
            None => None,
        };
        Ok(Profile {
            name: name.to_owned(),
            description: file.description.unwrap_or_default(),
            transport: file.transport.unwrap_or(TrunkTransport::Udp),
            port,
            register: file.register.unwrap_or(false),
            register_expires: Duration::from_secs(u64::from(register_expires_s)),
            dtmf: file.dtmf.unwrap_or(DtmfMode::Rfc4733),
            srtp: file.srtp.unwrap_or_default(),
            codecs,
            session_timers: file.session_timers.unwrap_or(true),
            prack: file.prack.unwrap_or(PrackMode::Supported),
            options_keepalive: secs_or_off(file.options_keepalive_s.unwrap_or(0)),
            from_domain_from_host: file.from_domain_from_host.unwrap_or(true),
            notes: file.notes.unwrap_or_default(),
        })
    }

    /// Finds profile `name`: `profile_dir/NAME.toml` first, then the built-ins.
    /// `key` is the dotted key naming the profile (for errors in `origin`).
    pub(crate) fn find(
        name: &str,
        profile_dir: Option<&Path>,
        origin: &str,
        key: &str,
    ) -> Result<Profile, ConfigError> {
        if !valid_name(name) {
            return Err(ConfigError::at(
                origin,
                key,
                ConfigErrorKind::InvalidName(name.to_owned()),
            ));
        }
        let mut searched = Vec::new();
        if let Some(dir) = profile_dir {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                let file_origin = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                    origin: file_origin.clone(),
                    position: None,
                    key: None,
                    kind: Box::new(ConfigErrorKind::Read(e)),
                })?;
                return Profile::from_toml_str(name, &text, &file_origin);
            }
            searched.push(dir.display().to_string());
        }
        if let Some(profile) = Profile::builtin(name) {
            return profile;
        }
        searched.push(format!(
            "built-in profiles: {}",
            Profile::builtin_names().collect::<Vec<_>>().join(", ")
        ));
        Err(ConfigError::at(
            origin,
            key,
            ConfigErrorKind::UnknownProfile {
                name: name.to_owned(),
                searched: searched.join("; "),
            },
        ))
    }
}

/// Seconds to a duration, 0 meaning "off".
pub(crate) fn secs_or_off(s: u32) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(u64::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses() {
        for name in Profile::builtin_names() {
            let p = Profile::builtin(name).unwrap().unwrap();
            assert_eq!(p.name, name);
            assert!(!p.description.is_empty(), "{name} has a description");
            assert!(!p.notes.is_empty(), "{name} has notes");
        }
        assert!(Profile::builtin("nope").is_none());
    }

    #[test]
    fn absent_keys_take_defaults() {
        let p = Profile::from_toml_str("x", "", "x.toml").unwrap();
        assert_eq!(p.transport, TrunkTransport::Udp);
        assert_eq!(p.port, 5060);
        assert!(!p.register);
        assert_eq!(p.register_expires, Duration::from_secs(3600));
        assert_eq!(p.dtmf, DtmfMode::Rfc4733);
        assert_eq!(p.codecs, None);
        assert!(p.session_timers);
        assert_eq!(p.prack, PrackMode::Supported);
        assert_eq!(p.options_keepalive, None);
        assert!(p.from_domain_from_host);
    }

    #[test]
    fn profile_errors_name_the_profile_file() {
        let e = Profile::from_toml_str("x", "dtmf = \"sms\"\n", "my/x.toml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("my/x.toml:1:8: dtmf: unknown variant `sms`"),
            "{msg}"
        );
        let e = Profile::from_toml_str("x", "codecs = [\"g729\"]\n", "my/x.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "my/x.toml: codecs[0]: unknown codec \"g729\" (known: pcmu, pcma, g722, opus)"
        );
    }
}
