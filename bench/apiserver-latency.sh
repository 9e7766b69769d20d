#!/usr/bin/env bash
# What detour adds to a Pod create through a real kube-apiserver: N Pods
# without any webhook, then N with detour registered (one client, then
# CLIENTS concurrent), reported from the client side and from the apiserver's
# own apiserver_admission_webhook_admission_duration_seconds.
#
#   bash bench/apiserver-latency.sh        # N=2000 CLIENTS=16 to change
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"
DETOUR_KUBE_BIN="$(bash tests/kube/build.sh)"
export DETOUR_KUBE_BIN PATH="$DETOUR_KUBE_BIN:$PATH"
# The bench profile builds detour in release mode.
cargo bench --locked --bench apiserver
