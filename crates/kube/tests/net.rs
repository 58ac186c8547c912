//! The node network: real namespaces, veths, a bridge and routes; the host is left as found.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use std::path::Path;

use kube_node::net::{ClusterNet, NetError, DEFAULT_RUN_ROOT};

fn run_ok(mut c: std::process::Command) -> String {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn names_are_checked_before_anything_is_created() {
    let err = ClusterNet::create(Path::new("/nonexistent-root"), "Bad_Name", 1).unwrap_err();
    assert!(
        matches!(err, NetError::BadClusterName(ref n) if n == "Bad_Name"),
        "{err}"
    );
    assert!(!Path::new("/nonexistent-root").exists());
}

#[test]
fn three_nodes_route_to_each_other_and_teardown_leaves_the_host_as_found() {
    if let Some(why) = common::missing_root_or_tools(&["ip", "unshare", "nsenter", "busybox"]) {
        return common::skip(&why);
    }
    let name = common::cluster_name("net");
    common::guarded(&name, || {
        let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        let mut net = ClusterNet::create(Path::new(DEFAULT_RUN_ROOT), &name, 7).unwrap();
        let n1 = net.add_node("n1").unwrap();
        let n2 = net.add_node("n2").unwrap();
        let n3 = net.add_node("n3").unwrap();
        assert_eq!(n2.address().to_string(), "198.18.7.2");
        assert_eq!(n3.pod_cidr().to_string(), "10.244.3.0/24");
        assert!(matches!(
            net.add_node("n2"),
            Err(NetError::DuplicateNode(_))
        ));

        // the node's address is on eth0 inside its namespace, not on the host
        let addrs = run_ok({
            let mut c = n1.net_command("ip");
            c.args(["-4", "-o", "addr", "show", "dev", "eth0"]);
            c
        });
        assert!(addrs.contains("198.18.7.1/24"), "{addrs}");
        let host_addrs = run_ok({
            let mut c = std::process::Command::new("ip");
            c.args(["-4", "-o", "addr"]);
            c
        });
        assert!(!host_addrs.contains("198.18.7."), "{host_addrs}");

        // ip_forward on in the node, unchanged on the host
        let fwd = run_ok({
            let mut c = n1.net_command("cat");
            c.arg("/proc/sys/net/ipv4/ip_forward");
            c
        });
        assert_eq!(fwd.trim(), "1");
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            host_forward
        );

        // routes to every other node's pod CIDR
        let routes = run_ok({
            let mut c = n1.net_command("ip");
            c.args(["route"]);
            c
        });
        assert!(routes.contains("10.244.2.0/24 via 198.18.7.2"), "{routes}");
        assert!(routes.contains("10.244.3.0/24 via 198.18.7.3"), "{routes}");
        assert!(routes.contains("default via 198.18.7.254"), "{routes}");

        // node to node and node to gateway over the bridge
        for target in ["198.18.7.2", "198.18.7.3", "198.18.7.254"] {
            run_ok({
                let mut c = n1.net_command("busybox");
                // busybox-static is installed; iputils-ping may not be (bare Debian 12).
                c.args(["ping", "-c", "1", "-W", "5", target]);
                c
            });
        }
        // a "pod" address of node 3 (on its lo) is reached from node 1 through the pod route
        run_ok({
            let mut c = n3.net_command("ip");
            c.args(["addr", "add", "10.244.3.7/32", "dev", "lo"]);
            c
        });
        run_ok({
            let mut c = n1.net_command("busybox");
            // busybox-static is installed; iputils-ping may not be (bare Debian 12).
            c.args(["ping", "-c", "1", "-W", "5", "10.244.3.7"]);
            c
        });

        // the mount namespace has a private /run
        let run = run_ok({
            let mut c = n1.command("sh");
            c.args(["-c", "touch /run/only-in-n1 && ls /run"]);
            c
        });
        assert!(run.lines().any(|l| l == "only-in-n1"), "{run}");
        let varlib = run_ok({
            let mut c = n1.command("ls");
            c.args(["-A", "/var/lib", "/var/log"]);
            c
        });
        assert_eq!(varlib.trim(), "/var/lib:\n\n/var/log:", "{varlib}");
        assert!(!Path::new("/run/only-in-n1").exists());

        // a process left in a node namespace is killed by teardown
        let mut stray = n2.command("sleep");
        stray.arg("1000");
        let mut child = stray.spawn().unwrap();

        net.remove_node("n3").unwrap();
        let routes = run_ok({
            let mut c = n1.net_command("ip");
            c.args(["route"]);
            c
        });
        assert!(!routes.contains("10.244.3.0/24"), "{routes}");

        net.teardown().unwrap();
        net.teardown().unwrap(); // idempotent
        assert!(
            !child.wait().unwrap().success(),
            "the stray process was killed"
        );
        assert!(!net.dir().exists());
    });
}

