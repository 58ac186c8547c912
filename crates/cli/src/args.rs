//! Every command-line structure of `constellation`. Commands' logic is in [`crate::cmd`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "constellation",
    version,
    about = "Manage always-encrypted clusters whose nodes prove, by attestation, what they run.",
    long_about = None
)]
pub struct Cli {
    /// Workspace folder (config, state, secrets); default: the current folder. It must exist.
    #[arg(short = 'C', long = "workspace", global = true, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Debug logging on stderr.
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version and build information.
    Version,
    /// Work with the config file (constellation-conf.yaml).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create or update the cluster: phases `infrastructure` then `init`. Re-run it after any failure.
    Apply(ApplyArgs),
    /// Create the infrastructure only (= apply --skip-phases init).
    Create,
    /// Initialize the cluster only (= apply --skip-phases infrastructure).
    Init,
    /// A local cluster in one command.
    #[command(subcommand)]
    Mini(MiniCommand),
    /// Show the cluster's nodes, roles, addresses, image, attestation state.
    Status(StatusArgs),
    /// Give control-plane nodes their keys back after all of them went down (needs the master secret).
    #[command(long_about = RECOVER_LONG)]
    Recover(RecoverArgs),
    /// Ask nodes for a fresh attestation and check it against the config's measurements and the cluster ID (PCR 15).
    #[command(long_about = VERIFY_LONG)]
    Verify(VerifyArgs),
    /// Stop every node and TPM and remove the infrastructure state and admin credentials (keeps config and master secret).
    Terminate(TerminateArgs),
    /// Work with the state file (constellation-state.yaml).
    #[command(subcommand)]
    State(StateCommand),
    /// Print a shell completion script: `source <(constellation completion bash)`.
    #[command(long_about = COMPLETION_LONG)]
    Completion(CompletionArgs),
    /// Check attestation evidence offline (debug a refused node).
    #[command(subcommand)]
    Attestation(AttestationCommand),
}

const COMPLETION_LONG: &str = "\
Print a shell completion script for bash, zsh or fish.

  bash:  source <(constellation completion bash)       (or save it in /etc/bash_completion.d/)
  zsh:   constellation completion zsh > \"${fpath[1]}/_constellation\"
  fish:  constellation completion fish > ~/.config/fish/completions/constellation.fish";

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh or fish.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Rebuild a lost or damaged constellation-state.yaml from the running cluster.
    #[command(long_about = STATE_REBUILD_LONG)]
    Rebuild(StateRebuildArgs),
}

const STATE_REBUILD_LONG: &str = "\
Rebuild a lost or damaged constellation-state.yaml from the running cluster.

The state file records the cluster ID and the measurement salt. Without it, apply and status
cannot tell that the nodes belong to an initialized cluster, so apply refuses to do anything.
This command reads the cluster ID each node reports and the measurement salt from a
control-plane node, checks that your master secret (constellation-mastersecret.json) derives
exactly that cluster ID from that salt, then asks every node for a fresh attestation and checks
it against the config's measurements and that cluster ID (PCR 15). Only then does it write the
state file (the old one, if damaged, is kept as constellation-state.yaml.damaged).

Restoring the state file from a backup works too: it is not secret (it holds the init secret,
used only once to initialize, and values anyone in the cluster knows).";

#[derive(Debug, Args)]
pub struct StateRebuildArgs {
    /// Replace a state file that exists but cannot be read (it is kept as .damaged).
    #[arg(long)]
    pub force: bool,
}

/// Output formats of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusOutput {
    /// A table for people.
    Table,
    /// Everything, as JSON, for scripts.
    Json,
}

/// Output formats of `verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyOutput {
    /// A table for people.
    Table,
    /// The full report, as JSON.
    Json,
    /// Each node's attestation document, one JSON per line.
    Raw,
}

/// The phases of `apply`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Create missing nodes, restart stopped ones, remove surplus ones.
    Infrastructure,
    /// Initialize the cluster through the first control-plane node's Bootstrapper.
    Init,
    /// Push the config's expected measurements to the cluster's join configuration.
    Attestationconfig,
    /// Accepted for scripts written for the Go CLI; nothing to skip in this build.
    Certsans,
    /// Accepted for scripts written for the Go CLI; nothing to skip in this build.
    Helm,
    /// Accepted for scripts written for the Go CLI; nothing to skip in this build.
    Image,
    /// Accepted for scripts written for the Go CLI; nothing to skip in this build.
    K8s,
}

#[derive(Debug, Subcommand)]
pub enum AttestationCommand {
    /// Verify captured evidence offline: verdict, every failed check, decoded claims. Exit status 0 = genuine and within policy, 1 = refused, 2 = usage error.
    #[command(long_about = ATTESTATION_VERIFY_LONG)]
    Verify(Box<AttestationVerifyArgs>),
}

