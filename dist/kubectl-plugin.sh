#!/usr/bin/env bash
# detour as a kubectl plugin: packs the static binary that dist/image.sh
# built (dist/rootfs/detour) as `kubectl-detour` in a release archive, and
# writes krew's plugin manifest for it, with the archive's sha256:
#
#   bash dist/image.sh && bash dist/kubectl-plugin.sh
#   kubectl krew install --manifest=$OUT_DIR/detour.krew.yaml --archive=$OUT_DIR/kubectl-detour_v0.1.0_linux_amd64.tar.gz
#   kubectl detour audit
#
# OUT_DIR (default: $CARGO_TARGET_DIR/plugin). The manifest's uri is where
# the release publishes the archive. Prints the manifest's path.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"
version="v$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
out="${OUT_DIR:-$CARGO_TARGET_DIR/plugin}"
binary=dist/rootfs/detour
if [[ ! -x $binary ]]; then
  echo "dist/kubectl-plugin.sh: $binary is missing: run dist/image.sh first" >&2
  exit 1
fi
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
archive="kubectl-detour_${version}_linux_amd64.tar.gz"
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
cp "$binary" "$staging/kubectl-detour"
mkdir -p "$out"
tar -C "$staging" --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -cf - kubectl-detour | gzip -n >"$out/$archive"
sha="$(sha256sum "$out/$archive" | cut -d' ' -f1)"
cat >"$out/detour.krew.yaml" <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: detour
spec:
  version: $version
  homepage: https://github.com/detour-dev/detour
  shortDescription: Rewrite Pod images to registry mirrors
  description: |
    detour rewrites the images of Pods to registry mirrors, for clusters
    that cannot reach gcr.io, registry.k8s.io, quay.io or ghcr.io, or where
    Docker Hub is slow. As a kubectl plugin: \`kubectl detour audit\` shows what
    the rules would change in the cluster, \`kubectl detour explain IMAGE\` one
    image's rewrite, \`kubectl detour rewrite -f FILE\` rewrites manifests,
    \`kubectl detour mirror\` copies images into a mirror.
  platforms:
    - selector:
        matchLabels:
          os: linux
          arch: amd64
      uri: https://github.com/detour-dev/detour/releases/download/$version/$archive
      sha256: $sha
      files:
        - from: kubectl-detour
          to: .
      bin: kubectl-detour
YAML
echo "$out/detour.krew.yaml"
