#!/usr/bin/env bash
# What looking for attached artifacts (signatures, attestations, SBOMs,
# referrers) costs a copy of images that have none: `detour mirror` of
# IMAGES unsigned single-platform images of 1 MiB, with the lookup (the
# default) and without it (--no-attached-artifacts), each into a fresh
# destination, the order alternating by round; from Debian's registry
# (no referrers API) and from a registry that answers the referrers API
# (tests/oci's, built by tests/oci/build.sh). Reports wall time and the
# requests the source answered.
#
#   bash bench/attached-cost.sh          # IMAGES=20 ROUNDS=3 by default
#
# Needs docker-registry, python3, Go (for tests/oci/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"
IMAGES="${IMAGES:-20}"
ROUNDS="${ROUNDS:-3}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/detour"
OCI_BIN="$(bash tests/oci/build.sh)"
. bench/lib.sh

start_referrers_registry() { # NAME -> host:port, requests logged to $WORK/NAME.log
  local port
  port="$(free_port)"
  "$OCI_BIN/referrers-registry" -addr "127.0.0.1:$port" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.05
  done
  echo "127.0.0.1:$port"
}

requests() { grep -cE '"?(GET|HEAD) ' "$WORK/$1.log" || true; }

printf '%-10s %-6s %-9s %8s %16s\n' source round lookup seconds "source requests"
for kind in debian referrers; do
  if [[ $kind == debian ]]; then SRC="$(ACCESS_LOG=1 start_registry src-$kind)"; else SRC="$(start_referrers_registry src-$kind)"; fi
  : >"$WORK/list-$kind"
  for i in $(seq "$IMAGES"); do
    python3 bench/seed-registry.py "$SRC" "bench/app$i" v1 "$i:1" >/dev/null 2>&1
    echo "$SRC/bench/app$i:v1" >>"$WORK/list-$kind"
  done
  for round in $(seq "$ROUNDS"); do
    if (( round % 2 )); then order="on off"; else order="off on"; fi
    for lookup in $order; do
      DST="$(start_registry "dst-$kind-$round-$lookup")"
      printf 'mirror:\n  plainHttp: ["%s", "%s"]\n  allowLoopback: true\nrules:\n  - source: %s/bench\n    kind: prefix\n    target: %s/bench\n' \
        "$SRC" "$DST" "$SRC" "$DST" >"$WORK/config.yaml"
      flag=()
      [[ $lookup == off ]] && flag=(--no-attached-artifacts)
      before="$(requests "src-$kind")"
      start="$(date +%s.%N)"
      "$BIN" mirror --config "$WORK/config.yaml" -f "$WORK/list-$kind" --no-progress "${flag[@]}" >/dev/null
      seconds="$(echo "$(date +%s.%N) - $start" | bc -l)"
      after="$(requests "src-$kind")"
      printf '%-10s %-6s %-9s %8.2f %16s\n' "$kind" "$round" "$lookup" "$seconds" "$((after - before))"
      stop_registry "dst-$kind-$round-$lookup"
    done
  done
done
