//! A throwaway certificate authority for TLS tests: a CA, a server
//! certificate for `localhost` and 127.0.0.1, and a client certificate,
//! each written as PEM to a fresh directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

pub(crate) struct Pki {
    pub dir: PathBuf,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub ca_pem: String,
}

impl Pki {
    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // rcgen's default subject is the same for every certificate, which
    // would make each leaf look self-signed to OpenSSL.
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("leaf params");
    params.extended_key_usages = vec![usage];
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

/// Writes `ca.pem`, `other-ca.pem`, `server.pem`, `server.key`,
/// `client.pem` and `client.key`.
pub(crate) fn pki() -> Pki {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kspan-pki-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("pki dir");
    let (ca_pem, issuer) = ca("kspan test CA");
    // A CA the server's certificate is not signed by.
    let (other_ca_pem, _) = ca("another CA");
    let (server_cert_pem, server_key_pem) =
        leaf(&issuer, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert_pem, client_key_pem) = leaf(&issuer, &["kspan-client"], ExtendedKeyUsagePurpose::ClientAuth);
    for (name, pem) in [
        ("ca.pem", &ca_pem),
        ("other-ca.pem", &other_ca_pem),
        ("server.pem", &server_cert_pem),
        ("server.key", &server_key_pem),
        ("client.pem", &client_cert_pem),
        ("client.key", &client_key_pem),
    ] {
        std::fs::write(dir.join(name), pem).expect("write pem");
    }
    Pki { dir, server_cert_pem, server_key_pem, ca_pem }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
