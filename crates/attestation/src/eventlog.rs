//! TCG PC-Client firmware event log (the one in `/sys/kernel/security/tpm0/binary_bios_measurements`):
//! parsing and replay against quoted PCR values.
//!
//! Two layouts, both little-endian:
//! - crypto-agile (TCG PC Client PFP spec): a legacy SHA-1-format first event of type
//!   `EV_NO_ACTION` carrying `"Spec ID Event03\0"` and the digest size of every algorithm, then
//!   `TCG_PCR_EVENT2 {pcr u32, type u32, count u32, (alg u16, digest)…, size u32, data}`;
//! - legacy SHA-1 only: `{pcr u32, type u32, digest[20], size u32, data}` throughout.
//!
//! Replay per bank: every PCR starts at zero (PCR 0 at the locality announced by a
//! `StartupLocality` `EV_NO_ACTION` event), and each non-`EV_NO_ACTION` event extends
//! `PCR = H(PCR ‖ digest)`. [`EventLog::verify`] then requires every PCR that has events to
//! equal the quoted value. What it does not check: that an event's digest is the hash of its
//! data (firmware often measures something other than the logged bytes), nor PCRs that have no
//! events (runtime extensions such as the cluster ID in PCR 15) — those are covered by the
//! quote and the measurements compare.

use std::collections::{BTreeMap, BTreeSet};

use crate::cursor::{Cursor, Short};
use crate::tpm2::HashAlg;

/// `EV_NO_ACTION`: informational, never extended into a PCR.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_S_CRTM_VERSION`.
pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
/// `EV_NONHOST_INFO`.
pub const EV_NONHOST_INFO: u32 = 0x0000_0011;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";
/// More algorithms than exist in the TCG registry means a garbled header.
const MAX_ALGORITHMS: u32 = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    #[error("event log: event {event}: field {field} at offset {offset} needs {need} bytes, {have} left")]
    Truncated {
        event: usize,
        field: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("event log: event {event}: field {field} at offset {offset} is invalid: {reason}")]
    Invalid {
        event: usize,
        field: &'static str,
        offset: usize,
        reason: String,
    },
    #[error("event log: event {event} (PCR {pcr}) has no {bank} digest")]
    MissingDigest {
        event: usize,
        pcr: u32,
        bank: HashAlg,
    },
    #[error("event log does not record the {bank} bank")]
    BankNotLogged { bank: HashAlg },
    #[error("event log replays {bank} PCR {pcr} to {replayed}, but the quote has {quoted}")]
    Mismatch {
        pcr: u32,
        bank: HashAlg,
        replayed: String,
        quoted: String,
    },
}

/// One measured event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr: u32,
    pub event_type: u32,
    /// `(TPM_ALG_ID, digest)` pairs, one per logged bank.
    pub digests: Vec<(u16, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl Event {
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(id, _)| *id == alg.tpm_id())
            .map(|(_, d)| d.as_slice())
    }

    /// Whether the `alg` digest is the hash of the logged data. Replay only proves the digests;
    /// code that interprets an event's data (e.g. GCE's `EV_NONHOST_INFO`) must check this.
    pub fn digest_matches_data(&self, alg: HashAlg) -> bool {
        self.digest(alg)
            .is_some_and(|d| crate::quote::ct_eq(d, &alg.digest(&self.data)))
    }
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// `(TPM_ALG_ID, digest size)` from the Spec ID event; empty for a legacy SHA-1 log.
    pub algorithms: Vec<(u16, u16)>,
    /// Every event after the header (the Spec ID event itself is not included).
    pub events: Vec<Event>,
}

