//! [`Tpm`]: one serialized connection to one TPM (the node's swtpm).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use attestation::tpm2::{HashAlg, PcrSelection, PcrSelectionList, TpmsAttest, TpmtPublic};
use zeroize::Zeroizing;

use crate::wire::{self, Command, Params};

/// Persistent handle of the ECC attestation key (go-tpm-tools `client.AttestationKeyECC`,
/// `DefaultAKECCHandle`).
pub const AK_HANDLE: u32 = 0x8100_8F00;
/// Number of PCRs quoted and read (PC Client: 0..=23).
pub const PCR_COUNT: u32 = 24;
/// Size of the AK's marshalled TPMT_PUBLIC (ECC P-256, SHA-256 name, empty policy).
pub const AK_PUBLIC_LEN: usize = 88;
/// TPM2B_DATA limit for a quote's qualifying data.
pub const MAX_QUALIFYING_DATA: usize = 64;
/// Quote-read-check attempts before giving up when PCRs keep changing.
const QUOTE_ATTEMPTS: u32 = 12;
/// Longest authorisation value accepted from an auth file (SHA-256 digest size).
pub const MAX_AUTH_LEN: usize = 32;

/// A quote over the SHA-256 bank, PCRs 0..=23.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Marshalled TPMS_ATTEST (what the signature covers).
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The quoted PCR values; their SHA-256 over indices 0..=23 equals the signed pcrDigest.
    pub pcrs: BTreeMap<u32, Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("invalid TPM address {tcti:?}: {reason} (want swtpm:path=<socket>[,auth=<file>])")]
    InvalidTcti { tcti: String, reason: &'static str },
    #[error("connecting to the TPM socket {path:?}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the TPM authorisation file {path:?}")]
    AuthFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the TPM authorisation file {path:?} holds {len} bytes, at most {MAX_AUTH_LEN} are allowed"
    )]
    AuthTooLong { path: PathBuf, len: usize },
    #[error("TPM command {command}: I/O on the TPM socket")]
    Io {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("TPM command {command} failed: response code 0x{rc:03X}, {}", wire::rc_name(*rc))]
    Command { command: &'static str, rc: u32 },
    #[error("PCR index {0} is out of range (0..=23)")]
    PcrIndex(u32),
    #[error("qualifying data is {0} bytes, at most 64 are allowed")]
    QualifyingDataTooLong(usize),
    #[error("the TPM has no SHA-256 PCR bank")]
    NoSha256Bank,
    #[error("persistent handle 0x{AK_HANDLE:08X} holds a key that is not an attestation key from our template ({0})")]
    ForeignKey(String),
    #[error("PCRs changed during each of {0} quote attempts")]
    PcrsUnstable(u32),
    #[error("unexpected answer from the TPM: {0}")]
    Unexpected(String),
}

impl TpmError {
    /// True iff the TPM refused the authorisation value (the caller does not hold the node's).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, TpmError::Command { rc, .. } if wire::is_auth_failure(*rc))
    }
}

/// One TPM, reached through swtpm's unix socket (`swtpm:path=<socket>[,auth=<file>]`).
///
/// The authorisation value (read from the owner-only `auth` file the provider wrote when it
/// created the TPM, see [`crate::swtpm`]) authorises the owner hierarchy and the attestation key:
/// a process that can reach the socket but does not hold the value can neither quote with the
/// AK nor recreate it.
///
/// Every method takes an internal lock, so one `Tpm` may be shared (`Arc<Tpm>`) by threads; the
/// calls block on TPM I/O (≈ 0.1 ms per command on swtpm, ≈ 4 ms per quote), so async callers use
/// `tokio::task::spawn_blocking`. Every command is one connection (see [`crate::wire`]), so
/// several `Tpm` values (or processes) can use one swtpm, command by command.
pub struct Tpm {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

struct Inner {
    socket: PathBuf,
    auth: Zeroizing<Vec<u8>>,
    /// PCR banks with PCRs allocated, as reported by the TPM at open.
    banks: Vec<HashAlg>,
    /// The AK's TPMT_PUBLIC, once loaded.
    ak: Option<Vec<u8>>,
}

/// The parts of a TPM address: `swtpm:path=<socket>[,auth=<file>]`.
pub(crate) fn parse_tcti(tcti: &str) -> Result<(PathBuf, Option<PathBuf>), TpmError> {
    let invalid = |reason| TpmError::InvalidTcti {
        tcti: tcti.to_string(),
        reason,
    };
    let rest = tcti
        .strip_prefix("swtpm:")
        .ok_or_else(|| invalid("not an swtpm address"))?;
    let (mut path, mut auth) = (None, None);
    for part in rest.split(',') {
        match part.split_once('=') {
            Some(("path", v)) if !v.is_empty() => path = Some(PathBuf::from(v)),
            Some(("auth", v)) if !v.is_empty() => auth = Some(PathBuf::from(v)),
            _ => return Err(invalid("unknown or empty option (TCP is not offered)")),
        }
    }
    Ok((path.ok_or_else(|| invalid("no socket path"))?, auth))
}

/// Reads an authorisation file (raw bytes, at most [`MAX_AUTH_LEN`]).
pub(crate) fn read_auth(path: &Path) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| TpmError::AuthFile {
        path: path.to_path_buf(),
        source,
    })?);
    if bytes.len() > MAX_AUTH_LEN {
        return Err(TpmError::AuthTooLong {
            path: path.to_path_buf(),
            len: bytes.len(),
        });
    }
    Ok(bytes)
}

