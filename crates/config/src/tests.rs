use super::*;
use attestation::Variant;

/// The Go layout of reference §2.2 (config.Default() + `config generate qemu`, tag v2.24.0),
/// with the elided values filled in.
pub(crate) const GO_QEMU: &str = include_str!("../testdata/go-qemu-v2.24.0.yaml");

#[test]
fn go_qemu_config_loads() {
    let c = Config::from_yaml(GO_QEMU).unwrap();
    assert_eq!(c.provider(), Provider::Qemu);
    assert_eq!(c.variant(), Variant::QemuVtpm);
    assert_eq!(c.initial_count(NodeRole::ControlPlane), 3);
    assert_eq!(c.measurements().len(), 7);
    // Our defaults for qemu are the same values.
    assert_eq!(
        c.measurements(),
        &default_measurements(Provider::Qemu, Variant::QemuVtpm)
    );
    // Re-emitted (with comments) it loads to the same value.
    assert_eq!(Config::from_yaml(&c.to_yaml()).unwrap(), c);
}

fn all_combinations() -> Vec<(Provider, Variant)> {
    let mut out = Vec::new();
    for p in Provider::ALL {
        for v in p.selectable_variants() {
            out.push((p, *v));
        }
    }
    out
}

/// The config `config generate <provider>` writes (default variant, Kubernetes and tags).
fn generated(provider: Provider) -> RawConfig {
    Config::generate(provider, None, None, BTreeMap::new(), None).unwrap()
}

#[test]
fn generated_configs_roundtrip() {
    for (p, v) in all_combinations() {
        let mut tags = BTreeMap::new();
        tags.insert("team".to_string(), "a: b # c".to_string());
        let raw = Config::generate(p, Some(v), Some("v1.30"), tags, None).unwrap();
        let yaml = raw.to_yaml();
        let back = RawConfig::from_yaml(&yaml).unwrap_or_else(|e| panic!("{p}/{v}: {e}\n{yaml}"));
        assert_eq!(back, raw, "{p}/{v}");
        assert_eq!(back.kubernetes_version, "v1.30.14");
        assert_eq!(raw.selected().unwrap(), (p, v));
        // Every key line is preceded by a comment line or is a measurement entry.
        assert!(yaml.contains("\n# Schema version of this file.\nversion: v4\n"));
        match (p, Config::try_from(raw)) {
            (Provider::Local | Provider::Qemu | Provider::OpenStack, _)
                if v == Variant::AzureTrustedLaunch => {}
            (Provider::Local | Provider::Qemu, Ok(c)) => assert_eq!(c.variant(), v),
            (_, Ok(_)) => panic!("{p}/{v}: cloud config valid without account fields"),
            (_, Err(ConfigError::Invalid(vs))) => {
                for viol in &vs.0 {
                    let expected_gap = viol.message.contains("required")
                        || viol.message.contains("UUID")
                        || (v == Variant::AzureTrustedLaunch
                            && viol.message.contains("placeholder"));
                    assert!(expected_gap, "{p}/{v}: unexpected {viol}");
                }
            }
            (_, Err(e)) => panic!("{p}/{v}: {e}"),
        }
    }
}

#[test]
fn local_defaults() {
    let raw = generated(Provider::Local);
    let c = Config::try_from(raw).unwrap();
    assert_eq!(c.variant(), Variant::LocalVtpm);
    assert_eq!(c.kubernetes_version(), DEFAULT_KUBERNETES_VERSION);
    assert_eq!(c.local().unwrap().base_address, DEFAULT_LOCAL_BASE_ADDRESS);
    assert_eq!(c.initial_count(NodeRole::ControlPlane), 1);
    assert_eq!(c.initial_count(NodeRole::Worker), 1);
    let idx: Vec<u32> = c.measurements().iter().map(|(i, _)| i).collect();
    assert_eq!(idx, vec![4, 8, 9, 11, 12, 13, 15]);
    assert!(c.measurements().iter().all(|(_, m)| !m.warn_only));
    let yaml = c.to_yaml();
    assert!(yaml.contains("  local:\n"), "{yaml}");
    assert!(yaml.contains("  localVTPM:\n"), "{yaml}");
}

