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
            // the listener's thread has been joined; the kernel drops it from /proc/self/task
            // just after the join returns
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while thread_netns().contains(&node_ns) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a thread stayed in the node's network namespace"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
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

            // a balancer inside n1 whose connections are made from n1 too: 127.0.0.1:6443 of
            // n1 -> a dead address first (n1 itself, nothing listens), then a server on n2
            let n2 = net.add_node("n2").unwrap();
            let tmp = tempfile::tempdir().unwrap();
            std::fs::write(tmp.path().join("index.html"), "hello-from-n2\n").unwrap();
            let mut httpd = n2.net_command("busybox");
            httpd
                .args(["httpd", "-f", "-p", "7000", "-h"])
                .arg(tmp.path());
            let mut web = httpd.spawn().unwrap();
            let mut lb = Forwarder::start_in(
                n1.netns(),
                "127.0.0.1:6443".parse().unwrap(),
                n1.netns(),
                vec![
                    std::net::SocketAddr::from((n1.address(), 7000)),
                    std::net::SocketAddr::from((n2.address(), 7000)),
                ],
            )
            .await
            .unwrap();
            // httpd may not listen yet: retry until a deadline
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let body = loop {
                let out = tokio::process::Command::from(n1.net_command("busybox"))
                    .args(["wget", "-qO-", "http://127.0.0.1:6443/index.html"])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .unwrap();
                let body = String::from_utf8_lossy(&out.stdout).into_owned();
                if body.contains("hello-from-n2") || std::time::Instant::now() > deadline {
                    break body;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            assert_eq!(body, "hello-from-n2\n");
            lb.stop().await;
            // the connector thread ends with the forwarder: no thread left in n1's namespace
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while thread_netns().contains(&node_ns) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "connector thread still in the node's namespace"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            net.teardown().unwrap();
            assert!(
                !web.wait().unwrap().success(),
                "httpd was killed by teardown"
            );
        });
    });
}
