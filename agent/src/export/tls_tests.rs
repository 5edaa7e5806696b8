use std::collections::HashMap;

use super::*;
use crate::export::test_pki::pki;

fn lookup(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    move |k| map.get(k).cloned()
}

fn error(vars: &[(&str, String)]) -> String {
    match TlsConfig::from_lookup(&lookup(vars)) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn nothing_set_means_system_roots_only() {
    let tls = TlsConfig::from_lookup(&lookup(&[])).unwrap();
    assert_eq!(tls, TlsConfig::default());
    assert!(tls.rustls_client_config().is_ok());
}

#[test]
fn ca_and_client_identity_are_read_and_usable() {
    let pki = pki();
    let tls = TlsConfig::from_lookup(&lookup(&[
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.path("other-ca.pem")),
        // The signal-specific variable wins.
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", pki.path("ca.pem")),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", pki.path("client.pem")),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", pki.path("client.key")),
    ]))
    .unwrap();
    assert_eq!(tls.ca_pem.as_deref(), Some(pki.ca_pem.as_bytes()));
    assert!(tls.client_identity.is_some());
    let config = tls.rustls_client_config().unwrap();
    assert!(config.client_auth_cert_resolver.has_certs());
    // Key material never reaches the logs.
    let shown = format!("{tls:?}");
    assert!(!shown.contains("PRIVATE KEY") && !shown.contains("BEGIN"), "{shown}");
}

#[test]
fn unreadable_or_malformed_files_name_their_variable() {
    let pki = pki();
    let missing = error(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem".into())]);
    assert!(missing.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && missing.contains("cannot read"), "{missing}");
    let not_cert = error(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.path("client.key"))]);
    assert!(not_cert.contains("no PEM certificate"), "{not_cert}");
    let not_key = error(&[
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", pki.path("client.pem")),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", pki.path("client.pem")),
    ]);
    assert!(not_key.contains("OTEL_EXPORTER_OTLP_CLIENT_KEY") && not_key.contains("private key"), "{not_key}");
}

#[test]
fn half_a_client_identity_is_an_error() {
    let pki = pki();
    let e = error(&[("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", pki.path("client.key"))]);
    assert!(e.contains("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY") && e.contains("both"), "{e}");
    let e = error(&[("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", pki.path("client.pem"))]);
    assert!(e.contains("both"), "{e}");
}
