//! The testbed's PKI: a CA, the controller's server certificate, one client certificate per
//! host (URI SAN `spiffe://vnet/host/<id>`), and a bootstrap admin token, in `<state>/pki/`.
//!
//! Keys and the token are written with mode 0600. The controller gets only the token's
//! SHA-256 (`admin.sha256`); the token itself goes into the admin config file `admin.conf`.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rand::RngExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::{Digest as _, Sha256};

/// Where the files are.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn at(state_dir: &Path) -> Pki {
        Pki {
            dir: state_dir.join("pki"),
        }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn controller_cert(&self) -> PathBuf {
        self.dir.join("controller.crt")
    }
    pub fn controller_key(&self) -> PathBuf {
        self.dir.join("controller.key")
    }
    pub fn host_cert(&self, host: &str) -> PathBuf {
        self.dir.join(format!("host-{host}.crt"))
    }
    pub fn host_key(&self, host: &str) -> PathBuf {
        self.dir.join(format!("host-{host}.key"))
    }
    pub fn admin_hash(&self) -> PathBuf {
        self.dir.join("admin.sha256")
    }
    /// The admin's config file (controller URL, CA path, token).
    pub fn admin_config(&self) -> PathBuf {
        self.dir.join("admin.conf")
    }

    /// Creates every file: the CA, the controller's certificate for `controller_ips` (and
    /// `localhost`), each host's, and a fresh admin token. Returns the token.
    pub fn create(&self, controller_ips: &[IpAddr], hosts: &[&str]) -> anyhow::Result<String> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "vnet testbed CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        write(&self.ca(), ca_cert.pem().as_bytes(), 0o644)?;
        write(&self.ca_key(), ca_key.serialize_pem().as_bytes(), 0o600)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut sans = vec![SanType::DnsName("localhost".try_into()?)];
        sans.extend(controller_ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let (cert, key) = leaf(
            &issuer,
            "vn-controller",
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        write(&self.controller_cert(), cert.as_bytes(), 0o644)?;
        write(&self.controller_key(), key.as_bytes(), 0o600)?;
        for h in hosts {
            let (cert, key) = host_certificate(&issuer, h)?;
            write(&self.host_cert(h), cert.as_bytes(), 0o644)?;
            write(&self.host_key(h), key.as_bytes(), 0o600)?;
        }
        let secret: [u8; 32] = rand::rng().random();
        let id: [u8; 8] = rand::rng().random();
        let token = format!("vnet-{}-{}", hex::encode(id), hex::encode(secret));
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        write(&self.admin_hash(), format!("{hash}\n").as_bytes(), 0o600)?;
        Ok(token)
    }
}

/// A host's client certificate and key (PEM), naming it as `spiffe://vnet/host/<host>`.
pub fn host_certificate(
    issuer: &Issuer<'_, KeyPair>,
    host: &str,
) -> anyhow::Result<(String, String)> {
    let uri = format!("{}{host}", vnet_proto::HOST_URI_PREFIX);
    leaf(
        issuer,
        &format!("host {host}"),
        vec![SanType::URI(uri.as_str().try_into()?)],
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<(String, String)> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = sans;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(path: &Path, body: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(body)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_file_with_private_keys_private() {
        let d = tempfile::tempdir().unwrap();
        let pki = Pki::at(d.path());
        let token = pki
            .create(&["127.0.0.1".parse().unwrap()], &["h1", "h2"])
            .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        for p in [
            pki.ca_key(),
            pki.controller_key(),
            pki.host_key("h2"),
            pki.admin_hash(),
        ] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let hash = std::fs::read_to_string(pki.admin_hash()).unwrap();
        assert_eq!(hash.trim(), hex::encode(Sha256::digest(token.as_bytes())));
        assert!(
            std::fs::read_to_string(pki.host_cert("h1"))
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
}
