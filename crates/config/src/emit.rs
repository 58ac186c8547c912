//! Writes a config as commented YAML: every key is preceded by a comment that explains it.
//!
//! Hand-written rather than derived so the comments sit next to their keys; the output always
//! reads back through the strict loader into an equal [`RawConfig`] (tested for every provider).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use attestation::Variant;
use measurements::Measurements;

use crate::raw::*;

struct Out(String);

impl Out {
    fn comment(&mut self, indent: usize, text: &str) {
        for line in text.lines() {
            let _ = writeln!(self.0, "{:indent$}# {line}", "", indent = indent * 2);
        }
    }
    fn key(&mut self, indent: usize, key: &str) {
        let _ = writeln!(self.0, "{:indent$}{key}:", "", indent = indent * 2);
    }
    fn kv(&mut self, indent: usize, key: &str, value: &str) {
        let _ = writeln!(self.0, "{:indent$}{key}: {value}", "", indent = indent * 2);
    }
    /// Comment, then `key: value`.
    fn field(&mut self, indent: usize, doc: &str, key: &str, value: &str) {
        self.comment(indent, doc);
        self.kv(indent, key, value);
    }
    fn blank(&mut self) {
        self.0.push('\n');
    }
}

/// A YAML scalar for `s`: plain where that is unambiguous, otherwise a double-quoted string
/// (JSON string syntax, which is valid YAML).
fn q(s: &str) -> String {
    const SPECIAL: [&str; 9] = ["true", "false", "yes", "no", "on", "off", "null", "y", "n"];
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && !SPECIAL.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_string()
    } else {
        // serde_json cannot fail on a &str.
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
    }
}

fn b(v: bool) -> &'static str {
    if v {
        "true"
    } else {
        "false"
    }
}

fn pcr_doc(variant: Variant, index: u32) -> Option<&'static str> {
    if variant == Variant::LocalVtpm {
        return match index {
            4 => Some("PCR 4: the node launcher and boot path of the node image"),
            8 => Some("PCR 8: unused, must stay zero"),
            9 => Some("PCR 9: the node's command line (provider, attestation variant)"),
            11 => Some("PCR 11: the node image manifest (digests of every component)"),
            12 => Some("PCR 12: unused, must stay zero"),
            13 => Some("PCR 13: unused, must stay zero"),
            15 => Some("PCR 15: cluster ID; zero = node not yet part of a cluster"),
            _ => None,
        };
    }
    if matches!(variant, Variant::QemuTdx) {
        return None;
    }
    match index {
        4 => Some("PCR 4: boot loader, kernel, initrd and command line (the UKI)"),
        8 => Some("PCR 8: must stay zero (no GRUB or extra boot code)"),
        9 => Some("PCR 9: kernel command line, binds the dm-verity root hash"),
        11 => Some("PCR 11: sections of the unified kernel image"),
        12 => Some("PCR 12: must stay zero (no boot-loader overrides)"),
        13 => Some("PCR 13: must stay zero (no system extensions)"),
        14 => Some("PCR 14: secure-boot state (warn only)"),
        15 => Some("PCR 15: cluster ID; zero = node not yet part of a cluster"),
        _ => None,
    }
}

fn measurements(o: &mut Out, indent: usize, variant: Variant, m: &Measurements) {
    o.comment(
        indent,
        "Expected measurements: PCR index -> {expected: hex, warnOnly}. An enforced mismatch\n\
         refuses the node; warnOnly only logs. `constellation config fetch-measurements`\n\
         fills these from a signed measurements file.",
    );
    if m.is_empty() {
        o.kv(indent, "measurements", "{}");
        return;
    }
    o.key(indent, "measurements");
    for (idx, entry) in m.iter() {
        if let Some(doc) = pcr_doc(variant, idx) {
            o.comment(indent + 1, doc);
        }
        o.key(indent + 1, &idx.to_string());
        o.kv(
            indent + 2,
            "expected",
            &format!("\"{}\"", hex::encode(&entry.expected)),
        );
        o.kv(indent + 2, "warnOnly", b(entry.warn_only));
    }
}

/// Comment and key of `variant`'s attestation section, then its measurements.
fn variant_section(o: &mut Out, doc: &str, variant: Variant, m: &Measurements) {
    o.comment(1, doc);
    o.key(1, variant.config_key());
    measurements(o, 2, variant, m);
}