#[test]
fn a_failing_test_still_leaves_the_host_as_found() {
    if let Some(why) = common::missing_root_or_tools(&["ip", "unshare", "nsenter"]) {
        return common::skip(&why);
    }
    let name = common::cluster_name("panic");
    let _serial = common::serial();
    let before = common::HostSnapshot::take(&name);
    let during = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut net = ClusterNet::create(Path::new(DEFAULT_RUN_ROOT), &name, 8).unwrap();
        net.add_node("n1").unwrap();
        net.add_node("n2").unwrap();
        *during.lock().unwrap() = Some(common::HostSnapshot::take(&name));
        panic!("deliberate failure with a live cluster network");
    }));
    assert!(r.is_err());
    // the snapshot sees a live cluster (pins, mounts, run folder) ...
    let during = during
        .lock()
        .unwrap()
        .take()
        .expect("snapshot taken before the panic");
    assert_ne!(
        during, before,
        "the host snapshot must notice a live cluster"
    );
    // ... and nothing of it after the panic unwound through the drop
    assert_eq!(common::HostSnapshot::take(&name), before);
}

#[test]
fn a_detached_network_is_opened_and_torn_down_by_another_owner() {
    if let Some(why) = common::missing_root_or_tools(&["ip", "unshare", "nsenter", "busybox"]) {
        return common::skip(&why);
    }
    let name = common::cluster_name("detach");
    common::guarded(&name, || {
        let tmp = tempfile::tempdir().unwrap();
        let record = tmp.path().join("sysctls");
        let key = "fs.inotify.max_user_instances";
        let old = kube_node::host::read_sysctl(key).unwrap();
        let mut stray;
        {
            let mut net = ClusterNet::create(Path::new(DEFAULT_RUN_ROOT), &name, 11).unwrap();
            let n1 = net.add_node("n1").unwrap();
            net.add_node("n2").unwrap();
            stray = n1.command("sleep");
            stray.arg("1000");
            net.detach(); // e.g. `up` ends here

            let mut s = kube_node::host::HostSysctls::new();
            let want = old.parse::<u64>().unwrap() + 1;
            s.ensure(key, kube_node::host::Need::AtLeast(want)).unwrap();
            assert_eq!(kube_node::host::read_sysctl(key).unwrap(), want.to_string());
            s.save(&record).unwrap();
            s.detach();
        }
        let mut child = stray.spawn().unwrap();
        // still there after the owner went away
        assert!(Path::new(DEFAULT_RUN_ROOT)
            .join(&name)
            .join("n1.net")
            .exists());
        assert_ne!(kube_node::host::read_sysctl(key).unwrap(), old);

        // another owner (e.g. `terminate`) opens, checks, extends and tears down
        let mut net = ClusterNet::open(Path::new(DEFAULT_RUN_ROOT), &name).unwrap();
        let names: Vec<&str> = net.nodes().iter().map(|n| n.name()).collect();
        assert_eq!(names, ["n1", "n2"]);
        assert_eq!(net.node("n2").unwrap().address().to_string(), "198.18.11.2");
        let n3 = net.add_node("n3").unwrap();
        assert_eq!(n3.index(), 3);
        run_ok({
            let mut c = n3.net_command("busybox");
            // busybox-static is installed; iputils-ping may not be (bare Debian 12).
            c.args(["ping", "-c", "1", "-W", "5", "198.18.11.1"]);
            c
        });
        net.teardown().unwrap();
        assert!(
            !child.wait().unwrap().success(),
            "the process in n1 was killed"
        );
        assert!(matches!(
            ClusterNet::open(Path::new(DEFAULT_RUN_ROOT), &name),
            Err(NetError::NoCluster(_))
        ));
        let mut s = kube_node::host::HostSysctls::load(&record).unwrap();
        s.restore().unwrap();
        assert_eq!(kube_node::host::read_sysctl(key).unwrap(), old);
    });
}
