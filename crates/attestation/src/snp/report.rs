//! The SEV-SNP attestation report (AMD SEV-SNP ABI specification 56860, `ATTESTATION_REPORT`),
//! versions 2, 3 and 5. All integers are little-endian.
//!
//! ```text
//! 0x000 version u32 │ 0x004 guest_svn u32 │ 0x008 policy u64 │ 0x010 family_id[16]
//! 0x020 image_id[16] │ 0x030 vmpl u32 │ 0x034 signature_algo u32 (1 = ECDSA P-384/SHA-384)
//! 0x038 current_tcb u64 │ 0x040 platform_info u64 │ 0x048 signer_info u32 │ 0x04C reserved
//! 0x050 report_data[64] │ 0x090 measurement[48] │ 0x0C0 host_data[32]
//! 0x0E0 id_key_digest[48] │ 0x110 author_key_digest[48] │ 0x140 report_id[32]
//! 0x160 report_id_ma[32] │ 0x180 reported_tcb u64 │ 0x188 cpuid fam/model/stepping (v3+)
//! 0x1A0 chip_id[64] │ 0x1E0 committed_tcb u64 │ 0x1E8 current build/minor/major
//! 0x1EC committed build/minor/major │ 0x1F0 launch_tcb u64
//! 0x1F8 launch_mit_vector u64 (v5) │ 0x200 current_mit_vector u64 (v5) │ reserved
//! 0x2A0 signature: r[72] s[72] (little-endian, upper 24 bytes zero), reserved[368]
//! ```
//!
//! The signature covers bytes `0x000..0x2A0`; the parser also requires every byte the
//! signature does not cover (the upper bytes of r and s, the signature's reserved tail) to be
//! zero, so that no byte of a report can change without the report being refused.

use super::Product;

/// Size of an attestation report.
pub const REPORT_LEN: usize = 0x4A0;
/// End of the signed part.
pub const SIGNED_LEN: usize = 0x2A0;
const SIG_R: usize = 0x2A0;
const SIG_S: usize = 0x2E8;
const SIG_COMPONENT_LEN: usize = 72;
const SIG_SCALAR_LEN: usize = 48;

/// Report versions this parser accepts.
pub const SUPPORTED_VERSIONS: [u32; 3] = [2, 3, 5];

/// Which key signed the report (`signer_info` bits 2..4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// Versioned chip endorsement key (per chip and TCB; certificate from AMD KDS).
    Vcek,
    /// Versioned loaded endorsement key (per cloud provider; AWS).
    Vlek,
    /// No key (`signing_key` = 7): the report is unsigned.
    None,
}

impl SigningKey {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
            SigningKey::None => "none",
        }
    }
}

/// A TCB version (u64): Milan and Genoa lay it out as `[bl, tee, 0, 0, 0, 0, snp, ucode]`,
/// Turin as `[fmc, bl, tee, snp, 0, 0, 0, ucode]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tcb {
    /// Turin only.
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl Tcb {
    /// Decodes a raw TCB version with `product`'s layout.
    pub fn decode(raw: u64, product: Product) -> Self {
        let b = raw.to_le_bytes();
        if product == Product::Turin {
            Tcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            }
        } else {
            Tcb {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            }
        }
    }

    /// True if every component is at least `min`'s (an absent FMC counts as 0).
    pub fn at_least(&self, min: &Tcb) -> bool {
        self.fmc.unwrap_or(0) >= min.fmc.unwrap_or(0)
            && self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc {fmc}, ")?;
        }
        write!(
            f,
            "bootloader {}, tee {}, snp {}, microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// Guest policy bits (`policy`).
pub mod policy_bits {
    pub const SMT: u64 = 1 << 16;
    /// Reserved, must be one.
    pub const RESERVED_ONE: u64 = 1 << 17;
    pub const MIGRATE_MA: u64 = 1 << 18;
    pub const DEBUG: u64 = 1 << 19;
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// Bits 26..63 are reserved and must be zero (ABI 1.57: bit 25 = PAGE_SWAP_DISABLE).
    pub const RESERVED_MBZ: u64 = !((1 << 26) - 1);
}

/// A parsed report. Keeps the raw bytes for the signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    raw: Box<[u8; REPORT_LEN]>,
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: u64,
    pub platform_info: u64,
    pub signer_info: u32,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: u64,
    /// `(family, model, stepping)` from CPUID, version 3 and later.
    pub cpuid: Option<(u8, u8, u8)>,
    pub chip_id: [u8; 64],
    pub committed_tcb: u64,
    /// `(build, minor, major)`.
    pub current_version: (u8, u8, u8),
    pub committed_version: (u8, u8, u8),
    pub launch_tcb: u64,
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[off..off + N]);
    out
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(b, off))
}

