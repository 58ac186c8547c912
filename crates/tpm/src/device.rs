//! [`Tpm`]: one serialized connection to one TPM (the node's swtpm).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use attestation::tpm2::HashAlg;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PcrHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{
    EccSchemeAlgorithm, HashingAlgorithm, PublicAlgorithm,
};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    AttestInfo, CapabilityData, Data, Digest, DigestValues, EccPoint, EccScheme,
    KeyDerivationFunctionScheme, PcrSelectionList, PcrSlot, Public, PublicBuilder,
    PublicEccParametersBuilder, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

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
    #[error("invalid TCTI {tcti:?}")]
    InvalidTcti {
        tcti: String,
        #[source]
        source: tss_esapi::Error,
    },
    #[error("connecting to the TPM at {tcti:?}")]
    Connect {
        tcti: String,
        #[source]
        source: tss_esapi::Error,
    },
    #[error("TPM command {command} failed")]
    Command {
        command: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
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

fn cmd(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { command, source }
}

/// One TPM, reached through a TCTI (e.g. `swtpm:host=127.1.0.1,port=2321`).
///
/// Every method takes an internal lock, so one `Tpm` may be shared (`Arc<Tpm>`) by threads; the
/// calls block on TPM I/O (≈ 0.1 ms per command on swtpm, ≈ 4 ms per quote), so async callers use
/// `tokio::task::spawn_blocking`. A raw swtpm has no resource manager: every method flushes
/// what it loads and uses password (not HMAC) sessions, so nothing stays in the TPM between
/// calls and several `Tpm` values (or processes) can use one swtpm, command by command.
pub struct Tpm {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

struct Inner {
    ctx: Context,
    /// PCR banks with PCRs allocated, as reported by the TPM at open.
    banks: Vec<HashingAlgorithm>,
    /// ESYS handle of the persistent AK and its TPMT_PUBLIC, once loaded.
    ak: Option<(KeyHandle, Vec<u8>)>,
}

impl Tpm {
    /// Connects to the TPM behind `tcti` and reads its allocated PCR banks. The TPM must be
    /// started up already (swtpm does that itself, see [`crate::swtpm`]).
    pub fn open(tcti: &str) -> Result<Tpm, TpmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|source| TpmError::InvalidTcti {
            tcti: tcti.to_string(),
            source,
        })?;
        let mut ctx = Context::new(conf).map_err(|source| TpmError::Connect {
            tcti: tcti.to_string(),
            source,
        })?;
        let banks = allocated_banks(&mut ctx)?;
        if !banks.contains(&HashingAlgorithm::Sha256) {
            return Err(TpmError::NoSha256Bank);
        }
        Ok(Tpm {
            inner: Mutex::new(Inner {
                ctx,
                banks,
                ak: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a stale ESYS handle; the context
        // itself stays usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ECC attestation key's public area (marshalled TPMT_PUBLIC, 88 bytes).
    ///
    /// Loads the key from persistent handle 0x81008F00, or creates it there: a primary key in
    /// the owner hierarchy from go-tpm-tools' `AKTemplateECC` (restricted ECDSA-SHA256 P-256
    /// signing key, attributes 0x00050072), made persistent with EvictControl. ECC rather than
    /// RSA: the signature dominates a quote's cost in swtpm (see BENCHMARKS.md). Idempotent
    /// across processes and swtpm restarts on the same state; a key at that handle that does not
    /// match the template is an error, never replaced.
    pub fn attestation_key(&self) -> Result<Vec<u8>, TpmError> {
        let mut inner = self.lock();
        inner.ak().map(|(_, public)| public)
    }

    /// The PCR banks the TPM has allocated (at least SHA-256).
    pub fn banks(&self) -> Vec<HashingAlgorithm> {
        self.lock().banks.clone()
    }

    /// PCRs 0..=23 of the SHA-256 bank.
    pub fn read_pcrs_sha256(&self) -> Result<BTreeMap<u32, [u8; 32]>, TpmError> {
        let mut inner = self.lock();
        let pcrs = read_sha256(&mut inner.ctx)?;
        pcrs.into_iter()
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
    /// tss-esapi 7.7 does not wrap TPM2_PCR_Event, so the event digests are computed here and
    /// sent with TPM2_PCR_Extend — the resulting PCR values are the same, and `data` is not
    /// limited to the command's 1024 bytes.
    pub fn pcr_event(&self, index: u32, data: &[u8]) -> Result<(), TpmError> {
        let handle = pcr_handle(index)?;
        let mut inner = self.lock();
        let mut values = DigestValues::new();
        for &bank in &inner.banks {
            let digest = match bank {
                HashingAlgorithm::Sha1 => Sha1::digest(data).to_vec(),
                HashingAlgorithm::Sha256 => Sha256::digest(data).to_vec(),
                HashingAlgorithm::Sha384 => Sha384::digest(data).to_vec(),
                HashingAlgorithm::Sha512 => Sha512::digest(data).to_vec(),
                other => {
                    return Err(TpmError::Unexpected(format!(
                        "PCR bank {other:?} is allocated but not supported here"
                    )))
                }
            };
            values.set(bank, to_digest(digest)?);
        }
        extend(&mut inner.ctx, handle, values)
    }

    /// TPM2_PCR_Extend of the SHA-256 bank only: PCR `index` becomes `SHA256(old ‖ digest)`.
    pub fn extend_sha256(&self, index: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
        let handle = pcr_handle(index)?;
        let mut values = DigestValues::new();
        values.set(HashingAlgorithm::Sha256, to_digest(digest.to_vec())?);
        extend(&mut self.lock().ctx, handle, values)
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
        let selection = sha256_selection()?;
        for attempt in 1..=QUOTE_ATTEMPTS {
            if attempt > 1 {
                // Another connection (process) extended a PCR between our quote and our read.
                // Back off for a random share of a growing window, without holding the lock,
                // so that a writer in lock-step with us cannot starve the quote.
                std::thread::sleep(jittered_backoff(attempt));
            }
            let mut inner = self.lock();
            let (ak, _) = inner.ak()?;
            let data = Data::try_from(qualifying_data.to_vec()).map_err(cmd("Quote"))?;
            let (attest, signature) = inner
                .ctx
                .execute_with_password_session(|ctx| {
                    ctx.quote(ak, data, SignatureScheme::Null, selection.clone())
                })
                .map_err(cmd("Quote"))?;
            let pcrs = read_sha256(&mut inner.ctx)?;
            let signed = match attest.attested() {
                AttestInfo::Quote { info } => info.pcr_digest().value().to_vec(),
                _ => {
                    return Err(TpmError::Unexpected(
                        "Quote returned a non-quote attestation".into(),
                    ))
                }
            };
            if HashAlg::Sha256.digest_parts(pcrs.values().map(Vec::as_slice)) == signed {
                return Ok(Quote {
                    attest: attest.marshall().map_err(cmd("marshal TPMS_ATTEST"))?,
                    signature: signature
                        .marshall()
                        .map_err(cmd("marshal TPMT_SIGNATURE"))?,
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
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()).min(32);
            let got = inner.ctx.get_random(want).map_err(cmd("GetRandom"))?;
            if got.value().is_empty() {
                return Err(TpmError::Unexpected("GetRandom returned no bytes".into()));
            }
            out.extend_from_slice(got.value());
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

impl Inner {
    fn ak(&mut self) -> Result<(KeyHandle, Vec<u8>), TpmError> {
        if let Some((handle, public)) = &self.ak {
            return Ok((*handle, public.clone()));
        }
        let template = ak_template()?;
        let template_bytes = template.marshall().map_err(cmd("marshal AK template"))?;
        let handle = if persistent_exists(&mut self.ctx, AK_HANDLE)? {
            load_persistent(&mut self.ctx)?
        } else {
            create_persistent_ak(&mut self.ctx, template)?
        };
        let (public, _, _) = self.ctx.read_public(handle).map_err(cmd("ReadPublic"))?;
        let public = public.marshall().map_err(cmd("marshal TPMT_PUBLIC"))?;
        // Everything before `unique` (type … kdf) must be our template's; the template's empty
        // unique is two zero-length coordinates (4 bytes).
        let fixed = template_bytes.len().saturating_sub(4);
        if public.len() != AK_PUBLIC_LEN || public.get(..fixed) != template_bytes.get(..fixed) {
            let _ = self.ctx.tr_close(&mut ObjectHandle::from(handle));
            return Err(TpmError::ForeignKey(format!(
                "{} byte public area starting {}",
                public.len(),
                hex_prefix(&public)
            )));
        }
        self.ak = Some((handle, public.clone()));
        Ok((handle, public))
    }
}

/// go-tpm-tools `AKTemplateECC`: NIST P-256, SHA-256 name, fixedTPM | fixedParent |
/// sensitiveDataOrigin | userWithAuth | restricted | sign (0x00050072), ECDSA-SHA256, NULL
/// symmetric and KDF, empty policy and unique.
fn ak_template() -> Result<Public, TpmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(cmd("AK template attributes"))?;
    let scheme = EccScheme::create(
        EccSchemeAlgorithm::EcDsa,
        Some(HashingAlgorithm::Sha256),
        None,
    )
    .map_err(cmd("AK template scheme"))?;
    let params = PublicEccParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::Null)
        .with_ecc_scheme(scheme)
        .with_curve(EccCurve::NistP256)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(true)
        .build()
        .map_err(cmd("AK template parameters"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(cmd("AK template"))
}

fn create_persistent_ak(ctx: &mut Context, template: Public) -> Result<KeyHandle, TpmError> {
    let created = ctx
        .execute_with_password_session(|ctx| {
            ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(cmd("CreatePrimary"))?;
    let transient = created.key_handle;
    let persistent = PersistentTpmHandle::new(AK_HANDLE)
        .map(Persistent::Persistent)
        .map_err(cmd("EvictControl"));
    let evicted = persistent.and_then(|persistent| {
        ctx.execute_with_password_session(|ctx| {
            ctx.evict_control(Provision::Owner, transient.into(), persistent)
        })
        .map_err(cmd("EvictControl"))
    });
    // The transient copy is not needed either way (no resource manager would flush it).
    let flushed = ctx
        .flush_context(transient.into())
        .map_err(cmd("FlushContext"));
    let handle = match evicted {
        Ok(handle) => handle,
        // Another client (process) made its AK persistent between our check and our
        // EvictControl (TPM_RC_NV_DEFINED): use that one.
        Err(e) if persistent_exists(ctx, AK_HANDLE)? => {
            tracing::debug!(error = %e, "attestation key was created concurrently");
            flushed?;
            return load_persistent(ctx);
        }
        Err(e) => return Err(e),
    };
    flushed?;
    tracing::info!(
        handle = format!("0x{AK_HANDLE:08X}"),
        "created persistent attestation key"
    );
    Ok(KeyHandle::from(handle))
}

fn load_persistent(ctx: &mut Context) -> Result<KeyHandle, TpmError> {
    let tpm_handle = PersistentTpmHandle::new(AK_HANDLE).map_err(cmd("TR_FromTPMPublic"))?;
    let object = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(tpm_handle))
        .map_err(cmd("TR_FromTPMPublic"))?;
    Ok(KeyHandle::from(object))
}

fn persistent_exists(ctx: &mut Context, handle: u32) -> Result<bool, TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, handle, 1)
        .map_err(cmd("GetCapability(handles)"))?;
    match data {
        CapabilityData::Handles(list) => Ok(list.iter().any(|h| u32::from(*h) == handle)),
        other => Err(TpmError::Unexpected(format!(
            "GetCapability(handles) returned {other:?}"
        ))),
    }
}

fn allocated_banks(ctx: &mut Context) -> Result<Vec<HashingAlgorithm>, TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::AssignedPcr, 0, 1)
        .map_err(cmd("GetCapability(PCRs)"))?;
    match data {
        CapabilityData::AssignedPcr(list) => Ok(list
            .get_selections()
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.hashing_algorithm())
            .collect()),
        other => Err(TpmError::Unexpected(format!(
            "GetCapability(PCRs) returned {other:?}"
        ))),
    }
}

fn pcr_slot(index: u32) -> Result<PcrSlot, TpmError> {
    if index >= PCR_COUNT {
        return Err(TpmError::PcrIndex(index));
    }
    PcrSlot::try_from(1u32 << index).map_err(|_| TpmError::PcrIndex(index))
}

fn pcr_handle(index: u32) -> Result<PcrHandle, TpmError> {
    if index >= PCR_COUNT {
        return Err(TpmError::PcrIndex(index));
    }
    // ESYS_TR_PCR0..31 are the values 0..31.
    PcrHandle::try_from(ObjectHandle::from(index)).map_err(|_| TpmError::PcrIndex(index))
}

fn sha256_selection() -> Result<PcrSelectionList, TpmError> {
    let slots = (0..PCR_COUNT)
        .map(pcr_slot)
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionList::builder()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(cmd("PCR selection"))
}

/// PCRs 0..=23 of the SHA-256 bank (the TPM returns at most 8 per PCR_Read).
fn read_sha256(ctx: &mut Context) -> Result<BTreeMap<u32, Vec<u8>>, TpmError> {
    let mut remaining = sha256_selection()?;
    let mut out = BTreeMap::new();
    // 24 PCRs, ≥ 1 per call on any conforming TPM; bound the loop anyway.
    for _ in 0..PCR_COUNT {
        if remaining.is_empty() {
            break;
        }
        let (_, read, digests) = ctx.pcr_read(remaining.clone()).map_err(cmd("PCR_Read"))?;
        let slots: Vec<PcrSlot> = read
            .get_selections()
            .iter()
            .filter(|s| s.hashing_algorithm() == HashingAlgorithm::Sha256)
            .flat_map(|s| s.selected())
            .collect();
        if slots.is_empty() || slots.len() != digests.value().len() {
            return Err(TpmError::Unexpected(format!(
                "PCR_Read returned {} digests for {} PCRs",
                digests.value().len(),
                slots.len()
            )));
        }
        for (slot, digest) in slots.iter().zip(digests.value()) {
            out.insert(u32::from(*slot).trailing_zeros(), digest.value().to_vec());
        }
        remaining.subtract(&read).map_err(cmd("PCR selection"))?;
    }
    if out.len() != PCR_COUNT as usize {
        return Err(TpmError::Unexpected(format!(
            "read {} of {PCR_COUNT} SHA-256 PCRs",
            out.len()
        )));
    }
    Ok(out)
}

fn extend(ctx: &mut Context, handle: PcrHandle, values: DigestValues) -> Result<(), TpmError> {
    ctx.execute_with_password_session(|ctx| ctx.pcr_extend(handle, values))
        .map_err(cmd("PCR_Extend"))
}

/// Runs `f` with an empty-password authorization in session slot 1. A password session costs
/// nothing on the client; ESYS's HMAC sessions (`execute_with_nullauth_session`) cost two extra
/// TPM commands and ~4 ms of OpenSSL-3 work per call, for no benefit on a local, empty-auth TPM.
trait PasswordSession {
    fn execute_with_password_session<T>(&mut self, f: impl FnOnce(&mut Context) -> T) -> T;
}

impl PasswordSession for Context {
    fn execute_with_password_session<T>(&mut self, f: impl FnOnce(&mut Context) -> T) -> T {
        self.execute_with_session(Some(AuthSession::Password), f)
    }
}

fn to_digest(bytes: Vec<u8>) -> Result<Digest, TpmError> {
    Digest::try_from(bytes).map_err(cmd("digest"))
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter().take(12).map(|x| format!("{x:02x}")).collect()
}
