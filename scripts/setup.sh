#!/usr/bin/env bash
# Installs what the tests and the walkthrough use beyond the Rust toolchain:
#   - etcdctl (Debian's etcd-client), for people and for the end-to-end tests;
#   - the official etcd binaries of the versions used for upgrade paths
#     (3.4.45, 3.5.34, 3.7.2; 3.6.15 is bundled in the build), from crates.io.
# protoc is not needed: the build uses protoc-bin-vendored.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcdctl >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-client >/dev/null
fi
etcdctl version | head -n 1

scripts/fetch-etcd.sh 3.4.45 3.5.34 3.7.2
