//! An in-process stand-in for AMD's key hierarchy: an ARK and ASK/ASVK (one fixed test-only
//! RSA-2048 key, `tests/data/test-rsa2048-ak.pk8`), a VCEK/VLEK (fresh ECDSA P-384 key) with
//! the SPL and hwID extensions, and reports signed by it — all in the real formats, so the
//! SEV-SNP verifier checks them like AMD's, once told to trust this ARK
//! ([`InsecureSnpSigner::roots`]).
//!
//! Insecure by construction (whoever holds the key signs any report); for tests, fuzz seeds
//! and benchmarks of variants for which no real evidence exists here (AWS VLEK documents,
//! Turin/Genoa reports, Go-format documents).

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

use crate::snp::report::{policy_bits, REPORT_LEN, SIGNED_LEN};
use crate::snp::{AmdCert, AmdRoots, Product, SigningKey, Tcb};

const TEST_RSA_KEY: &[u8] = include_bytes!("../tests/data/test-rsa2048-ak.pk8");
/// RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48 (as in AMD's certificates).
const ALG_PSS_SHA384: [u8; 72] = [
    0x30, 0x46, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A, 0x30, 0x39, 0xA0,
    0x0F, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
    0xA1, 0x1C, 0x30, 0x1A, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x08, 0x30,
    0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xA2, 0x03,
    0x02, 0x01, 0x30, 0xA3, 0x03, 0x02, 0x01, 0x01,
];
const AMD_ARC: [u8; 8] = [0x2B, 0x06, 0x01, 0x04, 0x01, 0x9C, 0x78, 0x01];

fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7F => vec![n as u8],
        0x80..=0xFF => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body = parts.concat();
    let mut out = vec![tag];
    out.extend(der_len(body.len()));
    out.extend(body);
    out
}

fn name(cn: &str) -> Vec<u8> {
    let atv = tlv(
        0x30,
        &[
            &[0x06, 0x03, 0x55, 0x04, 0x03],
            &tlv(0x0C, &[cn.as_bytes()]),
        ],
    );
    tlv(0x30, &[&tlv(0x31, &[&atv])])
}

fn ext(oid_tail: &[u8], value: &[u8]) -> Vec<u8> {
    let oid = tlv(0x06, &[&AMD_ARC, oid_tail]);
    tlv(0x30, &[&oid, &tlv(0x04, &[value])])
}

fn der_u8(v: u8) -> Vec<u8> {
    if v >= 0x80 {
        vec![0x02, 0x02, 0x00, v]
    } else {
        vec![0x02, 0x01, v]
    }
}

/// The stand-in key hierarchy of one product. Insecure; tests only.
pub struct InsecureSnpSigner {
    pub product: Product,
    pub signing_key: SigningKey,
    pub tcb: Tcb,
    pub chip_id: [u8; 64],
    pub ark_der: Vec<u8>,
    pub ask_der: Vec<u8>,
    pub leaf_der: Vec<u8>,
    rsa: RsaKeyPair,
    leaf: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for InsecureSnpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsecureSnpSigner")
            .field("product", &self.product)
            .field("signing_key", &self.signing_key)
            .finish_non_exhaustive()
    }
}