/// Little-endian reader of one event (or of the Spec ID event's data).
struct Reader<'a> {
    cur: Cursor<'a>,
    event: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], event: usize) -> Self {
        Self {
            cur: Cursor::new(buf),
            event,
        }
    }
    fn pos(&self) -> usize {
        self.cur.pos()
    }
    fn truncated(&self, field: &'static str, short: Short) -> EventLogError {
        let Short { offset, need, have } = short;
        EventLogError::Truncated {
            event: self.event,
            field,
            offset,
            need,
            have,
        }
    }
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EventLogError> {
        self.cur.take(n).map_err(|s| self.truncated(field, s))
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], EventLogError> {
        self.cur.array().map_err(|s| self.truncated(field, s))
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, EventLogError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, EventLogError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, EventLogError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    /// `u32` length, then that many bytes (bounded by what is left, so no huge allocation).
    fn sized(&mut self, field: &'static str) -> Result<&'a [u8], EventLogError> {
        let n = self.u32(field)?;
        self.take(usize::try_from(n).unwrap_or(usize::MAX), field)
    }
    fn invalid(
        &self,
        field: &'static str,
        offset: usize,
        reason: impl Into<String>,
    ) -> EventLogError {
        EventLogError::Invalid {
            event: self.event,
            field,
            offset,
            reason: reason.into(),
        }
    }
}

impl EventLog {
    /// Parses a whole log. An empty input is an empty log.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        let mut r = Reader::new(bytes, 0);
        let mut log = EventLog {
            algorithms: Vec::new(),
            events: Vec::new(),
        };
        if bytes.is_empty() {
            return Ok(log);
        }
        let first = Self::legacy_event(&mut r)?;
        let crypto_agile =
            first.event_type == EV_NO_ACTION && first.data.starts_with(SPEC_ID_SIGNATURE);
        if crypto_agile {
            log.algorithms = Self::spec_id(&first.data, &r)?;
        } else {
            log.events.push(first);
        }
        while r.cur.remaining() > 0 {
            r.event += 1;
            let ev = if crypto_agile {
                Self::event2(&mut r, &log.algorithms)?
            } else {
                Self::legacy_event(&mut r)?
            };
            log.events.push(ev);
        }
        Ok(log)
    }

    fn legacy_event(r: &mut Reader<'_>) -> Result<Event, EventLogError> {
        let pcr = r.u32("pcrIndex")?;
        let event_type = r.u32("eventType")?;
        let digest = r.take(20, "digest")?.to_vec();
        let data = r.sized("event")?.to_vec();
        Ok(Event {
            pcr,
            event_type,
            digests: vec![(HashAlg::Sha1.tpm_id(), digest)],
            data,
        })
    }

    /// `TCG_EfiSpecIdEvent`: returns the algorithm table.
    fn spec_id(data: &[u8], outer: &Reader<'_>) -> Result<Vec<(u16, u16)>, EventLogError> {
        let mut r = Reader::new(data, outer.event);
        r.take(16, "SpecIdEvent.signature")?;
        r.take(4 + 4, "SpecIdEvent.platformClass+version")?;
        let n_off = r.pos();
        let n = r.u32("SpecIdEvent.numberOfAlgorithms")?;
        if n == 0 || n > MAX_ALGORITHMS {
            return Err(r.invalid(
                "SpecIdEvent.numberOfAlgorithms",
                n_off,
                format!("{n} algorithms"),
            ));
        }
        let mut algs = Vec::new();
        for _ in 0..n {
            let id = r.u16("SpecIdEvent.algorithmId")?;
            let size_off = r.pos();
            let size = r.u16("SpecIdEvent.digestSize")?;
            if let Some(h) = HashAlg::from_tpm(id) {
                if usize::from(size) != h.digest_len() {
                    return Err(r.invalid(
                        "SpecIdEvent.digestSize",
                        size_off,
                        format!("{h} digest size {size}"),
                    ));
                }
            }
            algs.push((id, size));
        }
        let vendor = usize::from(r.u8("SpecIdEvent.vendorInfoSize")?);
        r.take(vendor, "SpecIdEvent.vendorInfo")?;
        Ok(algs)
    }

    fn event2(r: &mut Reader<'_>, algs: &[(u16, u16)]) -> Result<Event, EventLogError> {
        let pcr = r.u32("pcrIndex")?;
        let event_type = r.u32("eventType")?;
        let count_off = r.pos();
        let count = r.u32("digests.count")?;
        if count as usize > algs.len() {
            return Err(r.invalid(
                "digests.count",
                count_off,
                format!(
                    "{count} digests, the header lists {} algorithms",
                    algs.len()
                ),
            ));
        }
        let mut digests = Vec::new();
        for _ in 0..count {
            let alg_off = r.pos();
            let alg = r.u16("digests.hashAlg")?;
            let Some(&(_, size)) = algs.iter().find(|(id, _)| *id == alg) else {
                return Err(r.invalid(
                    "digests.hashAlg",
                    alg_off,
                    format!("algorithm {alg:#06x} is not in the Spec ID header"),
                ));
            };
            digests.push((alg, r.take(usize::from(size), "digests.digest")?.to_vec()));
        }
        let data = r.sized("event")?.to_vec();
        Ok(Event {
            pcr,
            event_type,
            digests,
            data,
        })
    }

    fn logs_bank(&self, bank: HashAlg) -> bool {
        if self.algorithms.is_empty() {
            bank == HashAlg::Sha1
        } else {
            self.algorithms.iter().any(|(id, _)| *id == bank.tpm_id())
        }
    }

    /// Replays one bank: the value of every PCR that has at least one event.
    pub fn replay(&self, bank: HashAlg) -> Result<BTreeMap<u32, Vec<u8>>, EventLogError> {
        if self.events.is_empty() {
            return Ok(BTreeMap::new());
        }
        if !self.logs_bank(bank) {
            return Err(EventLogError::BankNotLogged { bank });
        }
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (i, ev) in self.events.iter().enumerate() {
            if ev.event_type == EV_NO_ACTION {
                if ev.pcr == 0 && ev.data.len() == 17 && ev.data.starts_with(STARTUP_LOCALITY) {
                    let mut init = vec![0u8; bank.digest_len()];
                    if let Some(last) = init.last_mut() {
                        *last = ev.data[16];
                    }
                    pcrs.insert(0, init);
                }
                continue;
            }
            let digest = ev.digest(bank).ok_or(EventLogError::MissingDigest {
                event: i + 1,
                pcr: ev.pcr,
                bank,
            })?;
            let old = pcrs
                .entry(ev.pcr)
                .or_insert_with(|| vec![0u8; bank.digest_len()]);
            *old = bank.digest_parts([old.as_slice(), digest]);
        }
        Ok(pcrs)
    }

    /// Replays `bank` and requires every PCR with events that is also in `quoted` to match.
    /// Returns the PCR indices the log vouched for. An empty log vouches for nothing and passes
    /// (as in go-tpm-tools).
    pub fn verify(
        &self,
        bank: HashAlg,
        quoted: &BTreeMap<u32, Vec<u8>>,
    ) -> Result<BTreeSet<u32>, EventLogError> {
        let replayed = self.replay(bank)?;
        let mut checked = BTreeSet::new();
        for (pcr, value) in replayed {
            let Some(q) = quoted.get(&pcr) else { continue };
            if *q != value {
                return Err(EventLogError::Mismatch {
                    pcr,
                    bank,
                    replayed: hex::encode(value),
                    quoted: hex::encode(q),
                });
            }
            checked.insert(pcr);
        }
        Ok(checked)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn le32(v: u32) -> [u8; 4] {
        v.to_le_bytes()
    }

    /// A crypto-agile SHA-1 + SHA-256 log with the given `(pcr, type, data)` events, each
    /// digest being the hash of its data.
    pub(crate) fn agile_log(events: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend(le32(0)); // platform class
        spec.extend([0, 2, 0, 2]); // version 2.0, errata 0, uintn 2
        spec.extend(le32(2));
        spec.extend(0x0004u16.to_le_bytes());
        spec.extend(20u16.to_le_bytes());
        spec.extend(0x000Bu16.to_le_bytes());
        spec.extend(32u16.to_le_bytes());
        spec.push(0);
        let mut out = Vec::new();
        out.extend(le32(0));
        out.extend(le32(EV_NO_ACTION));
        out.extend([0u8; 20]);
        out.extend(le32(spec.len() as u32));
        out.extend(spec);
        for (pcr, ty, data) in events {
            out.extend(le32(*pcr));
            out.extend(le32(*ty));
            out.extend(le32(2));
            out.extend(0x0004u16.to_le_bytes());
            out.extend(HashAlg::Sha1.digest(data));
            out.extend(0x000Bu16.to_le_bytes());
            out.extend(HashAlg::Sha256.digest(data));
            out.extend(le32(data.len() as u32));
            out.extend(*data);
        }
        out
    }

    /// A StartupLocality 3 event and two measured events.
    fn sample() -> Vec<u8> {
        let mut loc = STARTUP_LOCALITY.to_vec();
        loc.push(3);
        agile_log(&[
            (0, EV_NO_ACTION, &loc),
            (0, EV_S_CRTM_VERSION, b"v1"),
            (7, 0x8000_0001, b"sb"),
        ])
    }

    #[test]
    fn replays_with_locality() {
        let log = EventLog::parse(&sample()).unwrap();
        assert_eq!(log.algorithms, vec![(4, 20), (11, 32)]);
        assert_eq!(log.events.len(), 3);
        let pcrs = log.replay(HashAlg::Sha256).unwrap();
        let mut init = [0u8; 32];
        init[31] = 3;
        let want0 = HashAlg::Sha256.digest_parts([&init[..], &HashAlg::Sha256.digest(b"v1")]);
        let want7 = HashAlg::Sha256.digest_parts([&[0u8; 32][..], &HashAlg::Sha256.digest(b"sb")]);
        assert_eq!(pcrs, BTreeMap::from([(0, want0), (7, want7)]));
        let mut quoted = pcrs.clone();
        quoted.insert(15, vec![0; 32]);
        assert_eq!(
            log.verify(HashAlg::Sha256, &quoted).unwrap(),
            BTreeSet::from([0, 7])
        );
        quoted.insert(7, vec![1; 32]);
        assert!(matches!(
            log.verify(HashAlg::Sha256, &quoted),
            Err(EventLogError::Mismatch { pcr: 7, .. })
        ));
        assert_eq!(
            log.replay(HashAlg::Sha384),
            Err(EventLogError::BankNotLogged {
                bank: HashAlg::Sha384
            })
        );
    }

    #[test]
    fn truncations_and_garbage_are_errors() {
        let full = sample();
        for cut in 1..full.len() {
            // A cut exactly between two events is a valid shorter log.
            if let Ok(log) = EventLog::parse(&full[..cut]) {
                assert!(log.events.len() < 3, "cut {cut}");
            }
        }
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("huge size", {
                let mut v = full.clone();
                let n = v.len();
                v[n - 6..n - 2].copy_from_slice(&le32(u32::MAX));
                v
            }),
            ("unknown alg", {
                let mut v = full.clone();
                let first_event2 = 32 + 37 + 12; // legacy header + Spec ID data + pcr,type,count
                v[first_event2..first_event2 + 2].copy_from_slice(&0x0027u16.to_le_bytes());
                v
            }),
        ];
        for (name, bytes) in cases {
            assert!(EventLog::parse(&bytes).is_err(), "{name}");
        }
        assert_eq!(EventLog::parse(&[]).unwrap().events.len(), 0);
    }
}
