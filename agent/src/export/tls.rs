//! TLS for `https` OTLP endpoints: which servers to trust and, for mutual
//! TLS, the client's own identity, from the OTLP exporter variables
//! (`OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`, `..._CLIENT_CERTIFICATE`,
//! `..._CLIENT_KEY`). Files are read and parsed at start-up, so a wrong path
//! or a key that is not PEM stops kspan with the variable named rather than
//! failing every export later.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ExportError;
use super::config::invalid;

const CA_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"];
const CLIENT_CERT_VARS: [&str; 2] =
    ["OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"];
const CLIENT_KEY_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"];

/// PEM contents, already checked to parse.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Extra trusted CA certificates (PEM), on top of the system's and
    /// Mozilla's roots: a collector with a private CA then needs no
    /// change to the node's trust store.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key (PEM) for mutual TLS.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsConfig {
    /// Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("extra_ca", &self.ca_pem.is_some())
            .field("client_identity", &self.client_identity.is_some())
            .finish()
    }
}

impl TlsConfig {
    /// Reads the files the variables name. The signal-specific variable of
    /// each pair wins.
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ExportError> {
        let ca_pem = match read_first(get, &CA_VARS)? {
            None => None,
            Some((var, path, pem)) => {
                certificates(&pem).map_err(|reason| invalid(var, &path, reason))?;
                Some(pem)
            }
        };
        let client_identity = match (read_first(get, &CLIENT_CERT_VARS)?, read_first(get, &CLIENT_KEY_VARS)?) {
            (None, None) => None,
            (Some((var, path, _)), None) | (None, Some((var, path, _))) => {
                return Err(invalid(
                    var,
                    path,
                    "mutual TLS needs both a client certificate and its key \
                     (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY)",
                ));
            }
            (Some((cert_var, cert_path, cert)), Some((key_var, key_path, key))) => {
                certificates(&cert).map_err(|reason| invalid(cert_var, &cert_path, reason))?;
                private_key(&key).map_err(|reason| invalid(key_var, &key_path, reason))?;
                Some((cert, key))
            }
        };
        Ok(Self { ca_pem, client_identity })
    }

    /// The client configuration for OTLP/HTTP: the system's roots, Mozilla's
    /// (for hosts without a trust store, such as distroless images), and
    /// the configured CA; HTTP/1.1 only, as the HTTP client speaks no other.
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // Unreadable system certificates only narrow the trust; the bundled
        // roots and the configured CA still apply.
        let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(pem) = &self.ca_pem {
            for cert in certificates(pem)? {
                roots.add(cert).map_err(|e| format!("unusable CA certificate: {e}"))?;
            }
        }
        // ring, as tonic's TLS uses: aws-lc (which rustls now steers to, for
        // its post-quantum key exchange) needs cmake to build, and a link
        // to the collector gains little from post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match &self.client_identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| format!("unusable client certificate or key: {e}"))?,
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The same trust and identity for the gRPC channel.
    pub fn tonic_client_config(&self) -> tonic::transport::ClientTlsConfig {
        let mut config = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
        if let Some(pem) = &self.ca_pem {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &self.client_identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        config
    }
}

/// `(variable, path, contents)` of the first variable of `vars` that is set.
fn read_first(
    get: &impl Fn(&str) -> Option<String>,
    vars: &[&'static str],
) -> Result<Option<(&'static str, String, Vec<u8>)>, ExportError> {
    let Some((var, path)) = vars.iter().find_map(|&var| get(var).map(|path| (var, path))) else {
        return Ok(None);
    };
    match std::fs::read(&path) {
        Ok(contents) => Ok(Some((var, path, contents))),
        Err(e) => Err(invalid(var, &path, format!("cannot read the file: {e}"))),
    }
}

pub(crate) fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into());
    }
    Ok(certs)
}

pub(crate) fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
