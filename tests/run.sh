#!/usr/bin/env bash
# The README's test command: on a fresh machine of the project's kind, installs
# what the tests need, builds the control plane, and runs every test.
#
# - Debian packages: docker-registry (the registries the mirroring tests start
#   on 127.0.0.1), skopeo (cross-checks every copy), apache2-utils (htpasswd
#   for the registry behind Basic auth), tinyproxy (the forward proxy of the
#   proxy tests), containerd (with ctr: a node pulling through `detour
#   proxy`), squid (a second forward proxy, with Basic auth), podman (pulling
#   through the proxy with a registries.conf mirror). Installed only when
#   missing (as root).
# - kube-apiserver, kubectl and etcd, built from the Go modules pinned in
#   tests/kube/go.mod into $CARGO_TARGET_DIR/kube (reused until the pins
#   change). The tests use this kubectl, put first on PATH.
# - versitygw (an S3-compatible server over a directory), built from the Go
#   module pinned in tests/s3/go.mod into $CARGO_TARGET_DIR/s3, for the
#   shared-cache tests of `detour proxy`.
# - cosign, oras, distribution v3 (a registry without the referrers API)
#   and a registry that answers it (on go-containerregistry), built from the
#   Go modules pinned under tests/oci into $CARGO_TARGET_DIR/oci, for the
#   tests of signatures and referrers travelling with copies.
# - The layering check (tests/architecture.py: which crate may depend on
#   which, nothing async or networked under detour-core, no module cycles).
# - Then `cargo test --workspace --locked`, with any arguments given to this
#   script: every crate's unit tests and the binary's integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
command -v tinyproxy >/dev/null || missing+=(tinyproxy)
# The clients users run, without what they merely recommend (podman's
# recommendations alone are a desktop's worth).
clients=()
command -v containerd >/dev/null || clients+=(containerd)
command -v squid >/dev/null || clients+=(squid)
command -v podman >/dev/null || clients+=(podman)
if ((${#missing[@]} + ${#clients[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "tests/run.sh: install these Debian packages first: ${missing[*]} ${clients[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]} ${clients[*]}" >&2
  apt-get update
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  fi
  if ((${#clients[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${clients[@]}"
  fi
fi
if ! command -v go >/dev/null; then
  echo "tests/run.sh: Go 1.26 or newer is needed to build the control plane" >&2
  exit 1
fi

started=$SECONDS
DETOUR_KUBE_BIN="$(bash tests/kube/build.sh)"
export DETOUR_KUBE_BIN
echo "control plane: $DETOUR_KUBE_BIN ($((SECONDS - started)) s)" >&2
export PATH="$DETOUR_KUBE_BIN:$PATH"
# The S3-compatible server of the shared-cache tests (versitygw), likewise
# built from a pinned Go module.
DETOUR_S3_SERVER="$(bash tests/s3/build.sh)"
export DETOUR_S3_SERVER
# cosign, oras, distribution v3 and a registry with the referrers API, for
# the attached-artifacts tests, likewise.
DETOUR_OCI_BIN="$(bash tests/oci/build.sh)"
export DETOUR_OCI_BIN

python3 tests/architecture.py
cargo test --workspace --locked "$@"