#[test]
fn go_default_measurements_table() {
    let m = default_measurements(Provider::Aws, Variant::AwsSevSnp);
    let idx: Vec<u32> = m.iter().map(|(i, _)| i).collect();
    assert_eq!(idx, vec![0, 2, 3, 4, 6, 8, 9, 11, 12, 13, 14, 15]);
    // The Go system's warn-only PCRs per provider (overrides.go), everything else enforced.
    let warn = |p, v| -> Vec<u32> {
        default_measurements(p, v)
            .iter()
            .filter(|(_, m)| m.warn_only)
            .map(|(i, _)| i)
            .collect()
    };
    assert_eq!(warn(Provider::Aws, Variant::AwsSevSnp), [0, 2, 3, 6, 14]);
    assert_eq!(warn(Provider::Aws, Variant::AwsNitroTpm), [0, 2, 3, 6, 14]);
    assert_eq!(warn(Provider::Azure, Variant::AzureSevSnp), [1, 2, 3, 14]);
    assert_eq!(warn(Provider::Gcp, Variant::GcpSevSnp), [1, 2, 3, 6, 14]);
    assert_eq!(warn(Provider::OpenStack, Variant::QemuVtpm), [14]);
    assert!(warn(Provider::Qemu, Variant::QemuVtpm).is_empty());
    assert_eq!(
        hex::encode(&m.get(0).unwrap().expected),
        "d6df855358f5b10f06f0fab3f408ad26cd165a2949bad69e2cc75692529e662a"
    );
    assert_eq!(
        hex::encode(&m.get(2).unwrap().expected),
        "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
    );
    assert_eq!(
        hex::encode(&m.get(4).unwrap().expected),
        "26af34bd97da78339c046ddf656ff20303b6e53d902d39f7d817295a3f272312"
    );
    let q = default_measurements(Provider::Qemu, Variant::QemuVtpm);
    assert!(q.get(14).is_none());
    for (p, v) in all_combinations() {
        let m = default_measurements(p, v);
        assert!(m.len() >= 7, "{p}/{v}");
        let has_placeholder = m.check_no_placeholders().is_err();
        assert_eq!(has_placeholder, v == Variant::AzureTrustedLaunch, "{p}/{v}");
    }
    let mut digest = [0u8; 48];
    hex::decode_to_slice(AZURE_DEFAULT_ACCEPTED_KEY_DIGEST, &mut digest).unwrap();
}

#[test]
fn generate_rejects_bad_choices() {
    let e = Config::generate(
        Provider::Local,
        Some(Variant::QemuVtpm),
        None,
        BTreeMap::new(),
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("not available on provider local"),
        "{e}"
    );
    let e =
        Config::generate(Provider::Aws, None, Some("v1.29"), BTreeMap::new(), None).unwrap_err();
    assert!(e.to_string().contains("\"v1.29\" is not supported"), "{e}");
}

fn local_yaml() -> String {
    generated(Provider::Local).to_yaml()
}

