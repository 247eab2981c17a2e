//! TLS of the control link, pinned. The control plane signs its listener's
//! certificate with a CA of its own; the join token carries the SHA-256 of
//! that CA's certificate ([`JoinToken`]), and an agent trusts only a server
//! whose chain holds a CA of that fingerprint and whose certificate that
//! CA signed for the name the agent dialled. Public CAs play no part.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// The SHA-256 of a CA certificate's DER bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    /// The fingerprint of the certificate `der`.
    pub fn of(der: &[u8]) -> Pin {
        Pin(Sha256::digest(der).into())
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for Pin {
    type Err = String;
    fn from_str(s: &str) -> Result<Pin, String> {
        let mut pin = [0u8; 32];
        hex::decode_to_slice(s, &mut pin)
            .map_err(|_| format!("{s:?} is not a CA fingerprint (64 hexadecimal digits)"))?;
        Ok(Pin(pin))
    }
}

/// A join token as `commons node token NODE` prints it:
/// `ocn_<48 hex digits>.<64 hex digits>`, the node's secret (sent as the
/// bearer, stored only as its SHA-256) and the control plane's CA
/// fingerprint (never sent: it is what the agent checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    pub secret: String,
    pub pin: Pin,
}

impl std::str::FromStr for JoinToken {
    type Err = String;
    fn from_str(s: &str) -> Result<JoinToken, String> {
        let (secret, pin) = s.trim().split_once('.').ok_or_else(|| {
            "a join token is SECRET.FINGERPRINT (as `commons node token NODE` prints it); this one has no '.'"
                .to_owned()
        })?;
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err("the join token's secret (before the '.') is malformed".to_owned());
        }
        Ok(JoinToken { secret: secret.to_owned(), pin: pin.parse()? })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.secret, self.pin)
    }
}

/// The crypto every TLS end of the platform uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting only chains through the CA `pin`.
/// `mismatch` is set when a server presented any other chain.
pub fn client_config(pin: Pin, mismatch: Arc<AtomicBool>) -> rustls::ClientConfig {
    let provider = provider();
    let verifier = Arc::new(Pinned { pin, provider: provider.clone(), mismatch });
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

#[derive(Debug)]
struct Pinned {
    pin: Pin,
    provider: Arc<CryptoProvider>,
    mismatch: Arc<AtomicBool>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refuse = |why: String| {
            self.mismatch.store(true, Ordering::Relaxed);
            rustls::Error::General(why)
        };
        let Some(ca) = intermediates.iter().find(|c| Pin::of(c) == self.pin) else {
            return Err(refuse(format!("no certificate of the chain is the CA {} the join token names", self.pin)));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| refuse(format!("the pinned CA is unusable: {e}")))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| refuse(format!("the pinned CA is unusable: {e}")))?;
        verifier
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
            .map_err(|e| refuse(format!("the certificate is not the pinned CA's for this name: {e}")))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
