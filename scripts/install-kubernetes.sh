#!/usr/bin/env bash
# Builds the pinned Kubernetes, etcd and CoreDNS binaries from the Go module proxy into a cache
# outside the repository, once per pin, and prints the folder that holds them.
#
#   scripts/install-kubernetes.sh            build if needed; print the bin folder (last line of stdout)
#   scripts/install-kubernetes.sh --verify   also re-check the sha256 of every cached binary
#
# Pins: third_party/kubernetes, third_party/etcd and third_party/coredns (go.mod + go.sum each).
# Cache: ${CONSTELLATION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/constellation}/kubernetes/<key>/bin,
# <key> = pinned versions + a hash of the three go.mod/go.sum files, the Go version and the recipe
# below. The binaries are built in a temporary folder next to it and renamed into place only after
# every one of them built and answered its version check, so the key folder is complete or absent.
# GOMODCACHE and GOCACHE default to <cache>/go/mod and <cache>/go/build (an exported GOMODCACHE or
# GOCACHE is respected), so a rebuild after a pin change reuses what it can.
# Progress goes to stderr; stdout carries only the bin folder, for
#   KUBE_BIN=$(scripts/install-kubernetes.sh)
# Optional source identifiers (the Go module proxy serves no git metadata): KUBE_GIT_COMMIT,
# ETCD_GIT_SHA, COREDNS_GIT_COMMIT. SOURCE_DATE_EPOCH fixes the recorded build date.
set -euo pipefail

# Bump when the way the binaries are built changes (flags, version variables, list of binaries):
# it is part of the cache key.
RECIPE=1

VERIFY=0
for arg in "$@"; do
  case "$arg" in
    --verify) VERIFY=1 ;;
    -h | --help)
      sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "install-kubernetes: unknown argument '$arg' (see --help)" >&2
      exit 2
      ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TP="$REPO/third_party"
say() { echo "install-kubernetes: $*" >&2; }
die() {
  echo "install-kubernetes: error: $*" >&2
  exit 1
}

# --- pins (read from the go.mod files, the single place they are written) -----------------------
pin() { # pin MODULE_DIR MODULE_PATH -> version required in that go.mod
  local v
  v=$(awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) { print $NF; exit }' "$TP/$1/go.mod")
  [ -n "$v" ] || die "third_party/$1/go.mod does not require $2"
  echo "$v"
}
K8S_VERSION=$(pin kubernetes k8s.io/kubernetes)
ETCD_VERSION=$(pin etcd go.etcd.io/etcd/server/v3)
COREDNS_VERSION=$(pin coredns github.com/coredns/coredns)
[ "$(pin etcd go.etcd.io/etcd/etcdctl/v3)" = "$ETCD_VERSION" ] ||
  die "third_party/etcd/go.mod pins etcdctl and the etcd server at different versions"