fn line_of(yaml: &str, needle: &str) -> usize {
    yaml.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// Parse errors: kind, key path, and the line where the parser knows it.
#[test]
fn parse_errors_name_key_and_line() {
    let base = local_yaml();
    let z = "0".repeat(64);
    let cases: Vec<(String, ParseErrorKind, &str, Option<&str>)> = vec![
        (
            base.replace("    baseAddress:", "    foo: 1\n    baseAddress:"),
            ParseErrorKind::UnknownKey,
            "provider.local.foo",
            Some("    foo: 1"),
        ),
        (
            base.replace("debugCluster: false", "debugCluster: 3"),
            ParseErrorKind::BadValue,
            "debugCluster",
            Some("debugCluster: 3"),
        ),
        (
            base.replace("debugCluster: false\n", ""),
            ParseErrorKind::MissingKey,
            "debugCluster",
            None,
        ),
        (
            base.replacen(&format!("expected: \"{z}\""), "expected: \"zz\"", 1),
            ParseErrorKind::BadValue,
            "attestation.localVTPM.measurements",
            None,
        ),
        (
            base.replacen(&format!("expected: \"{z}\""), "expected: \"0000\"", 1),
            ParseErrorKind::BadValue,
            "attestation.localVTPM.measurements",
            None,
        ),
        (
            base.replace("baseAddress: \"127.20.0.1\"", "baseAddress: \"localhost\""),
            ParseErrorKind::BadValue,
            "provider.local.baseAddress",
            Some("baseAddress: \"localhost\""),
        ),
        (
            base.replace("role: worker", "role: boss"),
            ParseErrorKind::BadValue,
            "nodeGroups.worker_default.role",
            Some("role: boss"),
        ),
        (
            base.replace("initialCount: 1\n", "initialCount: -1\n"),
            ParseErrorKind::BadValue,
            "nodeGroups.control_plane_default.initialCount",
            None,
        ),
        (
            "version: \"unterminated\n".to_string(),
            ParseErrorKind::Syntax,
            "",
            None,
        ),
        ("- 1\n".to_string(), ParseErrorKind::Syntax, "", None),
    ];
    for (yaml, kind, path, line_needle) in cases {
        let e = match RawConfig::from_yaml(&yaml) {
            Err(ConfigError::Parse(p)) => p,
            other => panic!("{path}: expected parse error, got {other:?}"),
        };
        assert_eq!((e.kind, e.path.as_str()), (kind, path), "{e}");
        if let Some(n) = line_needle {
            assert_eq!(e.line, Some(line_of(&yaml, n)), "{e}");
        }
        let shown = e.to_string();
        println!("{shown}");
        if !path.is_empty() {
            assert!(shown.contains(&format!("`{path}`")), "{shown}");
        }
        assert!(!shown.contains(" at line 0"), "{shown}");
    }
}

#[test]
fn unknown_key_message() {
    let yaml = local_yaml().replace("    baseAddress:", "    foo: 1\n    baseAddress:");
    let e = Config::from_yaml(&yaml).unwrap_err().to_string();
    let line = line_of(&yaml, "    foo: 1");
    assert!(
        e.starts_with(&format!(
            "unknown key `provider.local.foo` at line {line}, column 5"
        )),
        "{e}"
    );
    assert!(e.contains("nodeImage"), "{e}");
}

/// Rule violations after parsing: path, message, line.
#[test]
fn violations() {
    let base = local_yaml();
    let z = "0".repeat(64);
    let ph = "1234".repeat(16);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            base.replace("version: v4", "version: v3"),
            "version",
            "not supported",
        ),
        (
            base.replace("name: constell", "name: \"has space\""),
            "name",
            "letters",
        ),
        (
            base.replace("kubernetesVersion: v1.31.13", "kubernetesVersion: v1.28.1"),
            "kubernetesVersion",
            "not supported",
        ),
        (
            base.replace("\"127.20.0.1\"", "\"10.0.0.1\""),
            "provider.local.baseAddress",
            "not a loopback",
        ),
        (
            base.replace("\"127.20.0.1\"", "\"127.0.0.0\""),
            "provider.local.baseAddress",
            "network or broadcast",
        ),
        (
            base.replace("role: control-plane", "role: worker"),
            "nodeGroups.control_plane_default.role",
            "control-plane",
        ),
        (
            base.replacen("initialCount: 1", "initialCount: 0", 1),
            "nodeGroups.control_plane_default.initialCount",
            "at least 1",
        ),
        (
            base.replacen(&z, &ph, 1),
            "attestation.localVTPM.measurements",
            "placeholder",
        ),
        (
            base.replace("internalLoadBalancer: false", "internalLoadBalancer: true"),
            "internalLoadBalancer",
            "AWS and GCP",
        ),
        (
            base.replace(
                "serviceCIDR: \"10.96.0.0/12\"",
                "serviceCIDR: \"10.96.0.0\"",
            ),
            "serviceCIDR",
            "CIDR",
        ),
        (
            base.replace("customEndpoint: \"\"", "customEndpoint: \"-bad-\""),
            "customEndpoint",
            "DNS name",
        ),
    ];
    for (yaml, path, want) in cases {
        let e = Config::from_yaml(&yaml).unwrap_err();
        let ConfigError::Invalid(vs) = &e else {
            panic!("{path}: expected violations, got {e}");
        };
        let v =
            vs.0.iter()
                .find(|v| v.path == path)
                .unwrap_or_else(|| panic!("{path}: not among {e}"));
        assert!(v.message.contains(want), "{path}: {}", v.message);
        let leaf = path.rsplit('.').next().unwrap();
        let line = v.line.unwrap_or_else(|| panic!("{path}: no line"));
        assert!(
            yaml.lines()
                .nth(line - 1)
                .unwrap()
                .trim_start()
                .starts_with(leaf),
            "{path}: line {line}"
        );
    }
}

