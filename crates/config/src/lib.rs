//! The files a user keeps in a workspace, and their rules.
//!
//! * `constellation-conf.yaml`, config **v4**: [`RawConfig`] is the on-disk schema (every key of
//!   the Go system's file, so a Go-generated config loads, plus `provider.local` and
//!   `attestation.localVTPM`); [`Config`] is a config that passed every check
//!   (`TryFrom<RawConfig>`), so code holding one need not re-validate. [`Config::generate`]
//!   builds a new one with strong defaults; [`RawConfig::to_yaml`] writes it with a comment
//!   on every key.
//! * `constellation-state.yaml`, state **v1**: [`state::State`].
//! * `constellation-mastersecret.json`: [`secret`].
//! * [`atomic`]: temp file + fsync + rename/link, explicit modes; every writer here uses it.
//!
//! Parsing is strict everywhere: unknown keys, wrong types, bad hex, wrong lengths and missing
//! required keys are errors that name the key path and, where the parser knows it, the line and
//! column. Nothing here talks to the network; the only I/O is reading and writing these files.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use attestation::Variant;
use measurements::{Measurements, PCR_LEN_SHA256, PCR_LEN_SHA384};

pub mod atomic;
mod defaults;
mod emit;
mod provider;
pub mod raw;
pub mod secret;
pub mod state;
mod validation;
pub use validation::TdxValidation;

pub use atomic::WriteError;
pub use defaults::{
    default_measurements, release_version, AZURE_DEFAULT_ACCEPTED_KEY_DIGEST, CONTROL_PLANE_GROUP,
    DEFAULT_LOCAL_BASE_ADDRESS, DEFAULT_NAME, DEFAULT_SERVICE_CIDR, GO_DEFAULT_AMD_ROOT_KEY,
    GO_DEFAULT_INTEL_ROOT_KEY, WORKER_GROUP,
};
pub use provider::{
    kubernetes_minor_supported, resolve_kubernetes_version, Provider, UnknownProvider,
    DEFAULT_KUBERNETES_VERSION, SUPPORTED_KUBERNETES_VERSIONS,
};
pub use raw::{LocalConfig, NodeGroup, NodeRole, RawConfig};

/// File name of the config in a workspace.
pub const CONFIG_FILE: &str = "constellation-conf.yaml";
/// The only config schema version this release reads and writes.
pub const CONFIG_VERSION: &str = "v4";

/// What kind of problem a [`ParseError`] is, for hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// A key the schema does not have (misspelt, or from another version).
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong type or form (bad hex, wrong length, not a number, …).
    BadValue,
    /// The text is not YAML (or not a mapping at the top).
    Syntax,
}

/// A config (or state) file that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// Dotted key path, e.g. `provider.local.foo` (empty for the document itself).
    pub path: String,
    /// 1-based line and column, where the parser knows them.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The parser's message, without path and position.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match (self.line, self.column) {
            (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
            (Some(l), None) => format!(" at line {l}"),
            _ => String::new(),
        };
        match self.kind {
            ParseErrorKind::UnknownKey => {
                write!(f, "unknown key `{}`{at}", self.path)?;
                // serde says "unknown field `x`, expected one of `a`, `b`": keep the list.
                if let Some((_, expected)) = self.message.split_once(", ") {
                    write!(f, " ({expected})")?;
                }
                Ok(())
            }
            // The parser's position for a missing key is the end of its mapping, which
            // misleads more than it helps.
            ParseErrorKind::MissingKey => write!(f, "missing required key `{}`", self.path),
            ParseErrorKind::BadValue => {
                write!(f, "invalid value of `{}`{at}: {}", self.path, self.message)
            }
            ParseErrorKind::Syntax => write!(f, "not a valid YAML document{at}: {}", self.message),
        }
    }
}