impl Tpm {
    /// Connects to the TPM at `tcti` (`swtpm:path=<socket>[,auth=<file>]`; without `auth` the
    /// value is empty) and reads its allocated PCR banks. The TPM must be started up already
    /// (swtpm does that itself, see [`crate::swtpm`]).
    pub fn open(tcti: &str) -> Result<Tpm, TpmError> {
        let (socket, auth_file) = parse_tcti(tcti)?;
        let auth = match auth_file {
            Some(f) => read_auth(&f)?,
            None => Zeroizing::new(Vec::new()),
        };
        let banks = allocated_banks(&socket)?;
        if !banks.contains(&HashAlg::Sha256) {
            return Err(TpmError::NoSha256Bank);
        }
        Ok(Tpm {
            inner: Mutex::new(Inner {
                socket,
                auth,
                banks,
                ak: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a stale cached AK; nothing else.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ECC attestation key's public area (marshalled TPMT_PUBLIC, 88 bytes).
    ///
    /// Loads the key from persistent handle 0x81008F00, or creates it there: a primary key in
    /// the owner hierarchy from go-tpm-tools' `AKTemplateECC` (restricted ECDSA-SHA256 P-256
    /// signing key, attributes 0x00050072) with the node's authorisation value as its
    /// `userAuth`, made persistent with EvictControl. ECC rather than RSA: the signature
    /// dominates a quote's cost in swtpm (see BENCHMARKS.md). Idempotent across processes and
    /// swtpm restarts on the same state; a key at that handle that does not match the template
    /// is an error, never replaced.
    pub fn attestation_key(&self) -> Result<Vec<u8>, TpmError> {
        self.lock().ak()
    }

    /// The PCR banks the TPM has allocated (at least SHA-256).
    pub fn banks(&self) -> Vec<HashAlg> {
        self.lock().banks.clone()
    }

    /// PCRs 0..=23 of the SHA-256 bank.
    pub fn read_pcrs_sha256(&self) -> Result<BTreeMap<u32, [u8; 32]>, TpmError> {
        let socket = self.lock().socket.clone();
        read_sha256(&socket)?
            .into_iter()
            .map(|(i, v)| {
                <[u8; 32]>::try_from(v.as_slice())
                    .map(|d| (i, d))
                    .map_err(|_| TpmError::Unexpected(format!("PCR {i} has {} bytes", v.len())))
            })
            .collect()
    }

    /// TPM2_PCR_Event semantics: every allocated bank `b` of PCR `index` becomes
    /// `H_b(old ‖ H_b(data))`; for SHA-256 that is `SHA256(old ‖ SHA256(data))`.
    ///
    /// The event digests are computed here and sent with TPM2_PCR_Extend — the resulting PCR
    /// values are the same, and `data` is not limited to TPM2_PCR_Event's 1024 bytes.
    pub fn pcr_event(&self, index: u32, data: &[u8]) -> Result<(), TpmError> {
        check_pcr(index)?;
        let inner = self.lock();
        let values: Vec<(HashAlg, Vec<u8>)> =
            inner.banks.iter().map(|b| (*b, b.digest(data))).collect();
        extend(&inner.socket, index, &values)
    }

    /// TPM2_PCR_Extend of the SHA-256 bank only: PCR `index` becomes `SHA256(old ‖ digest)`.
    pub fn extend_sha256(&self, index: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
        check_pcr(index)?;
        let socket = self.lock().socket.clone();
        extend(&socket, index, &[(HashAlg::Sha256, digest.to_vec())])
    }

    /// Quotes the SHA-256 bank, PCRs 0..=23, with the attestation key (created if needed);
    /// `qualifying_data` (≤ 64 bytes) appears verbatim as `extraData` in the TPMS_ATTEST.
    ///
    /// Quotes, then reads the PCRs, and checks that the read values hash to the signed
    /// pcrDigest; if a PCR changed in between it tries again after a jittered backoff (at most
    /// 12 attempts).
    pub fn quote(&self, qualifying_data: &[u8]) -> Result<Quote, TpmError> {
        if qualifying_data.len() > MAX_QUALIFYING_DATA {
            return Err(TpmError::QualifyingDataTooLong(qualifying_data.len()));
        }
        for attempt in 1..=QUOTE_ATTEMPTS {
            if attempt > 1 {
                // Another connection (process) extended a PCR between our quote and our read.
                // Back off for a random share of a growing window, without holding the lock,
                // so that a writer in lock-step with us cannot starve the quote.
                std::thread::sleep(jittered_backoff(attempt));
            }
            let mut inner = self.lock();
            inner.ak()?;
            let mut params = Vec::with_capacity(96);
            wire::put_tpm2b(&mut params, qualifying_data);
            params.extend_from_slice(&wire::TPM_ALG_NULL.to_be_bytes()); // inScheme: the key's
            params.extend_from_slice(&sha256_selection().encode());
            let resp = wire::execute(
                &inner.socket,
                &Command {
                    name: "Quote",
                    code: wire::CC_QUOTE,
                    handles: &[AK_HANDLE],
                    auth: Some(&inner.auth),
                    params,
                },
                0,
            )?;
            let mut p = Params::new("Quote", &resp.params);
            let attest = p.tpm2b()?.to_vec();
            let signature = p.rest().to_vec();
            let signed = TpmsAttest::decode(&attest)
                .map_err(|e| TpmError::Unexpected(format!("Quote returned {e}")))?
                .pcr_digest;
            let pcrs = read_sha256(&inner.socket)?;
            if HashAlg::Sha256.digest_parts(pcrs.values().map(Vec::as_slice)) == signed {
                return Ok(Quote {
                    attest,
                    signature,
                    pcrs,
                });
            }
            tracing::debug!(
                attempt,
                "PCRs changed between quote and read; quoting again"
            );
        }
        Err(TpmError::PcrsUnstable(QUOTE_ATTEMPTS))
    }

    /// `len` random bytes from the TPM (TPM2_GetRandom; one round trip, ≤ 32 bytes per call on
    /// swtpm, longer requests are split).
    pub fn get_random(&self, len: usize) -> Result<Vec<u8>, TpmError> {
        let socket = self.lock().socket.clone();
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()).min(32) as u16;
            let got = get_random(&socket, want)?;
            if got.is_empty() {
                return Err(TpmError::Unexpected("GetRandom returned no bytes".into()));
            }
            out.extend_from_slice(&got);
        }
        out.truncate(len);
        Ok(out)
    }
}

/// A uniformly random duration in `[0, 2^min(attempt, 6) × 100 µs)`: at most 6.4 ms.
fn jittered_backoff(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher as _, RandomState};
    let window_us = 100u64 << attempt.min(6);
    // `RandomState` is randomly keyed per instance: a dependency-free jitter source.
    let random = RandomState::new().hash_one(attempt);
    std::time::Duration::from_micros(random % window_us)
}

/// TPM_RC_HANDLE for handle 1: nothing at that handle.
fn is_no_such_handle(e: &TpmError) -> bool {
    matches!(e, TpmError::Command { rc, .. } if rc & 0x80 != 0 && rc & 0xBF == 0x8B)
}

impl Inner {
    fn ak(&mut self) -> Result<Vec<u8>, TpmError> {
        if let Some(public) = &self.ak {
            return Ok(public.clone());
        }
        let public = match read_public(&self.socket, AK_HANDLE) {
            Ok(p) => p,
            Err(e) if is_no_such_handle(&e) => {
                create_persistent_ak(&self.socket, &self.auth)?;
                read_public(&self.socket, AK_HANDLE)?
            }
            Err(e) => return Err(e),
        };
        let template = ak_template();
        // Everything before `unique` (type … kdf) must be our template's; the template's empty
        // unique is two zero-length coordinates (4 bytes).
        let fixed = template.len().saturating_sub(4);
        if public.len() != AK_PUBLIC_LEN || public.get(..fixed) != template.get(..fixed) {
            return Err(TpmError::ForeignKey(format!(
                "{} byte public area starting {}",
                public.len(),
                hex_prefix(&public)
            )));
        }
        self.ak = Some(public.clone());
        Ok(public)
    }
}

/// go-tpm-tools `AKTemplateECC`: NIST P-256, SHA-256 name, fixedTPM | fixedParent |
/// sensitiveDataOrigin | userWithAuth | restricted | sign (0x00050072), ECDSA-SHA256, NULL
/// symmetric and KDF, empty policy and unique.
fn ak_template() -> Vec<u8> {
    TpmtPublic::ak_template_ecc(Vec::new(), Vec::new()).encode()
}

fn read_public(socket: &Path, handle: u32) -> Result<Vec<u8>, TpmError> {
    let resp = wire::execute(
        socket,
        &Command {
            name: "ReadPublic",
            code: wire::CC_READ_PUBLIC,
            handles: &[handle],
            auth: None,
            params: Vec::new(),
        },
        0,
    )?;
    Ok(Params::new("ReadPublic", &resp.params).tpm2b()?.to_vec())
}

fn create_persistent_ak(socket: &Path, auth: &[u8]) -> Result<(), TpmError> {
    let mut sensitive = Vec::with_capacity(4 + auth.len());
    wire::put_tpm2b(&mut sensitive, auth); // userAuth: the node's value
    wire::put_tpm2b(&mut sensitive, &[]); // data
    let mut params = Vec::with_capacity(128);
    wire::put_tpm2b(&mut params, &sensitive);
    wire::put_tpm2b(&mut params, &ak_template());
    wire::put_tpm2b(&mut params, &[]); // outsideInfo
    params.extend_from_slice(&0u32.to_be_bytes()); // creationPCR: none
    let created = wire::execute(
        socket,
        &Command {
            name: "CreatePrimary",
            code: wire::CC_CREATE_PRIMARY,
            handles: &[wire::TPM_RH_OWNER],
            auth: Some(auth),
            params,
        },
        1,
    )?;
    let transient =
        created.handles.first().copied().ok_or_else(|| {
            TpmError::Unexpected("CreatePrimary returned no object handle".into())
        })?;
    let evicted = wire::execute(
        socket,
        &Command {
            name: "EvictControl",
            code: wire::CC_EVICT_CONTROL,
            handles: &[wire::TPM_RH_OWNER, transient],
            auth: Some(auth),
            params: AK_HANDLE.to_be_bytes().to_vec(),
        },
        0,
    );
    // The transient copy is not needed either way (no resource manager would flush it).
    let flushed = wire::execute(
        socket,
        &Command {
            name: "FlushContext",
            code: wire::CC_FLUSH_CONTEXT,
            handles: &[],
            auth: None,
            params: transient.to_be_bytes().to_vec(),
        },
        0,
    );
    match evicted {
        Ok(_) => {
            tracing::info!(
                handle = format!("0x{AK_HANDLE:08X}"),
                "created persistent attestation key"
            );
        }
        // Another client (process) made its AK persistent between our check and our
        // EvictControl (TPM_RC_NV_DEFINED): use that one.
        Err(TpmError::Command { rc, .. }) if rc & 0xFFF == 0x14C => {
            tracing::debug!("attestation key was created concurrently");
        }
        Err(e) => return Err(e),
    }
    flushed.map(drop)
}

fn allocated_banks(socket: &Path) -> Result<Vec<HashAlg>, TpmError> {
    const TPM_CAP_PCRS: u32 = 5;
    let mut params = TPM_CAP_PCRS.to_be_bytes().to_vec();
    params.extend_from_slice(&0u32.to_be_bytes());
    params.extend_from_slice(&1u32.to_be_bytes());
    let resp = wire::execute(
        socket,
        &Command {
            name: "GetCapability(PCRs)",
            code: wire::CC_GET_CAPABILITY,
            handles: &[],
            auth: None,
            params,
        },
        0,
    )?;
    let mut p = Params::new("GetCapability(PCRs)", &resp.params);
    let _more = p.u8()?;
    let _cap = p.u32()?;
    let list = PcrSelectionList::decode(p.rest())
        .map_err(|e| TpmError::Unexpected(format!("GetCapability(PCRs) returned {e}")))?;
    Ok(list
        .0
        .into_iter()
        .filter(|s| !s.pcrs.is_empty())
        .map(|s| s.hash)
        .collect())
}

fn check_pcr(index: u32) -> Result<(), TpmError> {
    if index >= PCR_COUNT {
        return Err(TpmError::PcrIndex(index));
    }
    Ok(())
}

fn sha256_selection() -> PcrSelectionList {
    selection(0..PCR_COUNT)
}

fn selection(pcrs: impl IntoIterator<Item = u32>) -> PcrSelectionList {
    PcrSelectionList(vec![PcrSelection {
        hash: HashAlg::Sha256,
        size_of_select: 3,
        pcrs: pcrs.into_iter().collect(),
    }])
}

/// PCRs 0..=23 of the SHA-256 bank (the TPM returns at most 8 per PCR_Read).
fn read_sha256(socket: &Path) -> Result<BTreeMap<u32, Vec<u8>>, TpmError> {
    let mut out = BTreeMap::new();
    // 24 PCRs, ≥ 1 per call on any conforming TPM; bound the loop anyway.
    for _ in 0..PCR_COUNT {
        let remaining: Vec<u32> = (0..PCR_COUNT).filter(|i| !out.contains_key(i)).collect();
        if remaining.is_empty() {
            break;
        }
        let resp = wire::execute(
            socket,
            &Command {
                name: "PCR_Read",
                code: wire::CC_PCR_READ,
                handles: &[],
                auth: None,
                params: selection(remaining).encode(),
            },
            0,
        )?;
        let mut p = Params::new("PCR_Read", &resp.params);
        let _counter = p.u32()?;
        // TPML_PCR_SELECTION: count, then per bank hash, sizeofSelect, bitmap.
        let banks = p.u32()?;
        let mut read = Vec::new();
        for _ in 0..banks.min(16) {
            let hash = p.u16()?;
            let size = p.u8()?;
            let bitmap = p.take(usize::from(size))?;
            if hash == HashAlg::Sha256.tpm_id() {
                for (byte, b) in bitmap.iter().enumerate() {
                    read.extend(
                        (0..8u32)
                            .filter(|bit| b & (1 << bit) != 0)
                            .map(|bit| byte as u32 * 8 + bit),
                    );
                }
            }
        }
        let count = p.u32()?;
        if read.is_empty() || read.len() != count as usize {
            return Err(TpmError::Unexpected(format!(
                "PCR_Read returned {count} digests for {} PCRs",
                read.len()
            )));
        }
        for index in read {
            out.insert(index, p.tpm2b()?.to_vec());
        }
    }
    if out.len() != PCR_COUNT as usize {
        return Err(TpmError::Unexpected(format!(
            "read {} of {PCR_COUNT} SHA-256 PCRs",
            out.len()
        )));
    }
    Ok(out)
}

fn extend(socket: &Path, index: u32, values: &[(HashAlg, Vec<u8>)]) -> Result<(), TpmError> {
    let mut params = (values.len() as u32).to_be_bytes().to_vec();
    for (alg, digest) in values {
        params.extend_from_slice(&alg.tpm_id().to_be_bytes());
        params.extend_from_slice(digest);
    }
    // PCRs 0..=23 have an empty authorisation value.
    wire::execute(
        socket,
        &Command {
            name: "PCR_Extend",
            code: wire::CC_PCR_EXTEND,
            handles: &[index],
            auth: Some(&[]),
            params,
        },
        0,
    )
    .map(drop)
}

pub(crate) fn get_random(socket: &Path, n: u16) -> Result<Vec<u8>, TpmError> {
    let resp = wire::execute(
        socket,
        &Command {
            name: "GetRandom",
            code: wire::CC_GET_RANDOM,
            handles: &[],
            auth: None,
            params: n.to_be_bytes().to_vec(),
        },
        0,
    )?;
    Ok(Params::new("GetRandom", &resp.params).tpm2b()?.to_vec())
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter().take(12).map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcti_parsing() {
        let (p, a) = parse_tcti("swtpm:path=/n/tpm/swtpm.sock,auth=/n/tpm/auth").unwrap();
        assert_eq!(p, PathBuf::from("/n/tpm/swtpm.sock"));
        assert_eq!(a, Some(PathBuf::from("/n/tpm/auth")));
        assert_eq!(parse_tcti("swtpm:path=/s").unwrap().1, None);
        for bad in [
            "swtpm:host=127.0.0.1,port=2321",
            "device:/dev/tpm0",
            "swtpm:",
            "swtpm:path=",
        ] {
            assert!(
                matches!(parse_tcti(bad), Err(TpmError::InvalidTcti { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn auth_failure_codes() {
        // TPM_RC_AUTH_FAIL and TPM_RC_BAD_AUTH for session 1, as swtpm answers them.
        assert!(wire::is_auth_failure(0x98E));
        assert!(wire::is_auth_failure(0x9A2));
        assert!(!wire::is_auth_failure(0x921));
        assert!(!wire::is_auth_failure(0x18B));
    }
}