[[ "$K8S_VERSION" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "unexpected Kubernetes pin '$K8S_VERSION'"
K8S_MAJOR=${BASH_REMATCH[1]}
K8S_MINOR=${BASH_REMATCH[2]}

# --- Go -----------------------------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
  die "'go' is not on PATH. Building Kubernetes $K8S_VERSION needs Go >= 1.26 (Debian 12's golang-go is 1.19, too old): install a Go 1.26 toolchain, put its bin folder on PATH (e.g. export PATH=/usr/local/go/bin:\$PATH) and run this script again."
fi
GO_VERSION=$(go env GOVERSION 2>/dev/null || true)
if ! [[ "$GO_VERSION" =~ ^go([0-9]+)\.([0-9]+) ]] || [ "${BASH_REMATCH[1]}" -lt 1 ] ||
  { [ "${BASH_REMATCH[1]}" -eq 1 ] && [ "${BASH_REMATCH[2]}" -lt 26 ]; }; then
  die "$(command -v go) is '${GO_VERSION:-unknown}', but the pinned modules need Go >= 1.26 (their go.mod say 'go 1.26.0'): install Go 1.26 or newer, put it first on PATH and run this script again."
fi

CACHE_ROOT="${CONSTELLATION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/constellation}"
export GOMODCACHE="${GOMODCACHE:-$CACHE_ROOT/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE_ROOT/go/build}"
export GOTOOLCHAIN=local      # never download another toolchain behind the user's back
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0          # static binaries, as upstream builds them (kubelet included, see README)
unset GOOS GOARCH GOWORK 2>/dev/null || true
export GOWORK=off

# --- cache key ----------------------------------------------------------------------------------
HASH=$(
  {
    echo "recipe $RECIPE"
    echo "$GO_VERSION $(go env GOOS)/$(go env GOARCH)"
    for m in kubernetes etcd coredns; do
      echo "== $m"
      cat "$TP/$m/go.mod" "$TP/$m/go.sum"
    done
  } | sha256sum | cut -c1-12
)
KEY="k8s-$K8S_VERSION-etcd-$ETCD_VERSION-coredns-$COREDNS_VERSION-$HASH"
BASE="$CACHE_ROOT/kubernetes"
DEST="$BASE/$KEY"

# name | module folder | package | version check (arguments) | text the check must print
BINARIES=(
  "kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|--version|Kubernetes $K8S_VERSION"
  "kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|--version|Kubernetes $K8S_VERSION"
  "kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|--version|Kubernetes $K8S_VERSION"
  "kubelet|kubernetes|k8s.io/kubernetes/cmd/kubelet|--version|Kubernetes $K8S_VERSION"
  "kube-proxy|kubernetes|k8s.io/kubernetes/cmd/kube-proxy|--version|Kubernetes $K8S_VERSION"
  "kubeadm|kubernetes|k8s.io/kubernetes/cmd/kubeadm|version -o short|$K8S_VERSION"
  "kubectl|kubernetes|k8s.io/kubernetes/cmd/kubectl|version --client|Client Version: $K8S_VERSION"
  "etcd|etcd|go.etcd.io/etcd/server/v3|--version|etcd Version: ${ETCD_VERSION#v}"
  "etcdctl|etcd|go.etcd.io/etcd/etcdctl/v3|version|etcdctl version: ${ETCD_VERSION#v}"
  "coredns|coredns|github.com/coredns/coredns|-version|CoreDNS-${COREDNS_VERSION#v}"
)

version_of() { # name -> pinned version of that binary
  case "$1" in
    etcd | etcdctl) echo "$ETCD_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    *) echo "$K8S_VERSION" ;;
  esac
}

# smoke BIN_DIR ENTRY: run the version check of one binary; fail with what it printed.
smoke() {
  local dir=$1 name args want out
  IFS='|' read -r name _ _ args want <<<"$2"
  # shellcheck disable=SC2086 # args is a word list on purpose
  out=$("$dir/$name" $args 2>&1) || die "$name $args failed: $out"
  [[ "$out" == *"$want"* ]] || die "$name $args printed '$out', expected it to contain '$want'"
}

cached_ok() { # the key folder is complete: every binary, the manifest; with --verify also the sums
  [ -f "$DEST/versions" ] || return 1
  local entry name
  for entry in "${BINARIES[@]}"; do
    name=${entry%%|*}
    [ -x "$DEST/bin/$name" ] || return 1
  done
  if [ "$VERIFY" = 1 ]; then
    (cd "$DEST/bin" && awk '!/^#/ { print $3 "  " $1 }' ../versions | sha256sum --quiet -c -) >&2 ||
      die "cached binaries in $DEST/bin do not match $DEST/versions: remove $DEST and run again"
  fi
}

report_done() {
  say "Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, CoreDNS $COREDNS_VERSION in $DEST/bin (manifest: $DEST/versions)"
  echo "$DEST/bin"
}

if cached_ok; then
  report_done
  exit 0
fi

mkdir -p "$BASE"
# One build at a time per cache; a second caller waits, then finds the finished key folder.
exec 9>"$BASE/.lock"
if ! flock -n 9; then
  say "another install is building in $BASE; waiting for it"
  flock 9
fi
if cached_ok; then
  report_done
  exit 0
fi
# Temporary folders of builds that were killed (SIGKILL skips the trap below). We hold the lock,
# so none of them belongs to a running build.
for d in "$BASE"/.tmp-*; do
  if [ -e "$d" ]; then
    say "removing $d, left by a build that was killed"
    rm -rf "$d"
  fi
done
[ ! -e "$DEST" ] || rm -rf "$DEST" # incomplete (manifest or a binary missing): rebuild it

TMP=$(mktemp -d "$BASE/.tmp-$KEY.XXXXXX")
# The compiler runs in the background and the script waits for it, so that a signal is handled at
# once (bash runs traps only between commands), stops the compiler and removes the temporary folder.
CHILD=""
stop_tree() { # stop_tree PID: pause it, end its descendants, then it (the pids this script started)
  local c
  kill -STOP "$1" 2>/dev/null || return 0
  # children from /proc (pgrep is procps, which a bare machine may lack)
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do stop_tree "$c"; done
  kill -TERM "$1" 2>/dev/null
  kill -CONT "$1" 2>/dev/null || true
}
run() { # run CMD...: in the background, wait for it, return its status
  "$@" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}
cleanup() { rm -rf "$TMP"; }
on_signal() {
  say "interrupted; stopping the build and removing $TMP"
  if [ -n "$CHILD" ]; then
    stop_tree "$CHILD"
    wait "$CHILD" 2>/dev/null || true
  fi
  exit 130
}
trap cleanup EXIT
trap on_signal INT TERM HUP
chmod 755 "$TMP" # mktemp made it 0700; the key folder is for every user of this cache
mkdir -p "$TMP/bin" "$TMP/gotmp"
export GOTMPDIR="$TMP/gotmp" # the compiler's work files go with the temporary folder

# --- modules (the only step that needs the Go module proxy) -------------------------------------
say "cache: $BASE; GOMODCACHE=$GOMODCACHE; GOCACHE=$GOCACHE"
for m in kubernetes etcd coredns; do
  say "downloading the modules of third_party/$m (GOPROXY=$(go env GOPROXY))"
  if ! out=$(cd "$TP/$m" && go mod download 2>&1); then
    echo "$out" | tail -n 5 >&2
    die "could not get the Go modules of third_party/$m from GOPROXY=$(go env GOPROXY) (and they are not all in $GOMODCACHE). The Go module proxy must be reachable from this machine: check the network or proxy settings (HTTPS_PROXY), or point GOPROXY at a reachable module proxy, then run this script again. Nothing was added to $BASE."
  fi
done

# --- version variables --------------------------------------------------------------------------
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
  BUILD_DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
else
  BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
fi
# Upstream's hack/lib/version.sh sets these six in both packages. The module proxy carries no git
# metadata: gitCommit stays empty (upstream's default) unless KUBE_GIT_COMMIT names it, and
# gitTreeState says "archive", upstream's value for builds from a source archive.
K8S_LD="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LD+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$K8S_MAJOR -X $pkg.gitMinor=$K8S_MINOR"
  K8S_LD+=" -X $pkg.gitCommit=${KUBE_GIT_COMMIT:-} -X $pkg.gitTreeState=archive -X $pkg.buildDate=$BUILD_DATE"
done
# etcd's version.Version is already the release in the module; GitSHA would otherwise say
# "Not provided (use ./build instead of go build)". CoreDNS's CoreVersion is a constant.
ETCD_LD="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_GIT_SHA:-module-$ETCD_VERSION}"
COREDNS_LD="-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_GIT_COMMIT:-module-$COREDNS_VERSION}"

# --- build --------------------------------------------------------------------------------------
total=${#BINARIES[@]}
i=0
start_all=$SECONDS
for entry in "${BINARIES[@]}"; do
  i=$((i + 1))
  IFS='|' read -r name mod pkg _ _ <<<"$entry"
  case "$mod" in
    kubernetes) ld=$K8S_LD ;;
    etcd) ld=$ETCD_LD ;;
    coredns) ld=$COREDNS_LD ;;
  esac
  say "[$i/$total] building $name $(version_of "$name") ($pkg)"
  t0=$SECONDS
  run go -C "$TP/$mod" build -trimpath -ldflags "$ld" -o "$TMP/bin/$name" "$pkg" ||
    die "building $name failed (see the compiler output above); nothing was added to $BASE"
  smoke "$TMP/bin" "$entry"
  say "[$i/$total] $name built in $((SECONDS - t0)) s, $(($(stat -c %s "$TMP/bin/$name") / 1048576)) MiB"