fn backticked(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

/// Parses YAML strictly into `T`, with key path and position in the error.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        let (line, column) = match inner.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        let mut message = inner.to_string();
        if let Some(l) = inner.location() {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            if let Some(m) = message.strip_suffix(&suffix) {
                message = m.to_string();
            }
        }
        // serde_norway prefixes its own notion of the path ("a.b: message").
        if let Some((head, tail)) = message.split_once(": ") {
            if !head.contains(' ') && !head.is_empty() {
                message = tail.to_string();
            }
        }
        let join = |field: String| {
            if path.is_empty() {
                field
            } else {
                format!("{path}.{field}")
            }
        };
        let (kind, path) = if let Some(field) = backticked(&message, "unknown field `") {
            // The path ends at the mapping that holds the unknown key; name the key itself.
            let p = if path.ends_with(&format!(".{field}")) || path == field {
                path.clone()
            } else {
                join(field)
            };
            (ParseErrorKind::UnknownKey, p)
        } else if let Some(field) = backticked(&message, "missing field `") {
            (ParseErrorKind::MissingKey, join(field))
        } else if path.is_empty()
            || message.contains("while scanning")
            || message.contains("while parsing")
        {
            (ParseErrorKind::Syntax, String::new())
        } else {
            (ParseErrorKind::BadValue, path)
        };
        ParseError {
            kind,
            path,
            line,
            column,
            message,
        }
    })
}

/// One failed rule of a parsed config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted key path of the offending value.
    pub path: String,
    pub message: String,
    /// 1-based line of the key, when the config came from text.
    pub line: Option<usize>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "`{}` (line {l}): {}", self.path, self.message),
            None => write!(f, "`{}`: {}", self.path, self.message),
        }
    }
}

/// Every failed rule of a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems:", many.len())?;
                for v in many {
                    write!(f, "\n    - {v}")?;
                }
                Ok(())
            }
        }
    }
}

/// Errors of config files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file's content is bad; the source says what and where.
    #[error("{} is not a valid config v4 file", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<ConfigError>,
    },
    #[error("{0}")]
    Parse(ParseError),
    #[error("{0}")]
    Invalid(Violations),
    #[error("attestation variant {variant} is not available on provider {provider} (choose one of: {allowed})")]
    UnsupportedVariant {
        provider: Provider,
        variant: Variant,
        allowed: String,
    },
    #[error("Kubernetes version {version:?} is not supported (supported: {}; MAJOR.MINOR picks the patch)", SUPPORTED_KUBERNETES_VERSIONS.join(", "))]
    UnsupportedKubernetes { version: String },
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl ConfigError {
    /// The innermost content error (unwrapping [`ConfigError::InFile`]).
    pub fn content(&self) -> &ConfigError {
        match self {
            ConfigError::InFile { source, .. } => source.content(),
            other => other,
        }
    }
}

/// The variants every workspace file's error type has (`NotFound`, `Read`, `InFile`), so the
/// rules for reading a file and naming it in content errors are written once.
pub(crate) trait FileError: Sized {
    fn not_found(path: PathBuf) -> Self;
    fn read(path: PathBuf, source: io::Error) -> Self;
    fn in_file(path: PathBuf, source: Box<Self>) -> Self;

    /// Error of opening or reading `path`: `NotFound` for a missing file, `Read` otherwise.
    fn opening(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Self::not_found(path.to_path_buf())
        } else {
            Self::read(path.to_path_buf(), source)
        }
    }

    /// `self`, a content error, wrapped to name the file `path`.
    fn in_file_at(self, path: &Path) -> Self {
        Self::in_file(path.to_path_buf(), Box::new(self))
    }
}

/// Implements [`FileError`] for error enums with the variants `NotFound { path }`,
/// `Read { path, source }` and `InFile { path, source }`.
macro_rules! impl_file_error {
    ($($t:ty),+ $(,)?) => {$(
        impl FileError for $t {
            fn not_found(path: PathBuf) -> Self {
                Self::NotFound { path }
            }
            fn read(path: PathBuf, source: io::Error) -> Self {
                Self::Read { path, source }
            }
            fn in_file(path: PathBuf, source: Box<Self>) -> Self {
                Self::InFile { path, source }
            }
        }
    )+};
}

impl_file_error!(ConfigError, state::StateError, secret::SecretFileError);

/// Reads the text file at `path` and parses it with `parse`; content errors name the file.
pub(crate) fn load_with<T, E: FileError>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, E> {
    let text = std::fs::read_to_string(path).map_err(|source| E::opening(path, source))?;
    parse(&text).map_err(|e| e.in_file_at(path))
}