#[test]
fn structural_violations() {
    let local = generated(Provider::Local);
    let qemu = generated(Provider::Qemu);

    let mut two = local.clone();
    two.provider.qemu = qemu.provider.qemu.clone();
    let e = Config::try_from(two).unwrap_err().to_string();
    assert!(e.contains("2 provider sections (qemu, local)"), "{e}");

    let mut wrong = local.clone();
    wrong.attestation = qemu.attestation.clone();
    let e = Config::try_from(wrong).unwrap_err().to_string();
    assert!(
        e.contains("qemu-vtpm is not available on provider local"),
        "{e}"
    );

    let mut none = local.clone();
    none.attestation = Default::default();
    let e = Config::try_from(none).unwrap_err().to_string();
    assert!(e.contains("no attestation section"), "{e}");

    let mut empty = local.clone();
    *empty.measurements_mut(Variant::LocalVtpm).unwrap() = Measurements::default();
    let e = Config::try_from(empty).unwrap_err().to_string();
    assert!(e.contains("empty map would accept any node"), "{e}");

    let mut no_worker = local;
    no_worker.node_groups.remove(WORKER_GROUP);
    let e = Config::try_from(no_worker).unwrap_err().to_string();
    assert!(e.contains("worker_default is required"), "{e}");
}

#[test]
fn set_measurements_keeps_validity() {
    let raw = generated(Provider::Local);
    let mut c = Config::try_from(raw).unwrap();
    assert!(c.set_measurements(Measurements::default()).is_err());
    let mut m = BTreeMap::new();
    m.insert(4, measurements::Measurement::enforced(vec![7; 32]));
    c.set_measurements(Measurements::new(m.clone()).unwrap())
        .unwrap();
    assert_eq!(c.measurements().len(), 1);
    m.insert(4, measurements::Measurement::enforced(vec![7; 48]));
    assert!(c.set_measurements(Measurements::new(m).unwrap()).is_err());
}