impl InsecureSnpSigner {
    /// A hierarchy for `product` whose leaf (VCEK or VLEK) certifies `tcb`.
    pub fn new(product: Product, signing_key: SigningKey, tcb: Tcb) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let rsa = RsaKeyPair::from_pkcs8(TEST_RSA_KEY).map_err(|e| format!("test RSA key: {e}"))?;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .map_err(|_| "generating a P-384 key failed".to_string())?;
        let leaf = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| format!("P-384 key: {e}"))?;
        let mut chip_id = [0u8; 64];
        for (i, b) in chip_id.iter_mut().enumerate() {
            *b = i as u8 ^ 0xA5;
        }
        let p = product.as_str();
        let (inter_cn, leaf_cn) = match signing_key {
            SigningKey::Vlek => (format!("SEV-VLEK-{p}"), "SEV-VLEK"),
            _ => (format!("SEV-{p}"), "SEV-VCEK"),
        };
        let rsa_spki = tlv(
            0x30,
            &[
                &[
                    0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
                    0x05, 0x00,
                ],
                &tlv(0x03, &[&[0], rsa.public().as_ref()]),
            ],
        );
        let ec_spki = tlv(
            0x30,
            &[
                &[
                    0x30, 0x10, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x05,
                    0x2B, 0x81, 0x04, 0x00, 0x22,
                ],
                &tlv(0x03, &[&[0], leaf.public_key().as_ref()]),
            ],
        );
        let mut leaf_exts = vec![
            ext(&[0x01], &der_u8(0)),
            ext(&[0x02], &tlv(0x16, &[format!("{p}-B0").as_bytes()])),
            ext(&[0x03, 0x01], &der_u8(tcb.bootloader)),
            ext(&[0x03, 0x02], &der_u8(tcb.tee)),
            ext(&[0x03, 0x03], &der_u8(tcb.snp)),
            ext(&[0x03, 0x08], &der_u8(tcb.microcode)),
        ];
        if let Some(fmc) = tcb.fmc {
            leaf_exts.push(ext(&[0x03, 0x09], &der_u8(fmc)));
        }
        if signing_key == SigningKey::Vcek {
            let hwid: &[u8] = if product == Product::Turin {
                &chip_id[..8]
            } else {
                &chip_id
            };
            leaf_exts.push(ext(&[0x04], hwid));
        }
        let exts = tlv(0xA3, &[&tlv(0x30, &[&leaf_exts.concat()])]);
        let mut this = Self {
            product,
            signing_key,
            tcb,
            chip_id,
            ark_der: Vec::new(),
            ask_der: Vec::new(),
            leaf_der: Vec::new(),
            rsa,
            leaf,
            rng,
        };
        this.ark_der = this.cert(&format!("ARK-{p}"), &format!("ARK-{p}"), &rsa_spki, &[])?;
        this.ask_der = this.cert(&format!("ARK-{p}"), &inter_cn, &rsa_spki, &[])?;
        this.leaf_der = this.cert(&inter_cn, leaf_cn, &ec_spki, &exts)?;
        Ok(this)
    }

    fn cert(
        &self,
        issuer: &str,
        subject: &str,
        spki: &[u8],
        exts: &[u8],
    ) -> Result<Vec<u8>, String> {
        let validity = tlv(
            0x30,
            &[
                &tlv(0x17, &[b"200101000000Z"]),
                &tlv(0x17, &[b"491231235959Z"]),
            ],
        );
        let tbs = tlv(
            0x30,
            &[
                &[0xA0, 0x03, 0x02, 0x01, 0x02],
                &[0x02, 0x01, 0x00],
                &ALG_PSS_SHA384,
                &name(issuer),
                &validity,
                &name(subject),
                spki,
                exts,
            ],
        );
        let mut sig = vec![0u8; self.rsa.public().modulus_len()];
        self.rsa
            .sign(&ring::signature::RSA_PSS_SHA384, &self.rng, &tbs, &mut sig)
            .map_err(|_| "RSA-PSS signing failed".to_string())?;
        Ok(tlv(
            0x30,
            &[&tbs, &ALG_PSS_SHA384, &tlv(0x03, &[&[0], &sig])],
        ))
    }

    /// Trusts this hierarchy's ARK for its product.
    pub fn roots(&self) -> AmdRoots {
        AmdRoots::from_keys(vec![(self.product, self.rsa.public().as_ref().to_vec())])
    }

    /// Leaf, intermediate and ARK, parsed.
    pub fn certs(&self) -> Vec<AmdCert> {
        [&self.leaf_der, &self.ask_der, &self.ark_der]
            .into_iter()
            .filter_map(|d| AmdCert::from_der(d).ok())
            .collect()
    }

    pub fn pem(der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    /// The raw TCB value in this product's layout.
    pub fn raw_tcb(&self) -> u64 {
        let t = self.tcb;
        let b = if self.product == Product::Turin {
            [
                t.fmc.unwrap_or(0),
                t.bootloader,
                t.tee,
                t.snp,
                0,
                0,
                0,
                t.microcode,
            ]
        } else {
            [t.bootloader, t.tee, 0, 0, 0, 0, t.snp, t.microcode]
        };
        u64::from_le_bytes(b)
    }

    /// A version-3 report with `report_data`, guest `policy` and `vmpl`, every TCB field at
    /// this hierarchy's TCB, signed.
    pub fn report(
        &self,
        report_data: &[u8; 64],
        policy: u64,
        vmpl: u32,
    ) -> Result<Vec<u8>, String> {
        let mut r = vec![0u8; REPORT_LEN];
        r[0..4].copy_from_slice(&3u32.to_le_bytes());
        r[8..16].copy_from_slice(&(policy | policy_bits::RESERVED_ONE).to_le_bytes());
        r[0x30..0x34].copy_from_slice(&vmpl.to_le_bytes());
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
        let tcb = self.raw_tcb().to_le_bytes();
        for off in [0x38, 0x180, 0x1E0, 0x1F0] {
            r[off..off + 8].copy_from_slice(&tcb);
        }
        let signer: u32 = if self.signing_key == SigningKey::Vlek {
            1 << 2
        } else {
            0
        };
        r[0x48..0x4C].copy_from_slice(&signer.to_le_bytes());
        r[0x50..0x90].copy_from_slice(report_data);
        r[0x90..0xC0].copy_from_slice(&[0x4D; 48]);
        let (family, model) = match self.product {
            Product::Milan => (0x19, 0x01),
            Product::Genoa => (0x19, 0x11),
            Product::Turin => (0x1A, 0x02),
        };
        r[0x188] = family;
        r[0x189] = model;
        if self.signing_key == SigningKey::Vcek {
            r[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        }
        r[0x1E8..0x1EB].copy_from_slice(&[1, 55, 1]);
        r[0x1EC..0x1EF].copy_from_slice(&[1, 55, 1]);
        self.sign(&mut r)?;
        Ok(r)
    }

    /// (Re-)signs a report in place with the leaf key.
    pub fn sign(&self, r: &mut [u8]) -> Result<(), String> {
        if r.len() != REPORT_LEN {
            return Err(format!("report has {} bytes", r.len()));
        }
        let sig = self
            .leaf
            .sign(&self.rng, &r[..SIGNED_LEN])
            .map_err(|_| "ECDSA signing failed".to_string())?;
        let sig = sig.as_ref();
        for (i, start) in [0x2A0usize, 0x2E8].into_iter().enumerate() {
            let field = &mut r[start..start + 72];
            field.fill(0);
            for (j, b) in sig[i * 48..(i + 1) * 48].iter().rev().enumerate() {
                field[j] = *b;
            }
        }
        Ok(())
    }
}
