//! TLS to PostgreSQL: rustls with the ring provider.
//!
//! The same connector serves every `sslmode`: with `disable` it is never used, with
//! `prefer` it is used when the server offers TLS, with `require` the connection fails
//! without it. Heroku Postgres' certificates are self-signed, so by default the certificate
//! is not verified (the handshake signature still is). `sslmode=verify-full` verifies the
//! certificate and the host name, `verify-ca` the certificate alone, against the Mozilla
//! roots, or against the CAs of `sslrootcert=/path/ca.pem` (a private CA: AWS RDS, Cloud
//! SQL, Supabase and self-hosted clusters publish their bundle).

use std::sync::Arc;

use rustls::{
    CertificateError, DigitallySignedStruct, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::TlsCheck;

/// The connector every PostgreSQL connection of the process uses.
pub type Connector = MakeRustlsConnect;

/// The connector for `check`; an unreadable or empty `sslrootcert` file is an error naming it.
pub fn connector(check: &TlsCheck) -> Result<Connector, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    if !check.verify {
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Relaxed {
                provider,
                chain: None,
            }))
            .with_no_client_auth();
        return Ok(MakeRustlsConnect::new(config));
    }
    let roots = Arc::new(match &check.root_cert {
        Some(path) => private_roots(path)?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    });
    let config = if check.host_name {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let chain = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Relaxed {
                provider,
                chain: Some(chain),
            }))
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The CAs of a PEM bundle (`sslrootcert`), read with rustls' own PEM support.
fn private_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let shown = path.display();
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read sslrootcert {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert {shown} is not a PEM certificate bundle: {e}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "sslrootcert {shown} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| format!("sslrootcert {shown} holds a certificate rustls refuses: {e}"))?;
    }
    Ok(roots)
}

/// The checks of libpq's `require` and `verify-ca`, which rustls' default verifier (chain
/// and host name, i.e. `verify-full`) does not offer. The handshake signature is always
/// verified: the server must hold the certificate's key.
#[derive(Debug)]
struct Relaxed {
    provider: Arc<CryptoProvider>,
    /// `None`: any certificate (`require`). `Some`: it must chain to these roots, whatever
    /// host name it is for (`verify-ca`).
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
