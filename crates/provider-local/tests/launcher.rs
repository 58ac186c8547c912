#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Run what was measured: the launcher measures exactly the bytes it writes to the node's run
//! folder, and what runs is that copy, so changing the image after the measurement changes
//! nothing that runs (a real swtpm; the components are small stand-in files).

use std::os::unix::fs::PermissionsExt;

use attestation::Variant;
use provider_local::image::{NodeImage, Sources, ETCD_BINARY, NODE_BINARY};
use provider_local::launcher::{measure, LaunchArgs};
use provider_local::pcr::PCR_IMAGE;
use tpm::{Swtpm, SwtpmConfig, Tpm};

#[test]
fn measured_copies_are_what_runs() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("node"), b"#!/bin/sh\necho node program\n").unwrap();
    std::fs::write(t.path().join("etcd"), b"etcd program").unwrap();
    let sources = Sources {
        node_binary: t.path().join("node"),
        etcd_binary: t.path().join("etcd"),
        kube: None,
        version: "v0.1.0".into(),
    };
    let image = NodeImage::build(&sources, &t.path().join("images")).unwrap();
    let swtpm = Swtpm::spawn_owned(&SwtpmConfig::new(t.path().join("tpm"))).unwrap();
    let run_dir = t.path().join("node-folder/boot");
    let args = LaunchArgs {
        image: image.dir.clone(),
        tcti: swtpm.tcti(),
        variant: Variant::LocalVtpm,
        run_dir: run_dir.clone(),
        boot_args: vec![],
    };
    let boot = measure(&args).unwrap();

    // What runs is the copy in the node's folder, never the image's file.
    assert_eq!(boot, run_dir.join(NODE_BINARY));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run_dir), 0o700);
    for name in [NODE_BINARY, ETCD_BINARY] {
        let copy = run_dir.join(name);
        assert_eq!(mode(&copy), 0o500, "{name}");
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read(image.component_path(name).unwrap()).unwrap()
        );
    }
    // The TPM holds the prediction for this image: the copies are the measured bytes.
    let expected = image.expected_measurements(Variant::LocalVtpm);
    let pcrs = Tpm::open(&swtpm.tcti())
        .unwrap()
        .read_pcrs_sha256()
        .unwrap();
    let want11 = &expected
        .iter()
        .find(|(i, _)| *i == PCR_IMAGE)
        .unwrap()
        .1
        .expected;
    assert_eq!(&pcrs[&PCR_IMAGE].to_vec(), want11);

    // Swapping the image's etcd after the measurement changes nothing that runs.
    let etcd = image.component_path(ETCD_BINARY).unwrap();
    std::fs::set_permissions(&etcd, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&etcd, b"a swapped etcd").unwrap();
    assert_eq!(
        std::fs::read(run_dir.join(ETCD_BINARY)).unwrap(),
        b"etcd program"
    );
    drop(swtpm);
}

#[test]
fn a_component_name_must_be_a_plain_file_name() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("img");
    std::fs::create_dir_all(img.join("bin")).unwrap();
    std::fs::write(img.join("bin/x"), b"x").unwrap();
    std::fs::write(
        img.join("manifest.json"),
        br#"{"version":"v","components":[{"name":"../x","path":"bin/x","sha256":"00","boot":true}]}"#,
    )
    .unwrap();
    let swtpm = Swtpm::spawn_owned(&SwtpmConfig::new(t.path().join("tpm"))).unwrap();
    let e = measure(&LaunchArgs {
        image: img,
        tcti: swtpm.tcti(),
        variant: Variant::LocalVtpm,
        run_dir: t.path().join("run"),
        boot_args: vec![],
    })
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("is not a plain file name"),
        "{e:#}"
    );
}