const ATTESTATION_VERIFY_LONG: &str = "Verify captured attestation evidence offline, without contacting any node or service.\n\n\
Formats: snp-report (raw 1184-byte SEV-SNP report or its base64), tdx-quote (raw Intel TDX quote v4 or its base64; \
needs --collateral or --fetch), azure-snp-vtpm (JSON: tpm_quote, hcl_report, vcek), azure-tdx-vtpm (JSON: tpm_quote, hcl_report, \
td_quote; needs --collateral or --fetch), gce-vtpm (go-tpm-tools attestation protobuf), document (a node's attestation document; \
variant from -c or --variant; TDX variants need --collateral or --fetch).\n\
TDX collateral (--collateral) is the JSON of Intel PCS data: pck_crl_issuer_chain, root_ca_crl, pck_crl, \
tcb_info_issuer_chain, tcb_info, tcb_info_signature, qe_identity_issuer_chain, qe_identity, qe_identity_signature; \
the TCB status (UpToDate, SWHardeningNeeded, OutOfDate, ...) is among the claims. With --fetch and no --collateral, \
it is fetched from Intel's PCS (--pcs-url) for the quote's FMSPC and PCK CA and cached until each item's nextUpdate \
(judged at --at).\n\
Certificates (--cert, PEM or DER, repeatable) supply what the evidence lacks: AMD ASK/ARK or VCEK, GCE AK CA certificates. \
--at fixes the verification time (RFC 3339); several real certificates have expired since capture. \
Without -c, the Go system's defaults for the variant apply (debug forbidden, SMT allowed, VMPL 0; minimum versions \
\"latest\" are not enforced offline and say so); measurements are compared only with -c.\n\
Exit status: 0 genuine and within policy, 1 refused, 2 usage error.";

