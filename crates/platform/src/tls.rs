//! The control plane's CA and its control listener's certificate.
//!
//! The CA is made once, by whichever comes first of `commons up` and
//! `commons node token`, in `DATA/control-ca/` (`ca.key`, mode 0600, and
//! `ca.der`); it is separate from `node.key`. Its fingerprint
//! ([`agent::tls::Pin`]) is the second half of every join token. Each start
//! of `commons up` signs a fresh certificate for the control listener for
//! the names it is configured to be reached at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent::tls::Pin;
use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const CA_DIR: &str = "control-ca";
const CA_KEY: &str = "ca.key";
const CA_CERT: &str = "ca.der";
const CA_NAME: &str = "OneCommons control plane CA";

/// The control plane's CA: its certificate and key.
pub struct ControlCa {
    cert: Vec<u8>,
    key: KeyPair,
}

/// The CA's parameters: the same on every start, so that what it signs
/// names it as it is named in `ca.der`.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl ControlCa {
    /// The CA in `data_dir`, made now if there is none.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<ControlCa> {
        let dir = data_dir.join(CA_DIR);
        if !dir.exists() {
            create(data_dir, &dir)?;
        }
        let key_path = dir.join(CA_KEY);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "{}: mode {:o} lets others read it; run chmod 600 on it",
                    key_path.display(),
                    mode & 0o777
                );
            }
        }
        let pem = std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
        let cert_path = dir.join(CA_CERT);
        let cert = std::fs::read(&cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
        Ok(ControlCa { cert, key })
    }

    /// What a join token pins.
    pub fn pin(&self) -> Pin {
        Pin::of(&self.cert)
    }

    /// A TLS configuration for the control listener: a new certificate,
    /// signed by this CA for `names` (host names or IP addresses).
    pub fn server_config(&self, names: &[String]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let key = KeyPair::generate().context("making the control listener's key")?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| anyhow::anyhow!("the control listener's names {names:?}: {e}"))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "OneCommons control listener");
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer).context("signing the control listener's certificate")?;
        let chain = vec![cert.der().clone(), CertificateDer::from(self.cert.clone())];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(agent::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .context("the control listener's certificate")?;
        Ok(Arc::new(config))
    }
}

/// Makes the CA beside `dir` and renames it into place: a crash leaves
/// none or a whole one, and of two made at once the first stays.
fn create(data_dir: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let key = KeyPair::generate().context("making the CA's key")?;
    let cert = ca_params().self_signed(&key).context("making the CA's certificate")?;
    let partial: PathBuf = data_dir.join(format!("{CA_DIR}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let key_path = partial.join(CA_KEY);
    let mut file = options.open(&key_path).with_context(|| format!("creating {}", key_path.display()))?;
    file.write_all(key.serialize_pem().as_bytes()).and_then(|()| file.sync_all())?;
    std::fs::write(partial.join(CA_CERT), cert.der().as_ref())?;
    if let Err(e) = std::fs::rename(&partial, dir) {
        let _ = std::fs::remove_dir_all(&partial);
        if !dir.exists() {
            return Err(e).with_context(|| format!("creating {}", dir.display()));
        }
    }
    Ok(())
}