fn tcb<T: std::fmt::Display>(o: &mut Out, indent: usize, key: &str, v: &Tcb<T>, what: &str) {
    o.field(
        indent,
        &format!("Lowest accepted {what} version: a number, or latest (newest published)."),
        key,
        // A number or `latest`: both plain scalars (a quoted number would be a string).
        &v.to_string(),
    );
}

fn sev_snp_versions(
    o: &mut Out,
    i: usize,
    bl: &Tcb<u8>,
    tee: &Tcb<u8>,
    snp: &Tcb<u8>,
    mc: &Tcb<u8>,
) {
    tcb(o, i, "bootloaderVersion", bl, "SEV-SNP boot loader");
    tcb(o, i, "teeVersion", tee, "SEV-SNP PSP OS (TEE)");
    tcb(o, i, "snpVersion", snp, "SEV-SNP firmware");
    tcb(o, i, "microcodeVersion", mc, "CPU microcode");
}

fn amd_keys(o: &mut Out, i: usize, root: &str, signing: &str) {
    o.field(
        i,
        "PEM of AMD's root key (ARK); the only root trusted. Empty = the pinned ARKs of\nMilan, Genoa and Turin.",
        "amdRootKey",
        &q(root),
    );
    o.field(
        i,
        "PEM of AMD's signing key (ASK). Empty = fetched from AMD's key distribution service.",
        "amdSigningKey",
        &q(signing),
    );
}

fn node_groups(o: &mut Out, groups: &BTreeMap<String, NodeGroup>) {
    o.comment(
        0,
        "Node groups: control_plane_default (control-plane, initialCount >= 1) and\n\
         worker_default (worker) are required; more groups may be added.",
    );
    if groups.is_empty() {
        o.kv(0, "nodeGroups", "{}");
        return;
    }
    o.key(0, "nodeGroups");
    for (name, g) in groups {
        o.key(1, &q(name));
        o.field(
            2,
            "Role of the group's nodes: control-plane or worker.",
            "role",
            g.role.as_str(),
        );
        o.field(
            2,
            "Availability zone (clouds only; empty = the provider's zone).",
            "zone",
            &q(&g.zone),
        );
        o.field(
            2,
            "VM instance type (clouds only).",
            "instanceType",
            &q(&g.instance_type),
        );
        o.field(
            2,
            "Size of each node's encrypted state disk in GB (local: 0, a directory without quota).",
            "stateDiskSizeGB",
            &g.state_disk_size_gb.to_string(),
        );
        o.field(
            2,
            "Type of the state disk (clouds only).",
            "stateDiskType",
            &q(&g.state_disk_type),
        );
        o.field(
            2,
            "Number of nodes created by `apply`.",
            "initialCount",
            &g.initial_count.to_string(),
        );
    }
}