#[derive(Debug, Args)]
pub struct AttestationVerifyArgs {
    /// Evidence format: snp-report, tdx-quote, azure-snp-vtpm, azure-tdx-vtpm, gce-vtpm,
    /// document.
    #[arg(long, value_name = "FORMAT")]
    pub format: String,
    /// The evidence file.
    #[arg(long, value_name = "FILE")]
    pub evidence: PathBuf,
    /// Certificates (PEM or DER; repeat the flag).
    #[arg(long = "cert", value_name = "PEM")]
    pub certs: Vec<PathBuf>,
    /// Collateral file (format-specific; for SEV-SNP more certificates, for TDX the JSON with
    /// TCB info, QE identity, CRLs and their issuer chains).
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// The nonce the evidence must bind, as hex.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// Verification time, RFC 3339 (default: now).
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Config whose attestation section is the policy (default: the Go defaults).
    #[arg(short = 'c', long = "config", value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Variant of a `document` when no config is given.
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<String>,
    /// Output: text (default) or json.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: String,
    /// Fetch missing collateral (cached): AMD certificates (VCEK, ASK/ASVK, ARK) from AMD's key
    /// distribution service for SEV-SNP; for tdx-quote and azure-tdx-vtpm without --collateral,
    /// the TCB info, QE identity and CRLs from Intel's PCS.
    #[arg(long)]
    pub fetch: bool,
    /// Key distribution service URL for --fetch.
    #[arg(long, value_name = "URL", default_value = crate::kds::KDS_URL)]
    pub kds_url: String,
    /// Intel PCS URL for --fetch (an Intel PCCS serving the same v4 API works too).
    #[arg(long, value_name = "URL", default_value = crate::pcs::PCS_URL)]
    pub pcs_url: String,
    /// Azure THIM URL for --fetch with azure-snp-vtpm: the VCEK and ASK/ARK chain from the
    /// Azure CVM's instance metadata service (inside the CVM:
    /// http://169.254.169.254/metadata/THIM/amd/certification); tried before AMD's KDS.
    #[arg(long, value_name = "URL")]
    pub thim_url: Option<String>,
    /// Cache folder for --fetch (default: ~/.cache/constellation/kds for AMD,
    /// ~/.cache/constellation/pcs for Intel, ~/.cache/constellation/thim for THIM).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a config with strong defaults for a provider: local, qemu, aws, azure, gcp, openstack.
    Generate(GenerateArgs),
    /// Fetch signed image measurements, verify them, and write them into the config.
    FetchMeasurements(FetchMeasurementsArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Provider: local, qemu, aws, azure, gcp or openstack.
    #[arg(value_name = "PROVIDER")]
    pub provider: String,
    /// Attestation variant (default: the provider's first, e.g. local-vtpm, aws-sev-snp).
    #[arg(short = 'a', long = "attestation", value_name = "VARIANT")]
    pub attestation: Option<String>,
    /// Kubernetes version: MAJOR.MINOR (resolved to the supported patch) or an exact patch.
    #[arg(short = 'k', long = "kubernetes", value_name = "VERSION")]
    pub kubernetes: Option<String>,
    /// Tags for cloud resources, key=value (repeat the flag or separate with commas).
    #[arg(
        short = 't',
        long = "tags",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FetchMeasurementsArgs {
    /// Measurements file: an http(s) URL or a local path (default: the Go system's CDN
    /// location for the config's image; required for the local provider).
    #[arg(short = 'u', long = "url", value_name = "URL|PATH")]
    pub url: Option<String>,
    /// Signature file: an http(s) URL or a local path (default: the measurements location + ".sig").
    #[arg(short = 's', long = "signature-url", value_name = "URL|PATH")]
    pub signature_url: Option<String>,
    /// PEM public key that must have signed the file (default: the embedded release key).
    #[arg(long = "key", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Skip the signature check. Whoever can change the file then decides which nodes your
    /// cluster trusts: testing only.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Phases to skip, comma separated.
    #[arg(long, value_delimiter = ',', value_enum, value_name = "PHASE")]
    pub skip_phases: Vec<Phase>,
    /// Do not ask before changing the running cluster (new expected measurements, fewer nodes);
    /// without it, apply shows the change and asks, and refuses when it cannot ask (no terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Merge the cluster's kubeconfig into your default one ($KUBECONFIG, else
    /// ~/.kube/config) and switch to its context.
    #[arg(long)]
    pub merge_kubeconfig: bool,
}

#[derive(Debug, Args)]
pub struct MiniUpArgs {
    /// Merge the cluster's kubeconfig into your default one ($KUBECONFIG, else
    /// ~/.kube/config) and switch to its context (as the Go CLI's mini up does);
    /// `--merge-kubeconfig=false` leaves it alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub merge_kubeconfig: bool,
}

#[derive(Debug, Subcommand)]
pub enum MiniCommand {
    /// Generate a `local` config if there is none (on a free loopback range), then apply it.
    Up(MiniUpArgs),
    /// Terminate the local cluster and remove its master secret.
    Down(TerminateArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: StatusOutput,
}

const RECOVER_LONG: &str = "\
Give control-plane nodes their keys back after all of them went down (needs the master secret).

A restarted node normally gets its disk key back from another control-plane node's JoinService.
When every control-plane node went down there is none: the nodes wait in phase
`awaiting-recovery` (see `constellation status`) and serve a recovery endpoint on port 9999.
recover checks each node's attestation (the config's measurements, PCR 15 still zero, an
attestation key the provider recorded) and only then sends the master secret from
constellation-mastersecret.json; the node derives its keys, opens its disk and restarts its
services with their data. Then recover waits until every node is a member again.

Typical use after an outage:
  constellation apply      restarts the nodes; says to run recover when no node holds the keys
  constellation recover    all control-plane nodes at once (etcd needs a quorum of them)

Running it again when nothing needs recovery does nothing.";

const VERIFY_LONG: &str = "\
Ask nodes for a fresh attestation and check it against the config's measurements and the cluster ID.

Each node serves its attestation on port 30081. verify sends a random nonce, then checks that the
document is signed by an attestation key the provider recorded for one of the cluster's nodes, that
it answers this nonce, and that every expected PCR holds its value: the config's measurements, and
PCR 15 = SHA256(0^32 || SHA256(cluster ID)), which only a node admitted to this cluster holds.
Every expected PCR is reported with its expected and actual value.

Examples:
  constellation verify                          every node of the workspace's cluster
  constellation verify -e control-plane-0       one node, by name
  constellation verify -e 127.20.0.2            one node, by address (port 30081 by default)
  constellation verify -o json                  the full report, for scripts
  constellation verify --cluster-id <64 hex>    against a cluster ID you hold yourself

Exit status: 0 when every node verified, 1 otherwise.";

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Recover one control-plane node only: its address or name. Default: every one that waits.
    #[arg(short = 'e', long = "endpoint", value_name = "HOST|NAME")]
    pub endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// One node to verify: its name (see `constellation status`), HOST or HOST:PORT (default port 30081). Default: every node of the cluster.
    #[arg(short = 'e', long = "node-endpoint", value_name = "NODE|HOST[:PORT]")]
    pub node_endpoint: Option<String>,
    /// The cluster ID to expect in PCR 15: 64 hex digits or base64. Default: the one in constellation-state.yaml.
    #[arg(long = "cluster-id", value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: VerifyOutput,
}

#[derive(Debug, Args)]
pub struct TerminateArgs {
    /// Do not ask for confirmation (without it, terminate asks, and refuses when it cannot ask).
    #[arg(short, long)]
    pub yes: bool,
}
