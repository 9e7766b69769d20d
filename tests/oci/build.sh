#!/usr/bin/env bash
# Builds the clients users run and the registries of the tests from the Go
# modules pinned in this directory, one module per tool (so that one tool's
# dependencies do not move another's), into $OCI_BIN_DIR (default:
# $CARGO_TARGET_DIR/oci, outside the checkout):
# - cosign (sigstore, v2): signs, attests, verifies;
# - oras: attaches SBOMs as OCI 1.1 referrers, discovers them;
# - registry-v3 (distribution v3): a registry without the referrers API
#   (fallback tags only);
# - referrers-registry (./registry, on go-containerregistry): a registry
#   that answers the referrers API;
# - helm (v4): installs, upgrades, tests and uninstalls charts/detour;
# - krew: installs detour as the kubectl plugin `kubectl detour`.
# Each tool is rebuilt only when its module (go.mod, go.sum, sources) or
# this script changes. Prints the directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

target="${CARGO_TARGET_DIR:-$here/../../target}"
out="${OCI_BIN_DIR:-$target/oci}"
mkdir -p "$out"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"

build() { # module directory, output name, package, module path (for the version), extra ldflags
  local stamp
  stamp="$(cat build.sh "$1"/go.mod "$1"/go.sum "$1"/*.go | sha256sum | cut -c1-16)"
  if [[ -f "$out/.$2-$stamp" && -x "$out/$2" ]]; then
    return
  fi
  echo "building $2 ($(cd "$1" && go list -m -f '{{.Path}} {{.Version}}' "$4")) into $out" >&2
  rm -f "$out/.$2-"*
  (cd "$1" && go build -ldflags "-s -w ${5:-}" -o "$out/$2" "$3")
  touch "$out/.$2-$stamp"
}
build registry referrers-registry . github.com/google/go-containerregistry
build oras oras oras.land/oras/cmd/oras oras.land/oras
build distribution registry-v3 github.com/distribution/distribution/v3/cmd/registry github.com/distribution/distribution/v3
build cosign cosign github.com/sigstore/cosign/v2/cmd/cosign github.com/sigstore/cosign/v2
# The version helm's own release build stamps.
helm_version="$(cd helm && go list -m -f '{{.Version}}' helm.sh/helm/v4)"
build helm helm helm.sh/helm/v4/cmd/helm helm.sh/helm/v4 "-X helm.sh/helm/v4/internal/version.version=$helm_version"
build krew krew sigs.k8s.io/krew/cmd/krew sigs.k8s.io/krew
echo "$out"