fn providers(o: &mut Out, p: &ProviderConfig) {
    o.comment(0, "Where the nodes run. Exactly one provider section.");
    o.key(0, "provider");
    if let Some(l) = &p.local {
        o.comment(
            1,
            "Local provider: every node is a process tree on this machine with its own\n\
             loopback address, directory and software TPM (swtpm). A software TPM proves the\n\
             integrity of what was measured, not confidentiality from this host.",
        );
        o.key(1, "local");
        o.field(
            2,
            "Node image bundle directory. Empty = the bundle installed next to the\n\
             `constellation` binary.",
            "nodeImage",
            &q(&l.node_image),
        );
        o.field(
            2,
            "First node's loopback address (127.0.0.0/8); node i gets this address + i.",
            "baseAddress",
            &q(&l.base_address.to_string()),
        );
    }
    if let Some(c) = &p.qemu {
        o.comment(
            1,
            "QEMU provider (the Go system's local VMs; on paper in this project).",
        );
        o.key(1, "qemu");
        o.field(
            2,
            "Format of the node image: raw or qcow2.",
            "imageFormat",
            c.image_format.as_str(),
        );
        o.field(2, "vCPUs per VM.", "vcpus", &c.vcpus.to_string());
        o.field(2, "Memory per VM in MiB.", "memory", &c.memory.to_string());
        o.field(
            2,
            "Container image of the QEMU metadata API server.",
            "metadataAPIServer",
            &q(&c.metadata_api_server),
        );
        o.field(
            2,
            "Libvirt connection URI. Empty = start a containerized libvirt.",
            "libvirtSocket",
            &q(&c.libvirt_socket),
        );
        o.field(
            2,
            "Container image of the containerized libvirt.",
            "libvirtContainerImage",
            &q(&c.libvirt_container_image),
        );
        o.field(
            2,
            "NVRAM template: production, testing, or a path.",
            "nvram",
            &q(&c.nvram),
        );
        o.field(
            2,
            "Path to the OVMF firmware. Empty = the default.",
            "firmware",
            &q(&c.firmware),
        );
    }
    if let Some(c) = &p.aws {
        o.comment(1, "AWS provider.");
        o.key(1, "aws");
        o.field(
            2,
            "AWS region, e.g. eu-central-1. Required.",
            "region",
            &q(&c.region),
        );
        o.field(
            2,
            "Availability zone in the region, e.g. eu-central-1a. Required.",
            "zone",
            &q(&c.zone),
        );
        o.field(
            2,
            "IAM instance profile of control-plane nodes. Required.",
            "iamProfileControlPlane",
            &q(&c.iam_profile_control_plane),
        );
        o.field(
            2,
            "IAM instance profile of worker nodes. Required.",
            "iamProfileWorkerNodes",
            &q(&c.iam_profile_worker_nodes),
        );
        o.field(
            2,
            "Deploy the EBS CSI driver with on-node encryption.",
            "deployCSIDriver",
            b(c.deploy_csi_driver),
        );
        o.field(
            2,
            "Use the AWS Marketplace image.",
            "useMarketplaceImage",
            b(c.use_marketplace_image),
        );
    }
    if let Some(c) = &p.azure {
        o.comment(1, "Azure provider.");
        o.key(1, "azure");
        o.field(
            2,
            "Subscription ID (UUID). Required.",
            "subscription",
            &q(&c.subscription),
        );
        o.field(2, "Tenant ID (UUID). Required.", "tenant", &q(&c.tenant));
        o.field(
            2,
            "Azure region, e.g. westeurope. Required.",
            "location",
            &q(&c.location),
        );
        o.field(
            2,
            "Existing resource group for the cluster. Required.",
            "resourceGroup",
            &q(&c.resource_group),
        );
        o.field(
            2,
            "Full resource ID of the user-assigned identity of the nodes. Required.",
            "userAssignedIdentity",
            &q(&c.user_assigned_identity),
        );
        o.field(
            2,
            "Deploy the Azure Disk CSI driver with on-node encryption.",
            "deployCSIDriver",
            b(c.deploy_csi_driver),
        );
        o.field(
            2,
            "Enable secure boot (the image needs a VMGS blob).",
            "secureBoot",
            b(c.secure_boot),
        );
        o.field(
            2,
            "Use the Azure Marketplace image.",
            "useMarketplaceImage",
            b(c.use_marketplace_image),
        );
        if let Some(id) = &c.app_client_id {
            o.field(2, "Unsupported since v2.9; remove.", "appClientID", &q(id));
        }
    }
    if let Some(c) = &p.gcp {
        o.comment(1, "GCP provider.");
        o.key(1, "gcp");
        o.field(2, "GCP project ID. Required.", "project", &q(&c.project));
        o.field(
            2,
            "GCP region, e.g. europe-west3. Required.",
            "region",
            &q(&c.region),
        );
        o.field(
            2,
            "GCP zone, e.g. europe-west3-b. Required.",
            "zone",
            &q(&c.zone),
        );
        o.field(
            2,
            "Path of the service account key file. Required.",
            "serviceAccountKeyPath",
            &q(&c.service_account_key_path),
        );
        o.field(
            2,
            "Service account e-mail attached to the VMs.",
            "IAMServiceAccountVM",
            &q(&c.iam_service_account_vm),
        );
        o.field(
            2,
            "Deploy the Persistent Disk CSI driver with on-node encryption.",
            "deployCSIDriver",
            b(c.deploy_csi_driver),
        );
        o.field(
            2,
            "Use the GCP Marketplace image.",
            "useMarketplaceImage",
            b(c.use_marketplace_image),
        );
    }
    if let Some(c) = &p.openstack {
        o.comment(1, "OpenStack provider.");
        o.key(1, "openstack");
        o.field(
            2,
            "Cloud name in clouds.yaml (stackit = STACKIT).",
            "cloud",
            &q(&c.cloud),
        );
        o.field(
            2,
            "Path of clouds.yaml.",
            "cloudsYAMLPath",
            &q(&c.clouds_yaml_path),
        );
        o.field(
            2,
            "Availability zone of the VMs. Required.",
            "availabilityZone",
            &q(&c.availability_zone),
        );
        o.field(
            2,
            "Floating IP pool ID. Required.",
            "floatingIPPoolID",
            &q(&c.floating_ip_pool_id),
        );
        o.field(
            2,
            "STACKIT project ID (STACKIT only).",
            "stackitProjectID",
            &q(&c.stackit_project_id),
        );
        o.field(
            2,
            "Region name used inside the cluster. Required.",
            "regionName",
            &q(&c.region_name),
        );
        o.field(
            2,
            "Deploy the Yawol load balancer.",
            "deployYawolLoadBalancer",
            b(c.deploy_yawol_load_balancer),
        );
        o.field(
            2,
            "OpenStack image ID of the yawollet.",
            "yawolImageID",
            &q(&c.yawol_image_id),
        );
        o.field(
            2,
            "OpenStack flavor ID of the yawollet.",
            "yawolFlavorID",
            &q(&c.yawol_flavor_id),
        );
        o.field(
            2,
            "Deploy the Cinder CSI driver with on-node encryption.",
            "deployCSIDriver",
            b(c.deploy_csi_driver),
        );
    }
}

