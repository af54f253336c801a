//! TLS for a listener: rustls with the ring provider, TLS 1.2 and 1.3, optional client
//! certificates, and a certificate set that can be swapped while connections run (SIGHUP).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::x509;
use crate::config::TlsConfig;

/// Why a listener's TLS settings cannot be used. Each names the file at fault.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path} is not valid PEM: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    #[error("{what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("tls.key_file {0} holds no private key")]
    NoKey(PathBuf),
    #[error("tls.ca_file {path}: {source}")]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("tls.ca_file {path}: {source}")]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("tls.cert_file {cert} with tls.key_file {key}: {source}")]
    CertKey {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// Why one connection's TLS handshake did not give a usable stream.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error(
        "client certificate has no Common Name, DNS name or email address to use as the username"
    )]
    NoIdentity,
}

/// The ring provider, named explicitly: the process may link other providers, and rustls must
/// not have to guess.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_slice_iter(&read(what, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Builds the rustls configuration a listener with these settings serves, reading every file.
pub fn server_config(settings: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let chain = certificates("tls.cert_file", &settings.cert_file)?;
    let key_path = &settings.key_file;
    let key = match PrivateKeyDer::from_pem_slice(&read("tls.key_file", key_path)?) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoKey(key_path.clone())),
        Err(source) => {
            return Err(TlsError::Pem {
                what: "tls.key_file",
                path: key_path.clone(),
                source,
            });
        }
    };
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::CertKey {
            cert: settings.cert_file.clone(),
            key: key_path.clone(),
            source,
        })?;
    let builder = match &settings.ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("tls.ca_file", ca_path)? {
                roots.add(ca).map_err(|source| TlsError::BadCa {
                    path: ca_path.clone(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_certificate {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|source| TlsError::Verifier {
                path: ca_path.clone(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::CertKey {
            cert: settings.cert_file.clone(),
            key: key_path.clone(),
            source,
        })
}

/// A listener's TLS side: its settings and the configuration new handshakes use, which
/// [`TlsAcceptor::reload`] replaces. Connections already running keep the one they began with.
#[derive(Debug)]
pub struct TlsAcceptor {
    settings: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    pub fn new(settings: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor {
            current: RwLock::new(Arc::new(server_config(settings)?)),
            settings: settings.clone(),
        })
    }

    /// Reads the certificate, key and CA files again. On failure the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(server_config(&self.settings)?);
        *self.current.write() = fresh;
        Ok(())
    }

    /// Runs the server side of the handshake. With `use_identity_as_username`, also returns the
    /// identity of the client's certificate.
    pub async fn accept<S>(
        &self,
        stream: S,
    ) -> Result<(TlsStream<S>, Option<String>), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.current.read().clone();
        let tls = tokio_rustls::TlsAcceptor::from(config)
            .accept(stream)
            .await
            .map_err(HandshakeError::Tls)?;
        if !self.settings.use_identity_as_username {
            return Ok((tls, None));
        }
        // require_certificate is validated with use_identity_as_username, so the verifier has
        // already refused a client without a certificate.
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| x509::identity(leaf))
            .ok_or(HandshakeError::NoIdentity)?;
        Ok((tls, Some(identity)))
    }
}
