//! SIP over TLS (RFC 3261 §26.2; RFC 5630): the certificates and keys the runtime's TLS
//! listener and its outbound TLS connections use.
//!
//! * **Server.** The certificate chain and the private key come from PEM files
//!   (`[sip] tls_cert_file`, `tls_key_file`: Let's Encrypt's `fullchain.pem` and `privkey.pem`
//!   work as they are). A file that cannot be read, holds no certificate or key, or whose key
//!   does not match the certificate is refused at start with the file and the reason.
//!   [`ServerTls`] holds the configuration behind a lock so that SIGHUP can load new files
//!   (certificate renewal) without a restart; connections already up keep theirs, and a
//!   reload that fails keeps the old configuration and logs why.
//! * **Client.** Servers are verified against Mozilla's roots (webpki-roots), or against
//!   `tls_ca_file` alone when it is set (a private CA), with the name voxline dialled as SNI.
//!
//! TLS 1.2 and 1.3, rustls with the ring provider (as the AI clients use).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate, key or CA file is unusable.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn file_err(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The certificates of a PEM file (at least one).
fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| file_err(path, e.to_string()))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(
            path,
            "holds no certificate (expected PEM \"BEGIN CERTIFICATE\")",
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        file_err(
            path,
            format!("no usable private key (PEM PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a certificate chain and a key (PEM files).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs(cert)?;
    let key_der = private_key(key)?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| file_err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| file_err(key, format!("does not go with {}: {e}", cert.display())))?;
    Ok(Arc::new(cfg))
}

/// A client certificate chain and its key (PEM files), presented to servers that ask for
/// one (mutual TLS).
#[derive(Debug, Clone, Copy)]
pub struct ClientCert<'a> {
    /// The certificate chain.
    pub cert: &'a Path,
    /// Its private key.
    pub key: &'a Path,
}

/// A client configuration: Mozilla's roots, or only the certificates of `ca` when given; with
/// `client`, that certificate for servers that ask for one.
pub fn client_config(
    ca: Option<&Path>,
    client: Option<ClientCert<'_>>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for c in certs(path)? {
                roots
                    .add(c)
                    .map_err(|e| file_err(path, format!("not a usable CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::File {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    let cfg = match client {
        None => cfg.with_no_client_auth(),
        Some(c) => {
            let chain = certs(c.cert)?;
            let key = private_key(c.key)?;
            cfg.with_client_auth_cert(chain, key).map_err(|e| {
                file_err(c.key, format!("does not go with {}: {e}", c.cert.display()))
            })?
        }
    };
    Ok(Arc::new(cfg))
}

/// The listener's TLS configuration, replaceable while running (SIGHUP).
#[derive(Debug, Clone)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl ServerTls {
    /// Loads the files; an error names the file and the reason.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let cfg = server_config(cert, key)?;
        Ok(ServerTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: Arc::new(RwLock::new(cfg)),
        })
    }

    /// The configuration for the next connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads the files again; on failure the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let cfg = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = cfg;
        Ok(())
    }
}

/// Names remembered for TLS addresses at most (past it the table starts over).
const NAMES: usize = 4096;

fn names() -> &'static Mutex<HashMap<SocketAddr, String>> {
    static NAMES_TABLE: OnceLock<Mutex<HashMap<SocketAddr, String>>> = OnceLock::new();
    NAMES_TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Remembers that `addr` was found for the host `name` (RFC 3263 resolution of a TLS
/// target): a connection to it verifies the certificate for that name and sends it as SNI.
pub fn remember_name(addr: SocketAddr, name: &str) {
    let mut t = names().lock().unwrap_or_else(PoisonError::into_inner);
    if t.len() >= NAMES && !t.contains_key(&addr) {
        t.clear();
    }
    t.insert(addr, name.to_owned());
}

/// The name a TLS connection to `addr` verifies: the host it was resolved from, else the
/// address itself (the certificate must then hold that IP).
pub fn server_name_for(addr: SocketAddr) -> ServerName<'static> {
    let name = names()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&addr)
        .cloned();
    name.and_then(|n| ServerName::try_from(n).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

/// Loads the certificate and key again on every SIGHUP (certificate renewal); a failure is
/// logged with the file and the reason, and the old ones stay.
pub async fn reload_on_sighup(tls: ServerTls) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("SIGHUP cannot be watched: the TLS certificate reloads only at restart");
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; the old one stays")
            }
        }
    }
}
