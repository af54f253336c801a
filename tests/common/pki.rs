//! Throwaway certificates for the TLS tests, made with rcgen in a temp dir (no openssl needed),
//! and rustls client configurations that use them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use starling::config::TlsConfig;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The Common Name of [`TestPki::client`], the username `use_identity_as_username` gives it.
pub const CLIENT_CN: &str = "device-7";

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that can issue server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("Starling test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");
        let cert = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&cert, issuer.pem()).expect("write CA cert");
        Ca { issuer, cert }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, dir: &Path, name: &str) -> CertFiles {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name = dn(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(dir, name, params)
    }

    /// A client certificate whose Common Name is `cn`.
    pub fn client(&self, dir: &Path, name: &str, cn: &str) -> CertFiles {
        self.issue(dir, name, client_params(cn))
    }

    /// A client certificate that expired in 2020.
    pub fn expired_client(&self, dir: &Path, name: &str, cn: &str) -> CertFiles {
        let mut params = client_params(cn);
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        self.issue(dir, name, params)
    }

    fn issue(&self, dir: &Path, name: &str, params: CertificateParams) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Starling tests");
    dn.push(DnType::CommonName, cn);
    dn
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// The certificates a TLS test needs, in one temp dir: a CA with a server certificate and
/// client certificates (valid, expired), and a second CA with a client certificate of its own.
pub struct TestPki {
    pub dir: TempDir,
    pub ca: Ca,
    pub server: CertFiles,
    /// Valid, issued by `ca`, Common Name [`CLIENT_CN`].
    pub client: CertFiles,
    /// Issued by `ca`, expired.
    pub expired: CertFiles,
    pub other_ca: Ca,
    /// Valid, but issued by `other_ca`.
    pub foreign: CertFiles,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path();
        let ca = Ca::new(path, "main");
        let server = ca.server(path, "server");
        let client = ca.client(path, "client", CLIENT_CN);
        let expired = ca.expired_client(path, "expired", "device-old");
        let other_ca = Ca::new(path, "other");
        let foreign = other_ca.client(path, "foreign", "intruder");
        TestPki {
            dir,
            ca,
            server,
            client,
            expired,
            other_ca,
            foreign,
        }
    }

    /// Server settings with this PKI's server certificate; no client certificates.
    pub fn server_tls(&self) -> TlsConfig {
        TlsConfig {
            cert_file: self.server.cert.clone(),
            key_file: self.server.key.clone(),
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        }
    }

    /// Server settings that require a client certificate from `ca`.
    pub fn mutual_tls(&self, use_identity_as_username: bool) -> TlsConfig {
        TlsConfig {
            ca_file: Some(self.ca.cert.clone()),
            require_certificate: true,
            use_identity_as_username,
            ..self.server_tls()
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration trusting `ca_file`, presenting `identity` if given.
pub fn client_config(ca_file: &Path, identity: Option<&CertFiles>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let chain = CertificateDer::pem_file_iter(&files.cert)
                .expect("read cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("cert PEM");
            let key = PrivateKeyDer::from_pem_file(&files.key).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
    };
    Arc::new(config)
}

/// Connects over TLS to `addr` as `localhost`, or fails with the handshake's error.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}
