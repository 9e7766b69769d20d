#!/usr/bin/env bash
# What detour adds to a Pod create through a real kube-apiserver, in
# alternating rounds: no webhook, a no-op webhook, an ideal webhook (detour's
# patch with no work), detour's webhook, and native mode (detour policy);
# for 3-container and 60-container Pods. Reported from the client side and
# from the apiserver's own admission-time histograms (benches/apiserver.rs).
#
#   bash bench/apiserver-latency.sh        # N=400 CLIENTS=4 ROUNDS=4 to change
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"
DETOUR_KUBE_BIN="$(bash tests/kube/build.sh)"
export DETOUR_KUBE_BIN PATH="$DETOUR_KUBE_BIN:$PATH"
# The bench profile builds detour in release mode.
cargo bench --locked --bench apiserver