/// Why a report did not parse (the `report-format` check).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("SNP report has {0} bytes, expected {REPORT_LEN}")]
    Length(usize),
    #[error("SNP report version {0} is not supported (supported: 2, 3, 5)")]
    Version(u32),
    #[error("SNP report signature algorithm {0} is not ECDSA P-384 with SHA-384 (1)")]
    SignatureAlgorithm(u32),
    #[error("SNP report byte {offset:#x} ({field}) must be zero, is {value:#04x}")]
    NonZero {
        offset: usize,
        field: &'static str,
        value: u8,
    },
}

impl Report {
    /// Parses exactly [`REPORT_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<Self, ReportError> {
        if b.len() != REPORT_LEN {
            return Err(ReportError::Length(b.len()));
        }
        let version = u32_at(b, 0);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(ReportError::Version(version));
        }
        let signature_algo = u32_at(b, 0x34);
        if signature_algo != 1 {
            return Err(ReportError::SignatureAlgorithm(signature_algo));
        }
        // Bytes outside the signed region must be zero: the high bytes of r and s (scalars
        // are 48 bytes) and the reserved tail of the signature.
        let unsigned_zero = [
            (
                SIG_R + SIG_SCALAR_LEN..SIG_R + SIG_COMPONENT_LEN,
                "signature r, upper bytes",
            ),
            (
                SIG_S + SIG_SCALAR_LEN..SIG_S + SIG_COMPONENT_LEN,
                "signature s, upper bytes",
            ),
            (SIG_S + SIG_COMPONENT_LEN..REPORT_LEN, "signature, reserved"),
        ];
        for (range, field) in unsigned_zero {
            if let Some(i) = range.clone().find(|&i| b[i] != 0) {
                return Err(ReportError::NonZero {
                    offset: i,
                    field,
                    value: b[i],
                });
            }
        }
        let cpuid = (version >= 3).then(|| (b[0x188], b[0x189], b[0x18A]));
        Ok(Report {
            raw: Box::new(arr(b, 0)),
            version,
            guest_svn: u32_at(b, 0x04),
            policy: u64_at(b, 0x08),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(b, 0x30),
            signature_algo,
            current_tcb: u64_at(b, 0x38),
            platform_info: u64_at(b, 0x40),
            signer_info: u32_at(b, 0x48),
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: u64_at(b, 0x180),
            cpuid,
            chip_id: arr(b, 0x1A0),
            committed_tcb: u64_at(b, 0x1E0),
            current_version: (b[0x1E8], b[0x1E9], b[0x1EA]),
            committed_version: (b[0x1EC], b[0x1ED], b[0x1EE]),
            launch_tcb: u64_at(b, 0x1F0),
        })
    }

    /// The raw report bytes.
    pub fn bytes(&self) -> &[u8; REPORT_LEN] {
        &self.raw
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// The signature as the fixed-width big-endian `r ‖ s` (96 bytes) that ECDSA verifiers take.
    pub fn signature_be(&self) -> [u8; 96] {
        let mut out = [0u8; 96];
        for (i, start) in [SIG_R, SIG_S].into_iter().enumerate() {
            let le = &self.raw[start..start + SIG_SCALAR_LEN];
            for (j, byte) in le.iter().rev().enumerate() {
                out[i * SIG_SCALAR_LEN + j] = *byte;
            }
        }
        out
    }

    pub fn signing_key(&self) -> Result<SigningKey, u32> {
        match (self.signer_info >> 2) & 0x7 {
            0 => Ok(SigningKey::Vcek),
            1 => Ok(SigningKey::Vlek),
            7 => Ok(SigningKey::None),
            other => Err(other),
        }
    }

    /// `signer_info` bit 1: the chip ID is masked (all zero), as on AWS.
    pub fn mask_chip_key(&self) -> bool {
        self.signer_info & 0b10 != 0
    }

    /// `signer_info` bit 0: `author_key_digest` is present.
    pub fn author_key_en(&self) -> bool {
        self.signer_info & 0b1 != 0
    }

    /// The processor family from CPUID (versions 3 and later): family 0x19 model 0x0X = Milan,
    /// 0x19 model 0x1X = Genoa, 0x1A model 0x0X/0x1X = Turin.
    pub fn cpuid_product(&self) -> Option<Product> {
        let (family, model, _) = self.cpuid?;
        match (family, model >> 4) {
            (0x19, 0x0) => Some(Product::Milan),
            (0x19, 0x1) | (0x19, 0xA) => Some(Product::Genoa),
            (0x1A, 0x0) | (0x1A, 0x1) => Some(Product::Turin),
            _ => None,
        }
    }

    pub fn debug_allowed(&self) -> bool {
        self.policy & policy_bits::DEBUG != 0
    }
    pub fn migrate_ma_allowed(&self) -> bool {
        self.policy & policy_bits::MIGRATE_MA != 0
    }
    pub fn smt_allowed(&self) -> bool {
        self.policy & policy_bits::SMT != 0
    }
    /// `(major, minor)` minimum ABI version from the guest policy.
    pub fn policy_abi(&self) -> (u8, u8) {
        (
            ((self.policy >> 8) & 0xFF) as u8,
            (self.policy & 0xFF) as u8,
        )
    }
}