impl RawConfig {
    /// Parses config YAML strictly (schema only; see [`Config::from_yaml`] for the rules).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        parse_yaml(text).map_err(ConfigError::Parse)
    }

    /// Reads and parses `path` strictly (schema only).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_with(path, Self::from_yaml)
    }

    /// The config as YAML with a comment on every key; reads back into an equal value.
    pub fn to_yaml(&self) -> String {
        emit::to_yaml(self)
    }

    /// Writes a new config file (mode 0600); fails if `path` exists, leaving it untouched.
    pub fn write_new(&self, path: &Path) -> Result<(), ConfigError> {
        Ok(atomic::write_new(
            path,
            self.to_yaml().as_bytes(),
            atomic::OWNER_ONLY,
        )?)
    }

    /// Atomically replaces the config file at `path` (mode 0600).
    pub fn replace(&self, path: &Path) -> Result<(), ConfigError> {
        Ok(atomic::replace(
            path,
            self.to_yaml().as_bytes(),
            atomic::OWNER_ONLY,
        )?)
    }

    /// The provider and attestation variant, if exactly one of each is set and they fit
    /// together. Commands that only need these (e.g. `fetch-measurements`) use this on a config
    /// whose account fields are not filled in yet.
    pub fn selected(&self) -> Result<(Provider, Variant), Violations> {
        let mut v = Vec::new();
        let sel = select(self, &mut v);
        match sel {
            Some(s) if v.is_empty() => Ok(s),
            _ => Err(Violations(v)),
        }
    }

    /// The measurements of the (single) attestation section's variant.
    pub fn measurements_mut(&mut self, variant: Variant) -> Option<&mut Measurements> {
        self.attestation.measurements_mut(variant)
    }
}

/// A config that passed every rule. Built only through `TryFrom<RawConfig>` (or the loaders),
/// and changed only through methods that keep it valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    raw: RawConfig,
    provider: Provider,
    variant: Variant,
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;
    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut v = Vec::new();
        let sel = select(&raw, &mut v);
        validate(&raw, sel, &mut v);
        match sel {
            Some((provider, variant)) if v.is_empty() => Ok(Config {
                raw,
                provider,
                variant,
            }),
            _ => Err(ConfigError::Invalid(Violations(v))),
        }
    }
}