fn attestation(o: &mut Out, a: &AttestationConfig) {
    o.comment(
        0,
        "How nodes prove what they run. Exactly one section, matching the provider.",
    );
    o.key(0, "attestation");
    let simple: [(&Option<MeasurementsOnly>, Variant, &str); 6] = [
        (&a.aws_nitro_tpm, Variant::AwsNitroTpm, "AWS NitroTPM attestation."),
        (&a.azure_trusted_launch, Variant::AzureTrustedLaunch, "Azure trusted launch vTPM attestation."),
        (&a.gcp_sev_es, Variant::GcpSevEs, "GCP SEV-ES vTPM attestation."),
        (&a.qemu_vtpm, Variant::QemuVtpm, "QEMU vTPM attestation (the attestation key is trusted as-is: testing only)."),
        (&a.qemu_tdx, Variant::QemuTdx, "QEMU TDX attestation."),
        (&a.local_vtpm, Variant::LocalVtpm, "Local provider: software TPM per node; its attestation key is trusted\nonly if the local provider recorded it when it created the node."),
    ];
    for (section, variant, doc) in simple {
        if let Some(s) = section {
            variant_section(o, doc, variant, &s.measurements);
        }
    }
    for (section, variant, doc) in [
        (
            &a.aws_sev_snp,
            Variant::AwsSevSnp,
            "AWS SEV-SNP attestation.",
        ),
        (
            &a.gcp_sev_snp,
            Variant::GcpSevSnp,
            "GCP SEV-SNP attestation.",
        ),
    ] {
        if let Some(s) = section {
            variant_section(o, doc, variant, &s.measurements);
            sev_snp_versions(
                o,
                2,
                &s.bootloader_version,
                &s.tee_version,
                &s.snp_version,
                &s.microcode_version,
            );
            amd_keys(o, 2, &s.amd_root_key, &s.amd_signing_key);
        }
    }
    if let Some(s) = &a.azure_sev_snp {
        variant_section(
            o,
            "Azure SEV-SNP attestation.",
            Variant::AzureSevSnp,
            &s.measurements,
        );
        sev_snp_versions(
            o,
            2,
            &s.bootloader_version,
            &s.tee_version,
            &s.snp_version,
            &s.microcode_version,
        );
        o.comment(
            2,
            "Which firmware signers are accepted (Azure's IGVM firmware).",
        );
        o.key(2, "firmwareSignerConfig");
        let f = &s.firmware_signer_config;
        o.comment(
            3,
            "SHA-384 digests (hex) of accepted firmware signing keys.",
        );
        if f.accepted_key_digests.0.is_empty() {
            o.kv(3, "acceptedKeyDigests", "[]");
        } else {
            o.key(3, "acceptedKeyDigests");
            for d in &f.accepted_key_digests.0 {
                let _ = writeln!(o.0, "{:8}- \"{}\"", "", hex::encode(d));
            }
        }
        o.field(
            3,
            "Equal: only accepted digests; MAAFallback: ask Microsoft Azure Attestation\n\
             otherwise; WarnOnly: log a mismatch (any case).",
            "enforcementPolicy",
            f.enforcement_policy.as_str(),
        );
        o.field(
            3,
            "Must be empty: set from the cluster's state when needed.",
            "maaURL",
            &q(&f.maa_url),
        );
        amd_keys(o, 2, &s.amd_root_key, &s.amd_signing_key);
    }
    if let Some(s) = &a.azure_tdx {
        variant_section(
            o,
            "Azure TDX attestation.",
            Variant::AzureTdx,
            &s.measurements,
        );
        tcb(o, 2, "qeSVN", &s.qe_svn, "quoting enclave SVN");
        tcb(
            o,
            2,
            "pceSVN",
            &s.pce_svn,
            "provisioning certification enclave SVN",
        );
        o.field(
            2,
            "Lowest accepted TEE TCB SVN: 16 bytes hex, or latest.",
            "teeTCBSVN",
            &q(&s.tee_tcb_svn.to_string()),
        );
        o.field(
            2,
            "Expected QE vendor ID: 16 bytes hex, or latest.",
            "qeVendorID",
            &q(&s.qe_vendor_id.to_string()),
        );
        let seam = s.mr_seam.0.map(hex::encode).unwrap_or_default();
        o.field(
            2,
            "Expected MRSEAM: 48 bytes hex, or empty (not checked).",
            "mrSeam",
            &q(&seam),
        );
        o.field(
            2,
            "Expected XFAM: 8 bytes hex, or latest.",
            "xfam",
            &q(&s.xfam.to_string()),
        );
        o.field(
            2,
            "PEM of Intel's SGX root CA. Empty = the built-in one.",
            "intelRootKey",
            &q(&s.intel_root_key),
        );
    }
}

