#!/usr/bin/env bash
# detour's container image without Docker: builds a static release binary on
# this machine, assembles the root file system (the binary at /detour, CA
# certificates for upstream TLS, passwd and group naming user 65532, an
# empty /tmp), and writes an OCI image of it as an oci-archive (an index
# over the platform built here, shaped for more), named REF in the archive.
# Push it where your cluster pulls from, with nothing but detour:
#
#   bash dist/image.sh                                  # -> $CARGO_TARGET_DIR/image/detour-<version>.oci.tar
#   detour mirror oci-archive:$CARGO_TARGET_DIR/image/detour-0.1.0.oci.tar --to harbor.corp/detour/detour:0.1.0
#
# Options (environment): OUT (the archive), REF (its name; default
# ghcr.io/detour-dev/detour:<version>), SOURCE_DATE_EPOCH (times in the image;
# default: the last commit's). The root file system is left in dist/rootfs,
# which the Dockerfile copies for those who build with Docker.
# Prints the image index digest.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"
target=x86_64-unknown-linux-gnu
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
out="${OUT:-$CARGO_TARGET_DIR/image/detour-$version.oci.tar}"
ref="${REF:-ghcr.io/detour-dev/detour:$version}"

# Static: glibc linked in (crt-static), so the image needs no libraries.
# Only the target's flags change, so the host's build cache stays valid.
echo "building a static detour $version for $target" >&2
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" --bin detour -q
binary="$CARGO_TARGET_DIR/$target/release/detour"
# A static(-pie) binary needs no shared library.
if readelf -d "$binary" | grep -q NEEDED; then
  echo "dist/image.sh: $binary is not static" >&2
  exit 1
fi

rootfs=dist/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
cp "$binary" "$rootfs/detour"
strip "$rootfs/detour"
ca=/etc/ssl/certs/ca-certificates.crt
if [[ ! -f $ca ]]; then
  echo "dist/image.sh: $ca is missing (Debian package ca-certificates)" >&2
  exit 1
fi
cp "$ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"

mkdir -p "$(dirname "$out")"
python3 dist/oci-image.py --rootfs "$rootfs" --out "$out" --name "$ref" --version "$version" \
  --revision "$revision" --source https://github.com/detour-dev/detour --created "$created"
echo "wrote $out ($ref)" >&2