impl Config {
    /// Parses and validates config YAML. Violations carry the line of their key.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let raw = RawConfig::from_yaml(text)?;
        Config::try_from(raw).map_err(|e| match e {
            ConfigError::Invalid(mut vs) => {
                for v in &mut vs.0 {
                    v.line = locate_key(text, &v.path);
                }
                ConfigError::Invalid(vs)
            }
            other => other,
        })
    }

    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_with(path, Self::from_yaml)
    }

    // `Config::generate` is in `defaults.rs`, next to the defaults it writes.

    pub fn raw(&self) -> &RawConfig {
        &self.raw
    }
    pub fn into_raw(self) -> RawConfig {
        self.raw
    }
    pub fn provider(&self) -> Provider {
        self.provider
    }
    pub fn variant(&self) -> Variant {
        self.variant
    }
    pub fn name(&self) -> &str {
        &self.raw.name
    }
    pub fn kubernetes_version(&self) -> &str {
        &self.raw.kubernetes_version
    }
    /// The expected measurements of the config's attestation variant (never empty).
    pub fn measurements(&self) -> &Measurements {
        // Invariant: validation checked that the variant's section is set.
        match self.raw.attestation.measurements(self.variant) {
            Some(m) => m,
            None => unreachable!("validated config lacks its attestation section"),
        }
    }
    /// The `provider.local` section, for local configs.
    pub fn local(&self) -> Option<&LocalConfig> {
        self.raw.provider.local.as_ref()
    }
    pub fn node_groups(&self) -> &BTreeMap<String, NodeGroup> {
        &self.raw.node_groups
    }
    /// Total `initialCount` of all groups with `role`.
    pub fn initial_count(&self, role: NodeRole) -> u32 {
        self.raw
            .node_groups
            .values()
            .filter(|g| g.role == role)
            .map(|g| g.initial_count)
            .sum()
    }

    /// Replaces the expected measurements (e.g. with the node image's), keeping the config
    /// valid: the new map must be non-empty, placeholder-free and of the variant's length.
    pub fn set_measurements(&mut self, m: Measurements) -> Result<(), ConfigError> {
        let mut v = Vec::new();
        check_measurements(self.variant, &m, &mut v);
        if !v.is_empty() {
            return Err(ConfigError::Invalid(Violations(v)));
        }
        if let Some(slot) = self.raw.attestation.measurements_mut(self.variant) {
            *slot = m;
        }
        Ok(())
    }

    pub fn to_yaml(&self) -> String {
        self.raw.to_yaml()
    }

    /// Writes a new config file (mode 0600); fails if `path` exists.
    pub fn write_new(&self, path: &Path) -> Result<(), ConfigError> {
        self.raw.write_new(path)
    }

    /// Atomically replaces the config file at `path` (mode 0600).
    pub fn replace(&self, path: &Path) -> Result<(), ConfigError> {
        self.raw.replace(path)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn push(v: &mut Vec<Violation>, path: impl Into<String>, message: impl Into<String>) {
    v.push(Violation {
        path: path.into(),
        message: message.into(),
        line: None,
    });
}

fn select(raw: &RawConfig, v: &mut Vec<Violation>) -> Option<(Provider, Variant)> {
    let providers = raw.provider.set_providers();
    let variants = raw.attestation.set_variants();
    let provider = match providers.as_slice() {
        [p] => Some(*p),
        [] => {
            push(
                v,
                "provider",
                "no provider section; set exactly one of local, qemu, aws, azure, gcp, openstack",
            );
            None
        }
        many => {
            let names: Vec<_> = many.iter().map(|p| p.as_str()).collect();
            push(
                v,
                "provider",
                format!(
                    "{} provider sections ({}); keep exactly one",
                    many.len(),
                    names.join(", ")
                ),
            );
            None
        }
    };
    let variant = match variants.as_slice() {
        [a] => Some(*a),
        [] => {
            push(v, "attestation", "no attestation section; set exactly one");
            None
        }
        many => {
            let names: Vec<_> = many.iter().map(|a| a.config_key()).collect();
            push(
                v,
                "attestation",
                format!(
                    "{} attestation sections ({}); keep exactly one",
                    many.len(),
                    names.join(", ")
                ),
            );
            None
        }
    };
    let (p, a) = (provider?, variant?);
    if !p.accepts(a) {
        let allowed: Vec<_> = p
            .selectable_variants()
            .iter()
            .map(|x| x.config_key())
            .collect();
        push(
            v,
            format!("attestation.{}", a.config_key()),
            format!(
                "attestation variant {a} is not available on provider {p} (use {})",
                allowed.join(" or ")
            ),
        );
        return None;
    }
    Some((p, a))
}

fn check_measurements(variant: Variant, m: &Measurements, v: &mut Vec<Violation>) {
    let path = format!("attestation.{}.measurements", variant.config_key());
    if m.is_empty() {
        push(
            v,
            path,
            "no measurements: an empty map would accept any node",
        );
        return;
    }
    if let Err(e) = m.check_no_placeholders() {
        push(v, path.clone(), e.to_string());
    }
    let want = if variant == Variant::QemuTdx {
        PCR_LEN_SHA384
    } else {
        PCR_LEN_SHA256
    };
    if let Some((idx, first)) = m.iter().next() {
        if first.expected.len() != want {
            push(
                v,
                format!("{path}.{idx}"),
                format!(
                    "{}-byte value, but {variant} measures {want}-byte values",
                    first.expected.len()
                ),
            );
        }
    }
}

fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_cidr_v4(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else {
        return false;
    };
    addr.parse::<Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

fn valid_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn required(v: &mut Vec<Violation>, path: &str, value: &str) {
    if value.trim().is_empty() {
        push(v, path, "required; fill it in");
    }
}

fn pem_cert(v: &mut Vec<Violation>, path: &str, value: &str) {
    if !value.is_empty() && !value.contains("-----BEGIN CERTIFICATE-----") {
        push(
            v,
            path,
            "not a PEM certificate (-----BEGIN CERTIFICATE-----); leave empty for the built-in one",
        );
    }
}

fn validate(raw: &RawConfig, sel: Option<(Provider, Variant)>, v: &mut Vec<Violation>) {
    if raw.version != CONFIG_VERSION {
        push(
            v,
            "version",
            format!("config version {:?} is not supported; this release reads {CONFIG_VERSION} (the Go CLI's `config migrate` converts older files)", raw.version),
        );
    }
    required(v, "image", &raw.image);
    let provider = sel.map(|s| s.0);
    let name_ok = !raw.name.is_empty()
        && raw.name.len() <= 37
        && raw
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !raw.name.starts_with('-');
    if !name_ok {
        push(
            v,
            "name",
            format!("{:?}: use 1 to 37 letters, digits and '-'", raw.name),
        );
    } else if provider == Some(Provider::Aws)
        && (raw.name.len() > 10 || raw.name.bytes().any(|b| b.is_ascii_uppercase()))
    {
        push(
            v,
            "name",
            format!("{:?}: on AWS at most 10 lowercase characters", raw.name),
        );
    }
    if !kubernetes_minor_supported(&raw.kubernetes_version) {
        push(
            v,
            "kubernetesVersion",
            format!(
                "{:?} is not supported (supported: {})",
                raw.kubernetes_version,
                SUPPORTED_KUBERNETES_VERSIONS.join(", ")
            ),
        );
    }
    if !raw.microservice_version.starts_with('v') {
        push(
            v,
            "microserviceVersion",
            format!("{:?} is not a version (vX.Y.Z)", raw.microservice_version),
        );
    }
    if !raw.custom_endpoint.is_empty() && !valid_hostname(&raw.custom_endpoint) {
        push(
            v,
            "customEndpoint",
            format!("{:?} is not a DNS name (RFC 1123)", raw.custom_endpoint),
        );
    }
    if raw.internal_load_balancer && !matches!(provider, Some(Provider::Aws | Provider::Gcp)) {
        push(v, "internalLoadBalancer", "only available on AWS and GCP");
    }
    if !raw.service_cidr.is_empty() && !valid_cidr_v4(&raw.service_cidr) {
        push(
            v,
            "serviceCIDR",
            format!("{:?} is not an IPv4 CIDR", raw.service_cidr),
        );
    }

    // Provider sections.
    let p = &raw.provider;
    if let Some(c) = &p.aws {
        required(v, "provider.aws.region", &c.region);
        required(v, "provider.aws.zone", &c.zone);
        required(
            v,
            "provider.aws.iamProfileControlPlane",
            &c.iam_profile_control_plane,
        );
        required(
            v,
            "provider.aws.iamProfileWorkerNodes",
            &c.iam_profile_worker_nodes,
        );
        if !c.zone.is_empty() && !c.region.is_empty() && !c.zone.starts_with(&c.region) {
            push(
                v,
                "provider.aws.zone",
                format!("zone {:?} is not in region {:?}", c.zone, c.region),
            );
        }
    }
    if let Some(c) = &p.azure {
        for (path, val) in [
            ("provider.azure.subscription", &c.subscription),
            ("provider.azure.tenant", &c.tenant),
        ] {
            if !valid_uuid(val) {
                push(v, path, format!("{val:?} is not a UUID"));
            }
        }
        required(v, "provider.azure.location", &c.location);
        required(v, "provider.azure.resourceGroup", &c.resource_group);
        required(
            v,
            "provider.azure.userAssignedIdentity",
            &c.user_assigned_identity,
        );
        if c.app_client_id.is_some() {
            push(v, "provider.azure.appClientID", "app registrations are unsupported since v2.9; remove appClientID and use a user-assigned identity");
        }
    }
    if let Some(c) = &p.gcp {
        required(v, "provider.gcp.project", &c.project);
        required(v, "provider.gcp.region", &c.region);
        required(v, "provider.gcp.zone", &c.zone);
        required(
            v,
            "provider.gcp.serviceAccountKeyPath",
            &c.service_account_key_path,
        );
    }
    if let Some(c) = &p.openstack {
        required(
            v,
            "provider.openstack.availabilityZone",
            &c.availability_zone,
        );
        required(
            v,
            "provider.openstack.floatingIPPoolID",
            &c.floating_ip_pool_id,
        );
        required(v, "provider.openstack.regionName", &c.region_name);
    }
    if let Some(c) = &p.qemu {
        if c.vcpus == 0 {
            push(v, "provider.qemu.vcpus", "must be at least 1");
        }
        if c.memory == 0 {
            push(v, "provider.qemu.memory", "must be at least 1 MiB");
        }
        required(v, "provider.qemu.metadataAPIServer", &c.metadata_api_server);
        required(v, "provider.qemu.nvram", &c.nvram);
    }
    if let Some(c) = &p.local {
        let a = c.base_address;
        let total: u32 = raw.node_groups.values().map(|g| g.initial_count).sum();
        if !a.is_loopback() {
            push(
                v,
                "provider.local.baseAddress",
                format!("{a} is not a loopback address (127.0.0.0/8)"),
            );
        } else if a.octets()[3] == 0 || u32::from(a) == u32::from(Ipv4Addr::new(127, 255, 255, 255))
        {
            push(
                v,
                "provider.local.baseAddress",
                format!(
                    "{a} is a network or broadcast address; use e.g. {DEFAULT_LOCAL_BASE_ADDRESS}"
                ),
            );
        } else if u32::from(a).saturating_add(total) > u32::from(Ipv4Addr::new(127, 255, 255, 254))
        {
            push(
                v,
                "provider.local.baseAddress",
                format!("{a} leaves no room for {total} nodes in 127.0.0.0/8"),
            );
        }
    }

    // Node groups.
    let groups = &raw.node_groups;
    match groups.get(CONTROL_PLANE_GROUP) {
        None => push(
            v,
            "nodeGroups",
            format!("group {CONTROL_PLANE_GROUP} is required"),
        ),
        Some(g) => {
            if g.role != NodeRole::ControlPlane {
                push(
                    v,
                    format!("nodeGroups.{CONTROL_PLANE_GROUP}.role"),
                    "must be control-plane",
                );
            }
            if g.initial_count == 0 {
                push(
                    v,
                    format!("nodeGroups.{CONTROL_PLANE_GROUP}.initialCount"),
                    "must be at least 1",
                );
            }
        }
    }
    match groups.get(WORKER_GROUP) {
        None => push(v, "nodeGroups", format!("group {WORKER_GROUP} is required")),
        Some(g) if g.role != NodeRole::Worker => push(
            v,
            format!("nodeGroups.{WORKER_GROUP}.role"),
            "must be worker",
        ),
        Some(_) => {}
    }
    for name in groups.keys() {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            push(
                v,
                format!("nodeGroups.{name}"),
                "group names use lowercase letters, digits, '_' and '-'",
            );
        }
    }

    // Attestation.
    if let Some((_, variant)) = sel {
        if let Some(m) = raw.attestation.measurements(variant) {
            check_measurements(variant, m, v);
        }
    }
    let a = &raw.attestation;
    for (key, s) in [("awsSEVSNP", &a.aws_sev_snp), ("gcpSEVSNP", &a.gcp_sev_snp)] {
        if let Some(s) = s {
            pem_cert(v, &format!("attestation.{key}.amdRootKey"), &s.amd_root_key);
            pem_cert(
                v,
                &format!("attestation.{key}.amdSigningKey"),
                &s.amd_signing_key,
            );
        }
    }
    if let Some(s) = &a.azure_sev_snp {
        pem_cert(v, "attestation.azureSEVSNP.amdRootKey", &s.amd_root_key);
        pem_cert(
            v,
            "attestation.azureSEVSNP.amdSigningKey",
            &s.amd_signing_key,
        );
        if !s.firmware_signer_config.maa_url.is_empty() {
            push(
                v,
                "attestation.azureSEVSNP.firmwareSignerConfig.maaURL",
                "must be empty in the config; it is taken from the cluster's state",
            );
        }
    }
    if let Some(s) = &a.azure_tdx {
        pem_cert(v, "attestation.azureTDX.intelRootKey", &s.intel_root_key);
    }
}

/// Best-effort line (1-based) of the block-style key `path` (dotted) in `yaml`.
fn locate_key(yaml: &str, path: &str) -> Option<usize> {
    let want: Vec<&str> = path.split('.').collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, line) in yaml.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches('"').trim_matches('\'').to_string();
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        if stack.len() == want.len() && stack.iter().zip(&want).all(|((_, k), w)| k == w) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests;
