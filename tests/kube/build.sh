#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go modules pinned in this directory's
# go.mod, into $KUBE_BIN_DIR (default: $CARGO_TARGET_DIR/kube/<stamp>, outside
# the checkout). The stamp hashes go.mod, go.sum, etcd/main.go and this script,
# so a build is reused until a pinned version changes. Prints the directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

target="${CARGO_TARGET_DIR:-$here/../../target}"
stamp="$(cat go.mod go.sum etcd/main.go build.sh | sha256sum | cut -c1-16)"
out="${KUBE_BIN_DIR:-$target/kube/$stamp}"

if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"

# The version ldflags Kubernetes' own build stamps (hack/lib/version.sh), so
# that /version reports the release this is.
kube_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
major="${kube_version#v}"; major="${major%%.*}"
minor="${kube_version#v*.}"; minor="${minor%%.*}"
module_time="$(go list -m -f '{{.Time}}' k8s.io/kubernetes | cut -c1-19)"  # "2026-10-27 12:01:04"
build_date="${module_time/ /T}Z"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version"
  ldflags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
echo "building kube-apiserver and kubectl $kube_version, and etcd $(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3) into $out" >&2
go build -ldflags "$ldflags" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -ldflags "$ldflags" -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl
go build -ldflags "-s -w" -o "$out/etcd" ./etcd
touch "$out/.complete"
# Builds of earlier pins are of no further use.
if [[ -z "${KUBE_BIN_DIR:-}" ]]; then
  find "$target/kube" -mindepth 1 -maxdepth 1 -type d ! -name "$stamp" -exec rm -rf {} +
fi
echo "$out"