/// The config as commented YAML.
pub fn to_yaml(c: &RawConfig) -> String {
    let mut o = Out(String::new());
    o.comment(
        0,
        "Constellation config (v4). Every key is explained above it. Keys unknown to this\n\
         version are errors; `constellation config generate <provider>` in an empty folder\n\
         shows a complete default file.",
    );
    o.blank();
    o.field(0, "Schema version of this file.", "version", &q(&c.version));
    o.field(0, "Node image version (vX.Y.Z, stream/<stream>/<version> or ref/<ref>/stream/<stream>/<version>).", "image", &q(&c.image));
    o.field(
        0,
        "Name of the cluster (at most 37 characters; AWS: 10, lowercase).",
        "name",
        &q(&c.name),
    );
    o.field(
        0,
        "Kubernetes version (supported: v1.30.14, v1.31.13, v1.32.9).",
        "kubernetesVersion",
        &q(&c.kubernetes_version),
    );
    o.field(
        0,
        "Version of the cluster's services (defaults to the CLI's version).",
        "microserviceVersion",
        &q(&c.microservice_version),
    );
    o.field(
        0,
        "Debug cluster: debug images and a debug daemon on each node. Never in production.",
        "debugCluster",
        b(c.debug_cluster),
    );
    o.field(
        0,
        "Extra DNS name of the API server (added to its certificate). Empty = none.",
        "customEndpoint",
        &q(&c.custom_endpoint),
    );
    o.field(
        0,
        "Reach the cluster through an internal load balancer (AWS and GCP only).",
        "internalLoadBalancer",
        b(c.internal_load_balancer),
    );
    o.field(
        0,
        "Kubernetes service CIDR (used at cluster creation only).",
        "serviceCIDR",
        &q(&c.service_cidr),
    );
    o.comment(
        0,
        "Tags put on every cloud resource of the cluster (key: value).",
    );
    if c.tags.is_empty() {
        o.kv(0, "tags", "{}");
    } else {
        o.key(0, "tags");
        for (k, v) in &c.tags {
            o.kv(1, &q(k), &q(v));
        }
    }
    o.blank();
    providers(&mut o, &c.provider);
    o.blank();
    node_groups(&mut o, &c.node_groups);
    o.blank();
    attestation(&mut o, &c.attestation);
    o.0
}

#[cfg(test)]
mod tests {
    use super::q;

    #[test]
    fn quoting() {
        let cases = [
            ("v4", "v4"),
            ("", "\"\""),
            ("true", "\"true\""),
            ("No", "\"No\""),
            ("127.20.0.1", "\"127.20.0.1\""),
            ("a: b", "\"a: b\""),
            ("x#y", "\"x#y\""),
            ("line\nbreak", "\"line\\nbreak\""),
            ("ghcr.io/x/y", "ghcr.io/x/y"),
        ];
        for (s, want) in cases {
            assert_eq!(q(s), want, "{s:?}");
            let back: String = serde_norway::from_str(&q(s)).unwrap();
            assert_eq!(back, s);
        }
    }
}
