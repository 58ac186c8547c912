//! The cluster's certificate authority and the certificates it issues.
//!
//! Kubernetes is absent on the local provider, so this CA is the cluster's root of
//! authentication: etcd peers and clients, the KeyService's clients, and the owner's admin
//! credentials all chain to it. Its key lives in the control-plane node's state folder (0600).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::state::write_atomic;

pub struct ClusterCa {
    pub cert_pem: String,
    key_pem: zeroize::Zeroizing<String>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(2);
    p.not_after = now + time::Duration::days(days);
}

impl ClusterCa {
    pub fn generate(cluster_name: &str) -> anyhow::Result<Self> {
        Self::generate_named(&format!("{cluster_name} cluster CA"))
    }

    /// The control-plane CA: signs only control-plane nodes' certificates and the owner's
    /// admin certificate; etcd and the KeyService trust nothing else (see `services`).
    pub fn generate_control_plane(cluster_name: &str) -> anyhow::Result<Self> {
        Self::generate_named(&format!("{cluster_name} control-plane CA"))
    }

    fn generate_named(cn: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "constellation");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, 3650);
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        self.save_as(dir, "ca")
    }

    /// Writes `<stem>.crt` (0644) and `<stem>.key` (0600) into `dir`.
    pub fn save_as(&self, dir: &Path, stem: &str) -> anyhow::Result<()> {
        write_atomic(
            &dir.join(format!("{stem}.crt")),
            self.cert_pem.as_bytes(),
            0o644,
        )?;
        write_atomic(
            &dir.join(format!("{stem}.key")),
            self.key_pem.as_bytes(),
            0o600,
        )?;
        Ok(())
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        Self::load_as(dir, "ca")
    }

    /// Reads `<stem>.crt` and `<stem>.key` from `dir`.
    pub fn load_as(dir: &Path, stem: &str) -> anyhow::Result<Self> {
        let (crt, key) = (format!("{stem}.crt"), format!("{stem}.key"));
        let cert_pem =
            std::fs::read_to_string(dir.join(&crt)).with_context(|| format!("reading {crt}"))?;
        let key_pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(dir.join(&key)).with_context(|| format!("reading {key}"))?,
        );
        let key = KeyPair::from_pem(&key_pem).with_context(|| format!("parsing {key}"))?;
        let der = rustls::pki_types::CertificateDer::from(pem_to_der(&cert_pem)?);
        let issuer =
            Issuer::from_ca_cert_der(&der, key).with_context(|| format!("parsing {crt}"))?;
        Ok(Self {
            cert_pem,
            key_pem,
            issuer,
        })
    }

    fn issue(&self, params: CertificateParams) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
        })
    }

    /// A certificate usable as TLS server and client (etcd members, services) for `ips`.
    pub fn issue_node(&self, cn: &str, ips: &[Ipv4Addr]) -> anyhow::Result<Issued> {
        self.issue(node_params(cn, ips)?)
    }

    /// The owner's admin client certificate (`O=system:masters`, as kubeadm's admin user).
    pub fn issue_admin(&self, cluster_name: &str) -> anyhow::Result<Issued> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(DnType::CommonName, format!("{cluster_name}-admin"));
        p.distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        validity(&mut p, 365);
        self.issue(p)
    }

    /// The CA key (PEM) for control-plane joiners, which run a JoinService themselves.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A node certificate for the key in `csr_der` (DER PKCS#10, signature checked). The names
    /// come from the provider's record of the attested node, not from the CSR: a node cannot
    /// ask for another node's identity.
    pub fn sign_node_csr(&self, csr_der: &[u8], cn: &str, ip: Ipv4Addr) -> anyhow::Result<String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .context("parsing the CSR")?;
        csr.params = node_params(cn, &[ip])?;
        Ok(csr.signed_by(&self.issuer)?.pem())
    }
}

/// A node's certificate: CN, IP SANs (plus 127.0.0.1), server and client auth, one year.
fn node_params(cn: &str, ips: &[Ipv4Addr]) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = ips
        .iter()
        .chain([&Ipv4Addr::LOCALHOST])
        .map(|ip| SanType::IpAddress(IpAddr::V4(*ip)))
        .collect();
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    validity(&mut p, 365);
    Ok(p)
}

pub fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    Ok(
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .context("parsing PEM certificate")?
            .to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_roundtrip_and_issue() {
        let t = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("mini").unwrap();
        ca.save(t.path()).unwrap();
        let ca2 = ClusterCa::load(t.path()).unwrap();
        assert_eq!(ca.cert_pem, ca2.cert_pem);
        let n = ca2
            .issue_node("control-plane-0", &[Ipv4Addr::new(127, 20, 0, 1)])
            .unwrap();
        assert!(n.cert_pem.contains("BEGIN CERTIFICATE"));
        let a = ca2.issue_admin("mini").unwrap();
        assert!(a.key_pem.contains("PRIVATE KEY"));

        // A CSR asking for another name gets the name the CA was told.
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["evil".to_string()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "control-plane-0");
        let csr = p.serialize_request(&key).unwrap();
        let pem = ca2
            .sign_node_csr(csr.der(), "worker-3", Ipv4Addr::new(127, 20, 0, 9))
            .unwrap();
        let der = pem_to_der(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(
            cert.subject().to_string().contains("worker-3"),
            "{}",
            cert.subject()
        );
        let san = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(
            san.contains("[127, 20, 0, 9]") && !san.contains("evil"),
            "{san}"
        );
        assert!(ca2
            .sign_node_csr(b"not a csr", "w", Ipv4Addr::LOCALHOST)
            .is_err());
    }
}
