//! The measured-boot plan of a local node. One function per PCR computes the expected value from
//! the same inputs the launcher measures, so prediction and measurement cannot drift apart.
//!
//! | PCR | content | how |
//! |---|---|---|
//! | 4  | boot path: the boot component (the node binary the launcher hands control to) | `Extend(SHA-256(file))` |
//! | 9  | node "command line": provider and attestation variant | `PCR_Event(cmdline)` |
//! | 11 | the image: manifest, then every component in manifest order | `Extend(SHA-256(manifest))`, then `Extend(SHA-256(component))` each |
//! | 15 | cluster ID, extended by the Bootstrapper on init/join | `PCR_Event(clusterID)`; zero before |
//! | 8, 12, 13 | never extended | must stay zero |
//! | 14 | never extended | zero, warn only |

use std::collections::BTreeMap;

use measurements::{extend_digest_sha256, extend_sha256, Measurement, Measurements};

pub const PCR_BOOT: u32 = 4;
pub const PCR_CMDLINE: u32 = 9;
pub const PCR_IMAGE: u32 = 11;
pub const PCR_CLUSTER_ID: u32 = measurements::PCR_CLUSTER_ID;
const ZERO_ENFORCED: [u32; 4] = [8, 12, 13, PCR_CLUSTER_ID];
const ZERO_WARN: [u32; 1] = [14];

/// The node command line the provider passes to the launcher (measured into PCR 9).
pub fn cmdline(variant: attestation::Variant) -> String {
    format!(
        "constel.csp={} constel.attestation-variant={}",
        crate::CSP,
        variant.as_str()
    )
}

/// One measurement the launcher performs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `TPM2_PCR_Extend(pcr, digest)` on the SHA-256 bank.
    Extend {
        pcr: u32,
        digest: [u8; 32],
        what: String,
    },
    /// `TPM2_PCR_Event(pcr, data)`.
    Event {
        pcr: u32,
        data: Vec<u8>,
        what: String,
    },
}

/// The event sequence for a boot with these digests. `components` are (name, digest) in manifest
/// order; `boot` is the digest of the boot component.
pub fn boot_events(
    manifest_digest: [u8; 32],
    components: &[(String, [u8; 32])],
    boot: [u8; 32],
    cmdline: &str,
) -> Vec<Event> {
    let mut ev = vec![
        Event::Extend {
            pcr: PCR_BOOT,
            digest: boot,
            what: "boot component".into(),
        },
        Event::Event {
            pcr: PCR_CMDLINE,
            data: cmdline.as_bytes().to_vec(),
            what: "command line".into(),
        },
        Event::Extend {
            pcr: PCR_IMAGE,
            digest: manifest_digest,
            what: "image manifest".into(),
        },
    ];
    for (name, d) in components {
        ev.push(Event::Extend {
            pcr: PCR_IMAGE,
            digest: *d,
            what: format!("component {name}"),
        });
    }
    ev
}

/// Replays events on all-zero PCRs.
pub fn replay(events: &[Event]) -> BTreeMap<u32, [u8; 32]> {
    let mut pcrs: BTreeMap<u32, [u8; 32]> = BTreeMap::new();
    for e in events {
        match e {
            Event::Extend { pcr, digest, .. } => {
                let old = pcrs.get(pcr).copied().unwrap_or([0; 32]);
                pcrs.insert(*pcr, extend_digest_sha256(&old, digest));
            }
            Event::Event { pcr, data, .. } => {
                let old = pcrs.get(pcr).copied().unwrap_or([0; 32]);
                pcrs.insert(*pcr, extend_sha256(&old, data));
            }
        }
    }
    pcrs
}

/// The measurements a config must carry for nodes booted with `events`.
pub fn measurements_from_events(events: &[Event]) -> Measurements {
    let pcrs = replay(events);
    let mut map = BTreeMap::new();
    for (i, v) in pcrs {
        map.insert(i, Measurement::enforced(v.to_vec()));
    }
    for i in ZERO_ENFORCED {
        map.entry(i)
            .or_insert_with(|| Measurement::enforced(vec![0; 32]));
    }
    for i in ZERO_WARN {
        map.entry(i)
            .or_insert_with(|| Measurement::warn_only(vec![0; 32]));
    }
    // All entries are 32 bytes and indices ≤ 15: always valid.
    Measurements::new(map).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_changes_with_every_input() {
        let base = boot_events(
            [1; 32],
            &[("a".into(), [2; 32]), ("b".into(), [3; 32])],
            [2; 32],
            "x",
        );
        let m = measurements_from_events(&base);
        assert_eq!(m.get(15).unwrap().expected, vec![0; 32]);
        assert!(m.get(14).unwrap().warn_only);
        let variants = [
            boot_events(
                [9; 32],
                &[("a".into(), [2; 32]), ("b".into(), [3; 32])],
                [2; 32],
                "x",
            ),
            boot_events(
                [1; 32],
                &[("a".into(), [2; 32]), ("b".into(), [4; 32])],
                [2; 32],
                "x",
            ),
            boot_events(
                [1; 32],
                &[("a".into(), [2; 32]), ("b".into(), [3; 32])],
                [5; 32],
                "x",
            ),
            boot_events(
                [1; 32],
                &[("a".into(), [2; 32]), ("b".into(), [3; 32])],
                [2; 32],
                "y",
            ),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(
                measurements_from_events(v),
                m,
                "input {i} did not change the measurements"
            );
        }
    }
}