done

# --- manifest -----------------------------------------------------------------------------------
{
  echo "# name version sha256 bytes  (built $BUILD_DATE with $GO_VERSION, CGO_ENABLED=0, -trimpath; key $KEY)"
  for entry in "${BINARIES[@]}"; do
    name=${entry%%|*}
    printf '%s %s %s %s\n' "$name" "$(version_of "$name")" \
      "$(sha256sum "$TMP/bin/$name" | cut -d' ' -f1)" "$(stat -c %s "$TMP/bin/$name")"
  done
} >"$TMP/versions"
{
  echo "key $KEY"
  echo "go $GO_VERSION"
  echo "build_date $BUILD_DATE"
  echo "build_seconds $((SECONDS - start_all))"
  # the source of each binary: the pinned module and its checksum (go.sum), no git metadata
  for pair in kubernetes:k8s.io/kubernetes etcd:go.etcd.io/etcd/server/v3 \
    etcd:go.etcd.io/etcd/etcdctl/v3 coredns:github.com/coredns/coredns; do
    m=${pair%%:*} path=${pair#*:}
    grep -F "$path $(pin "$m" "$path") h1:" "$TP/$m/go.sum" | sed 's/^/module /'
  done
} >"$TMP/build-info"

rmdir "$TMP/gotmp"
chmod a-w "$TMP/bin"/* # the files, not the folder: a later rebuild can still remove it
mv -T "$TMP" "$DEST" # same filesystem: atomic; DEST does not exist (removed above, under the lock)
trap - EXIT
say "all $total binaries built in $((SECONDS - start_all)) s"
report_done
