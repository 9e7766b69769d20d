#!/usr/bin/env bash
# Builds versitygw (the Versity S3 Gateway, Apache-2.0), the S3-compatible
# server the shared-cache tests of `detour proxy` start over a directory,
# from the Go module pinned in this directory's go.mod, into $S3_BIN_DIR
# (default: $CARGO_TARGET_DIR/s3/<stamp>, outside the checkout). Reused until
# a pin or this script changes. Prints the binary's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

target="${CARGO_TARGET_DIR:-$here/../../target}"
stamp="$(cat go.mod go.sum tools.go build.sh | sha256sum | cut -c1-16)"
out="${S3_BIN_DIR:-$target/s3/$stamp}"

if [[ ! -f "$out/.complete" ]]; then
  mkdir -p "$out"
  echo "building versitygw $(go list -m -f '{{.Version}}' github.com/versity/versitygw) into $out" >&2
  CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath" \
    go build -ldflags "-s -w" -o "$out/versitygw" github.com/versity/versitygw/cmd/versitygw
  touch "$out/.complete"
  if [[ -z "${S3_BIN_DIR:-}" ]]; then
    find "$target/s3" -mindepth 1 -maxdepth 1 -type d ! -name "$stamp" -exec rm -rf {} +
  fi
fi
echo "$out/versitygw"
