//! Forwarding out of a node's network namespace: a process inside the node reaches a listener in
//! the host's namespace through `127.0.0.1:<port>` of the node; no thread of this process stays
//! in the node's namespace; after the forwarder is dropped nothing listens there any more and the
//! network tears down leaving the host as found.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use std::path::Path;

use kube_node::forward::{ForwardError, Forwarder};
use kube_node::host;
use kube_node::net::{ClusterNet, DEFAULT_RUN_ROOT};
use tokio::io::AsyncWriteExt;

/// Network namespace inodes of this process's threads.
fn thread_netns() -> Vec<u64> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| host::ns_inode(&t.path().join("ns/net")).ok())
        .collect()
}

#[test]
fn a_process_in_a_node_reaches_a_host_listener_through_the_forwarder() {
    if let Some(why) = common::missing_root_or_tools(&["ip", "unshare", "nsenter", "busybox"]) {
        return common::skip(&why);
    }
    let name = common::cluster_name("fw");
    common::guarded(&name, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut net = ClusterNet::create(Path::new(DEFAULT_RUN_ROOT), &name, 14).unwrap();
            let n1 = net.add_node("n1").unwrap();

            // a host-side server: answers every connection with a greeting
            let host = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let target = host.local_addr().unwrap();
            let server = tokio::spawn(async move {
                loop {
                    let (mut s, _) = host.accept().await.unwrap();
                    s.write_all(b"hello-from-host\n").await.unwrap();
                }
            });

            let err = Forwarder::start(n1.netns(), "127.0.0.1:2379".parse().unwrap(), vec![])
                .await
                .unwrap_err();
            assert!(matches!(err, ForwardError::NoTargets), "{err}");

            // a dead target first: the next one is used
            let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let dead_addr = dead.local_addr().unwrap();
            drop(dead);
            let mut fw = Forwarder::start(
                n1.netns(),
                "127.0.0.1:2379".parse().unwrap(),
                vec![dead_addr, target],
            )
            .await
            .unwrap();
            assert_eq!(fw.local_addr().to_string(), "127.0.0.1:2379");
            let node_ns = host::ns_inode(n1.netns()).unwrap();
            assert!(
                !thread_netns().contains(&node_ns),
                "a thread stayed in the node's network namespace"
            );
            let out = tokio::process::Command::from(n1.net_command("busybox"))
                .args(["nc", "127.0.0.1", "2379"])
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text,
                "hello-from-host\n",
                "stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );

            // the same port twice in one namespace: the listen error names address and namespace
            let err = Forwarder::start(n1.netns(), "127.0.0.1:2379".parse().unwrap(), vec![target])
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ForwardError::Listen { addr, .. } if addr.port() == 2379),
                "{err}"
            );

            fw.stop().await;
            let out = tokio::process::Command::from(n1.net_command("busybox"))
                .args(["nc", "127.0.0.1", "2379"])
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap();
            assert!(
                !out.status.success() && out.stdout.is_empty(),
                "still forwarding: {out:?}"
            );

            // dropping (not stopping) also closes it: a new forwarder can take the port
            let fw2 = Forwarder::start(n1.netns(), "127.0.0.1:2379".parse().unwrap(), vec![target])
                .await
                .unwrap();
            drop(fw2);
            tokio::task::yield_now().await;
            server.abort();
            net.teardown().unwrap();
        });
    });
}
