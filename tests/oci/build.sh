#!/usr/bin/env bash
# Builds the OCI clients and registries of the attached-artifacts tests from
# the Go modules pinned in this directory's modules, into $OCI_BIN_DIR
# (default: $CARGO_TARGET_DIR/oci/<stamp>, outside the checkout):
# - cosign (sigstore, v2): signs, attests, verifies;
# - oras: attaches SBOMs as OCI 1.1 referrers, discovers them;
# - registry-v3 (distribution v3): a registry without the referrers API
#   (fallback tags only);
# - referrers-registry (./registry, on go-containerregistry): a registry
#   that answers the referrers API.
# Each tool is a module of its own, so that one tool's dependencies do not
# move another's. The stamp hashes every go.mod, go.sum and source here and
# this script; a build is reused until a pin changes. Prints the directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

target="${CARGO_TARGET_DIR:-$here/../../target}"
stamp="$(cat build.sh */go.mod */go.sum */*.go | sha256sum | cut -c1-16)"
out="${OCI_BIN_DIR:-$target/oci/$stamp}"

if [[ ! -f "$out/.complete" ]]; then
  mkdir -p "$out"
  export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
  build() { # module directory, output name, package
    echo "building $2 ($(cd "$1" && go list -m -f '{{.Path}} {{.Version}}' "${4:-$3}" 2>/dev/null || echo local)) into $out" >&2
    (cd "$1" && go build -ldflags "-s -w" -o "$out/$2" "$3")
  }
  build registry referrers-registry . github.com/google/go-containerregistry
  build oras oras oras.land/oras/cmd/oras oras.land/oras
  build distribution registry-v3 github.com/distribution/distribution/v3/cmd/registry github.com/distribution/distribution/v3
  build cosign cosign github.com/sigstore/cosign/v2/cmd/cosign github.com/sigstore/cosign/v2
  touch "$out/.complete"
  if [[ -z "${OCI_BIN_DIR:-}" ]]; then
    find "$target/oci" -mindepth 1 -maxdepth 1 -type d ! -name "$stamp" -exec rm -rf {} +
  fi
fi
echo "$out"
