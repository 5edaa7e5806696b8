//! Test certificates, made with rcgen: no openssl command needed.

use std::{path::Path, process::Command};

use super::TempDir;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`.
pub fn write_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // rcgen's default subject is the same for every certificate, which
    // would make each leaf look self-signed to OpenSSL.
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "kspan test CA");
    std::fs::write(dir.join("ca.pem"), ca_params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    for (name, san, usage) in [
        ("server", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", "kspan", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        std::fs::write(dir.join(format!("{name}.pem")), params.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// curl's output for `args`, trusting the CA [`write_pki`] wrote to `pki`;
/// fails the test if curl does.
pub fn curl_https(pki: &TempDir, args: &[&str]) -> String {
    let ca = pki.join("ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&ca)
        .args(args)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
