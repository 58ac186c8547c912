//! The host-side API endpoint: a proxy in the host's network namespace reaches servers inside a
//! cluster's namespaces and skips a backend that is down.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use kube_node::endpoint::{ApiProxy, EndpointError};
use kube_node::net::{ClusterNet, DEFAULT_RUN_ROOT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[test]
fn proxy_reaches_a_server_in_a_node_and_skips_a_dead_backend() {
    if let Some(why) = common::missing_root_or_tools(&["ip", "unshare", "nsenter", "busybox"]) {
        return common::skip(&why);
    }
    let name = common::cluster_name("ep");
    common::guarded(&name, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::write(tmp.path().join("index.html"), "hello-from-n2\n").unwrap();
            let mut net = ClusterNet::create(Path::new(DEFAULT_RUN_ROOT), &name, 12).unwrap();
            let n1 = net.add_node("n1").unwrap();
            let n2 = net.add_node("n2").unwrap();
            // a server on n2 only; n1 refuses (nothing listens)
            let mut httpd = n2.net_command("busybox");
            httpd
                .args(["httpd", "-f", "-p", "7000", "-h"])
                .arg(tmp.path());
            let mut server = httpd.spawn().unwrap();

            let err = ApiProxy::start("127.0.0.1:0".parse().unwrap(), net.fabric(), vec![])
                .await
                .unwrap_err();
            assert!(matches!(err, EndpointError::NoBackends), "{err}");

            let proxy = ApiProxy::start(
                "127.0.0.1:0".parse().unwrap(),
                net.fabric(),
                vec![
                    std::net::SocketAddr::from((n1.address(), 7000)),
                    std::net::SocketAddr::from((n2.address(), 7000)),
                ],
            )
            .await
            .unwrap();
            // httpd may not listen yet: retry until a deadline
            let deadline = Instant::now() + Duration::from_secs(10);
            let body = loop {
                let r = get(proxy.local_addr()).await;
                if r.contains("hello-from-n2") || Instant::now() > deadline {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(body.contains("hello-from-n2"), "{body:?}");
            drop(proxy);
            net.teardown().unwrap();
            assert!(
                !server.wait().unwrap().success(),
                "httpd was killed by teardown"
            );
        });
    });
}
