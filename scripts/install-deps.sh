#!/usr/bin/env bash
# Installs what the project needs on Debian 12, idempotently: only missing packages are
# installed, and apt's lists are refreshed only when something is missing. Afterwards it checks
# that every file and tool the build and the tests use is really there (a package can be
# installed and still lack a file: `protobuf-compiler` without its Recommends lacks the
# protobuf well-known types), and fails naming what is missing.
#   scripts/install-deps.sh           install what is missing, then check
#   scripts/install-deps.sh --check   only check (exit 1 naming what is missing)
# Then it builds (once, into a cache outside the repository; seconds when cached) the pinned
# Kubernetes, etcd 3.6 and CoreDNS binaries with scripts/install-kubernetes.sh: about 23 minutes
# on 2 cores the first time, which needs Go >= 1.26 and the Go module proxy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# swtpm, swtpm-tools: the nodes' software TPMs (swtpm, swtpm_ioctl)
# python3-minimal: /usr/bin/python3, which the TPM isolation test runs as another user to talk to a
#   node's TPM socket (a bare Debian 12 has no python3)
# pkg-config, gcc: native build steps of dependencies (ring, the pause image)
# etcd-server, etcd-client: the control plane's replicated state (etcd, etcdctl)
# protobuf-compiler, libprotobuf-dev: protoc and google/protobuf/*.proto for the etcd client's build
# The Kubernetes node runtime (crates/kube): containerd + runc (one containerd per node),
# containernetworking-plugins (CNI bridge/host-local/loopback/portmap in /usr/lib/cni), iproute2 (`ip`:
# namespaces, veths, bridges, routes), util-linux (unshare, nsenter, mount), iptables + conntrack (kube-proxy's
# dataplane inside a node's namespace), busybox-static (the workload image and test containers), libc6-dev
# (libc.a for the statically linked pause program built with gcc -static)
PKGS=(swtpm swtpm-tools python3-minimal etcd-server etcd-client protobuf-compiler libprotobuf-dev pkg-config gcc
  containerd runc containernetworking-plugins iproute2 util-linux iptables conntrack busybox-static libc6-dev)

check() {
  local missing=()
  for tool in swtpm swtpm_ioctl etcd etcdctl protoc pkg-config cc; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("program $tool")
  done
  # Kubernetes node runtime (crates/kube)
  for tool in containerd ctr runc ip unshare nsenter mount iptables conntrack busybox; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("program $tool (Kubernetes node runtime)")
  done
  for plugin in bridge host-local loopback portmap; do
    [ -x "/usr/lib/cni/$plugin" ] || missing+=("CNI plugin /usr/lib/cni/$plugin (package containernetworking-plugins)")
  done
  [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/libc.a ] || missing+=("libc.a for gcc -static (package libc6-dev)")
  /usr/bin/python3 -c 'import socket' 2>/dev/null || missing+=("/usr/bin/python3 with its socket module (package python3-minimal)")
  for f in /usr/include/google/protobuf/descriptor.proto /usr/include/google/protobuf/empty.proto; do
    [ -f "$f" ] || missing+=("file $f (package libprotobuf-dev)")
  done
  command -v cargo >/dev/null 2>&1 || missing+=("cargo (install the Rust toolchain with rustup first)")
  command -v go >/dev/null 2>&1 || missing+=("go (Go >= 1.26, for the Kubernetes binaries)")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: missing after installation:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    echo "install-deps: run scripts/install-deps.sh as root (or with sudo) on Debian 12" >&2
    return 1
  fi
  echo "install-deps: all build and test prerequisites present" >&2
}

if [ "${1:-}" = "--check" ]; then
  check
  exit $?
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
check
# The Kubernetes binaries: built once per pin (nice: the build takes both cores for a while).
# --verify: the cached binaries must still match their recorded SHA-256 (a few seconds); nodes
# measure and run copies of them.
kube_bin="$(nice -n 10 "$here/install-kubernetes.sh" --verify)"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kube-proxy kubectl etcd etcdctl coredns; do
  [ -x "$kube_bin/$b" ] || { echo "install-deps: $kube_bin/$b is missing after the build" >&2; exit 1; }
done
echo "install-deps: Kubernetes binaries in $kube_bin" >&2
