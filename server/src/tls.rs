//! Transport security for `basedata serve`: the `[tls]` section turned into
//! a rustls acceptor (server certificate chain, and a client CA for mutual
//! TLS), and the verified client-certificate subject ([`CertSubject`]) of
//! a connection, which [`crate::conn`] hands to its requests.

pub use crate::cert::CertSubject;
use crate::config::{ClientAuth, TlsConfig};
use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Who is at the other end of a TLS connection: its address and, when it
/// presented a certificate that the client CA verified, that certificate's
/// subject. Found in every request's extensions as `ConnectInfo<TlsPeer>`
/// (with no subject over plain TCP).
#[derive(Clone, Debug)]
pub struct TlsPeer {
    pub addr: SocketAddr,
    pub subject: Option<Arc<CertSubject>>,
    /// The connection is TLS (the console then marks its cookies Secure).
    pub tls: bool,
}

/// The subject of the certificate a TLS client presented, when the client
/// CA verified it.
pub fn client_subject(conn: &rustls::ServerConnection) -> Option<Arc<CertSubject>> {
    // rustls only reports certificates its verifier accepted; the first is
    // the client's own.
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| CertSubject::from_cert_der(leaf.as_ref()))
        .map(Arc::new)
}

fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    if certs.is_empty() {
        bail!("the {what} {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Builds the TLS acceptor the `[tls]` section describes (TLS 1.2 and 1.3,
/// HTTP/1.1 only).
pub fn acceptor(cfg: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs(&cfg.cert, "TLS certificate")?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .with_context(|| format!("cannot read the TLS private key {}", cfg.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(read_certs(ca, "client CA")?);
            if added == 0 {
                bail!("the client CA {} holds no usable certificate", ca.display());
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match cfg.client_auth.unwrap_or_default() {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().context("client CA")?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .with_context(|| format!("TLS certificate {} and key {}", cfg.cert.display(), cfg.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, DnValue, KeyPair};

    fn cert_with(dn: &[(DnType, DnValue)]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), v.clone());
        }
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    fn utf8(s: &str) -> DnValue {
        DnValue::Utf8String(s.into())
    }

    #[test]
    fn certificate_subjects_match_configured_ones_exactly() {
        let cert = cert_with(&[
            (DnType::OrganizationName, utf8("市公安局")),
            (DnType::CommonName, DnValue::PrintableString("gongan".try_into().unwrap())),
        ]);
        let subject = CertSubject::from_cert_der(&cert).unwrap();
        // Order, attribute-name case and OID spelling do not matter; the
        // value's string type (PrintableString here) does not either.
        for same in ["CN=gongan,O=市公安局", "O=市公安局,CN=gongan", "cn=gongan,o=市公安局", "2.5.4.3=gongan,O=市公安局"] {
            assert_eq!(CertSubject::parse(same).unwrap(), subject, "{same}");
        }
        // Values compare exactly, and every attribute must be listed on both sides.
        for different in ["CN=Gongan,O=市公安局", "CN=gongan", "CN=gongan,O=市公安局,OU=x", "CN=gongan,O=市公安局 分局"] {
            assert_ne!(CertSubject::parse(different).unwrap(), subject, "{different}");
        }
        assert_eq!(subject.to_string(), "CN=gongan,O=市公安局");
    }

    #[test]
    fn escaped_separators_and_bmp_strings() {
        let cert = cert_with(&[
            (DnType::CommonName, DnValue::BmpString("a,b".try_into().unwrap())),
            (DnType::OrganizationalUnitName, utf8("户政, 窗口")),
            (DnType::CountryName, DnValue::PrintableString("CN".try_into().unwrap())),
        ]);
        let subject = CertSubject::from_cert_der(&cert).unwrap();
        // As `openssl x509 -noout -subject -nameopt RFC2253,-esc_msb` prints it.
        assert_eq!(CertSubject::parse(r"CN=a\,b,OU=户政\, 窗口,C=CN").unwrap(), subject);
        assert_eq!(subject.to_string(), r"CN=a\,b,C=CN,OU=户政\, 窗口");
    }

    #[test]
    fn malformed_subjects_are_refused() {
        for bad in ["", "gongan", "CN=gongan, O=x", "CN=", "CN= gongan", "XX=1", "CN=a,,O=b"] {
            assert!(CertSubject::parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(CertSubject::from_cert_der(b"not a certificate").is_none());
        assert!(CertSubject::from_cert_der(&cert_with(&[])).is_none());
    }
}
