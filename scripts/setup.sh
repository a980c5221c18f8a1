#!/usr/bin/env bash
# Installs what the tests and the walkthrough use beyond the Rust toolchain:
#   - etcdctl (Debian's etcd-client), for people and for the end-to-end tests;
#   - protoc (Debian's protobuf-compiler): etcd-client's build script looks for it on PATH
#     (the root crate's build.rs uses protoc-bin-vendored, but a dependency's does not);
#   - the official etcd binaries of the versions used for upgrade paths
#     (3.4.45, 3.5.34, 3.7.2; 3.6.15 is bundled in the build), from crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=()
command -v etcdctl >/dev/null 2>&1 || debs+=(etcd-client)
command -v protoc >/dev/null 2>&1 || debs+=(protobuf-compiler)
if [ ${#debs[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${debs[@]}" >/dev/null
fi
etcdctl version | head -n 1
protoc --version

scripts/fetch-etcd.sh 3.4.45 3.5.34 3.7.2
