//! TLS for the server (`--tls-cert`, `--tls-key`): the PEM files read and checked at
//! start-up ([`TlsIdentity::load`]), then turned into a rustls configuration (ring provider)
//! offering HTTP/2 and HTTP/1.1, for the server's own acceptor (`transport`).
//!
//! Checks, each error naming its file: both files readable; the certificate file holds at
//! least one `CERTIFICATE` block (the server's first, then any intermediates); the key file
//! holds a private key (PKCS#8, PKCS#1 RSA or SEC1 EC); rustls accepts the pair.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Longest a client may take to finish the TLS handshake before its connection is closed
/// (without one, a client that connects and never speaks would hold a socket and a task for
/// ever). A handshake is a few round trips: 10 s is generous on any
/// real network.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the TLS files cannot be used (start-up fails with exit status 64).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of `--tls-cert` and `--tls-key` was given. Give both, or neither for
    /// plaintext.
    #[error("--tls-cert and --tls-key go together (only {given} was given)")]
    Incomplete {
        /// The flag that was given.
        given: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// "certificate file" or "key file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM `CERTIFICATE` block (or a broken one).
    #[error("no PEM certificate in {}{}", path.display(), reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// The parser's complaint, if it had one.
        reason: Option<String>,
    },
    /// The key file holds no PEM private key (or a broken one).
    #[error("no PEM private key in {}: {reason}", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// rustls refused the certificate and key together (e.g. an unsupported key type).
    #[error("cannot use {} with {}: {reason}", cert.display(), key.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

impl TlsError {
    /// The flag to fix.
    pub fn flag(&self) -> &'static str {
        match self {
            Self::Incomplete {
                given: "--tls-cert",
            }
            | Self::NoKey { .. }
            | Self::Read {
                what: "key file", ..
            } => "--tls-key",
            _ => "--tls-cert",
        }
    }
}

/// An error and its sources, `: `-separated (tonic's own message is only "transport error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// A checked certificate chain and private key, ready for the transport. `Debug` shows the
/// paths only, never the key.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_path: PathBuf,
    key_path: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

impl TlsIdentity {
    /// `--tls-cert`/`--tls-key` as given: `None` for neither (plaintext).
    ///
    /// # Errors
    /// [`TlsError::Incomplete`] for one without the other, else as [`TlsIdentity::load`].
    pub fn from_flags(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Incomplete {
                given: "--tls-cert",
            }),
            (None, Some(_)) => Err(TlsError::Incomplete { given: "--tls-key" }),
            (Some(cert), Some(key)) => Self::load(cert, key).map(Some),
        }
    }

    /// Reads and checks a PEM certificate chain and its private key.
    ///
    /// # Errors
    /// [`TlsError`] naming the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read("certificate file", cert)?;
        let key_pem = read("key file", key)?;
        Self::from_pem(cert, cert_pem, key, key_pem)
    }

    /// Checks PEM contents (`cert`, `key`: the paths named in errors).
    ///
    /// # Errors
    /// As [`TlsIdentity::load`].
    pub fn from_pem(
        cert: &Path,
        cert_pem: Vec<u8>,
        key: &Path,
        key_pem: Vec<u8>,
    ) -> Result<Self, TlsError> {
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&cert_pem).collect();
        match certs {
            Ok(certs) if !certs.is_empty() => {}
            Ok(_) => {
                return Err(TlsError::NoCertificate {
                    path: cert.to_owned(),
                    reason: None,
                });
            }
            Err(e) => {
                return Err(TlsError::NoCertificate {
                    path: cert.to_owned(),
                    reason: Some(e.to_string()),
                });
            }
        }
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        let identity = Self {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            cert_pem,
            key_pem,
        };
        // Build the acceptor once now, so a pair rustls refuses fails at start-up.
        identity.server_config().map_err(|e| TlsError::Rejected {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: chain(&e),
        })?;
        Ok(identity)
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The rustls server configuration (ring provider), offering HTTP/2 (gRPC, REST) and
    /// HTTP/1.1 (REST, WebSocket) by ALPN. Handshakes are bounded by [`HANDSHAKE_TIMEOUT`]
    /// where the transport accepts them.
    ///
    /// # Errors
    /// What rustls says about the certificate and key.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
