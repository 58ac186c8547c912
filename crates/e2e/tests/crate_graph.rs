//! The provider seam, kept by the crate graph (ARCHITECTURE.md, "The provider seam"): the node
//! daemon and the CLI logic name no provider, and the CLI logic does not reach into the node
//! daemon. Only the binaries (`cli`, `node`) and this test crate may depend on a provider.

#![allow(clippy::unwrap_used)]

use std::path::Path;

/// Our crates that `crate_dir`'s manifest depends on, in any section (normal, dev, build).
fn our_dependencies(crate_dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(root.join(crate_dir).join("Cargo.toml")).unwrap();
    let ours: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| {
            let m = std::fs::read_to_string(e.ok()?.path().join("Cargo.toml")).ok()?;
            let name = m.lines().find_map(|l| l.strip_prefix("name = "))?;
            Some(name.trim_matches('"').to_string())
        })
        .collect();
    manifest
        .lines()
        .filter_map(|l| {
            let key = l.split(['=', '.']).next()?.trim();
            ours.iter().any(|o| o == key).then(|| key.to_string())
        })
        .collect()
}

#[test]
fn only_the_binaries_name_a_provider() {
    for (krate, forbidden) in [
        ("bootstrapper", &["provider-local", "cloudcmd", "cli"][..]),
        (
            "cloudcmd",
            &["provider-local", "bootstrapper", "node", "cli"][..],
        ),
        (
            "joinservice",
            &[
                "provider-local",
                "bootstrapper",
                "cloudcmd",
                "cluster-store",
            ][..],
        ),
        (
            "cluster",
            &["provider-local", "bootstrapper", "cloudcmd", "joinservice"][..],
        ),
    ] {
        let deps = our_dependencies(krate);
        assert!(
            !deps.is_empty() || krate == "cluster",
            "{krate}: no dependencies found"
        );
        for f in forbidden {
            assert!(
                !deps.iter().any(|d| d == f),
                "{krate} depends on {f}: the provider seam (ARCHITECTURE.md) forbids it"
            );
        }
    }
    // The binaries are where providers are named.
    assert!(our_dependencies("cli")
        .iter()
        .any(|d| d == "provider-local"));
    assert!(our_dependencies("node")
        .iter()
        .any(|d| d == "provider-local"));
}