/// The SNP/TDX extras: `latest`, numbers, legacy forms, limits.
#[test]
fn attestation_extras() {
    let aws = generated(Provider::Aws).to_yaml();
    let y = aws.replace("bootloaderVersion: latest", "bootloaderVersion: 3");
    let r = RawConfig::from_yaml(&y).unwrap();
    assert_eq!(
        r.attestation.aws_sev_snp.unwrap().bootloader_version,
        raw::Tcb::Value(3)
    );
    let e =
        RawConfig::from_yaml(&aws.replace("bootloaderVersion: latest", "bootloaderVersion: 256"))
            .unwrap_err();
    assert!(
        e.to_string()
            .contains("attestation.awsSEVSNP.bootloaderVersion"),
        "{e}"
    );
    let e = RawConfig::from_yaml(
        &aws.replace("bootloaderVersion: latest", "bootloaderVersion: newest"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"latest\" or a number"), "{e}");

    let az = generated(Provider::Azure).to_yaml();
    let y = az.replace("enforcementPolicy: MAAFallback", "enforcementPolicy: true");
    let r = RawConfig::from_yaml(&y).unwrap();
    let fsc = r.attestation.azure_sev_snp.unwrap().firmware_signer_config;
    assert_eq!(fsc.enforcement_policy, raw::EnforcementPolicy::Equal);
    // Case-insensitive, as in Go (whose CLI writes MAAFallback).
    for (text, want) in [
        ("MAAFallback", raw::EnforcementPolicy::MaaFallback),
        ("maaFallback", raw::EnforcementPolicy::MaaFallback),
        ("EQUAL", raw::EnforcementPolicy::Equal),
        ("warnonly", raw::EnforcementPolicy::WarnOnly),
    ] {
        let y = az.replace(
            "enforcementPolicy: MAAFallback",
            &format!("enforcementPolicy: {text}"),
        );
        let r = RawConfig::from_yaml(&y).unwrap();
        let fsc = r.attestation.azure_sev_snp.unwrap().firmware_signer_config;
        assert_eq!(fsc.enforcement_policy, want, "{text}");
    }
    let y = az.replace(
        "enforcementPolicy: MAAFallback",
        "enforcementPolicy: sometimes",
    );
    assert!(RawConfig::from_yaml(&y).is_err());
    // Measurement hex in upper case reads the same (and is written back lower case).
    let upper = az.replace(
        "9b9297441883ed7624486bb01872d0ca10ae3b6ebd6963b4ca21347e39cbd8b6",
        "9B9297441883ED7624486BB01872D0CA10AE3B6EBD6963B4CA21347E39CBD8B6",
    );
    assert_ne!(upper, az);
    assert_eq!(
        RawConfig::from_yaml(&upper).unwrap(),
        RawConfig::from_yaml(&az).unwrap()
    );
    let y = az.replace(
        &format!("acceptedKeyDigests:\n        - \"{AZURE_DEFAULT_ACCEPTED_KEY_DIGEST}\""),
        &format!("acceptedKeyDigests: \"{AZURE_DEFAULT_ACCEPTED_KEY_DIGEST}\""),
    );
    assert_ne!(y, az);
    let r = RawConfig::from_yaml(&y).unwrap();
    assert_eq!(
        r.attestation
            .azure_sev_snp
            .unwrap()
            .firmware_signer_config
            .accepted_key_digests
            .0
            .len(),
        1
    );
    let e =
        RawConfig::from_yaml(&az.replace(AZURE_DEFAULT_ACCEPTED_KEY_DIGEST, "abcd")).unwrap_err();
    assert!(e.to_string().contains("2 bytes, want 48"), "{e}");
    let y = az.replace("maaURL: \"\"", "maaURL: \"https://x\"");
    let e = RawConfig::from_yaml(&y).unwrap();
    let vs = Config::try_from(e).unwrap_err().to_string();
    assert!(vs.contains("maaURL"), "{vs}");

    let tdx = Config::generate(
        Provider::Azure,
        Some(Variant::AzureTdx),
        None,
        BTreeMap::new(),
        None,
    )
    .unwrap()
    .to_yaml();
    let y = tdx.replace("xfam: latest", "xfam: \"0000000000000001\"");
    let r = RawConfig::from_yaml(&y).unwrap();
    assert_eq!(
        r.attestation.azure_tdx.unwrap().xfam,
        raw::HexOrLatest::Value([0, 0, 0, 0, 0, 0, 0, 1])
    );
    let e = RawConfig::from_yaml(&tdx.replace("xfam: latest", "xfam: \"00\"")).unwrap_err();
    assert!(e.to_string().contains("attestation.azureTDX.xfam"), "{e}");
    let e = RawConfig::from_yaml(&az.replace(
        "subscription: \"\"",
        "appClientID: x\n    subscription: \"\"",
    ))
    .unwrap();
    let vs = Config::try_from(e).unwrap_err().to_string();
    assert!(vs.contains("unsupported since v2.9"), "{vs}");
}

#[test]
fn locate_keys() {
    let y = "a: 1\nb:\n  c:\n    d: 2\n  e: 3\nf: {x: 1}\n";
    let cases = [
        ("a", Some(1)),
        ("b.c.d", Some(4)),
        ("b.e", Some(5)),
        ("f", Some(6)),
        ("f.x", None),
        ("b.d", None),
    ];
    for (p, want) in cases {
        assert_eq!(locate_key(y, p), want, "{p}");
    }
}

#[test]
fn write_new_never_overwrites() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(CONFIG_FILE);
    let raw = generated(Provider::Local);
    raw.write_new(&p).unwrap();
    let before = std::fs::read(&p).unwrap();
    let other = generated(Provider::Qemu);
    assert!(matches!(
        other.write_new(&p),
        Err(ConfigError::Write(WriteError::AlreadyExists { .. }))
    ));
    assert_eq!(std::fs::read(&p).unwrap(), before);
    let c = Config::load(&p).unwrap();
    assert_eq!(c.raw(), &raw);
    let e = Config::load(&d.path().join("nope.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::NotFound { .. }));
}
