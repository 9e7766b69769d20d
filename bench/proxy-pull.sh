#!/usr/bin/env bash
# `detour proxy` against a direct pull, in one run: a 1 GiB image (4 layers:
# 448, 256, 192 and 128 MiB) copied by `skopeo copy --all` from a local
# docker-registry directly, through the proxy with an empty cache (cold), and
# through it again (warm); then 50 clients pulling one uncached 448 MiB layer
# at once through a fresh proxy. Reports wall times, the cold/direct and
# warm/direct ratios, how many times the upstream sent each blob, and the
# proxy's peak RSS (VmHWM).
#
# Two settings: the upstream on loopback (no network at all: a proxy can at
# best equal it), and the upstream across a link (bench/link.rs: LINK_MBIT,
# default 1000 Mbit/s shared, LINK_DELAY_MS, default 20 ms per request), which
# direct pulls and the proxy's upstream fetches cross and warm pulls do not,
# as with a registry on the other side of a wall.
#
#   bash bench/proxy-pull.sh            # ROUNDS=3 by default
#
# Needs docker-registry, skopeo, curl, python3 and GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"
ROUNDS="${ROUNDS:-3}"
LINK_MBIT="${LINK_MBIT:-1000}"
LINK_DELAY_MS="${LINK_DELAY_MS:-20}"
CLIENTS="${CLIENTS:-50}"
cargo build --release --locked -q --bin detour --example link
BIN="$CARGO_TARGET_DIR/release/detour"
. bench/lib.sh

SRC="$(start_registry upstream)"
echo "seeding $SRC with bench/big:v1 (1 GiB, 4 layers)..."
python3 bench/seed-registry.py "$SRC" bench/big v1 1:448 2:256 3:192 4:128 2>/dev/null
SOURCE_DIGEST="$(digest_of "$SRC/bench/big:v1")"

LINK_BIN="$CARGO_TARGET_DIR/release/examples/link"

# start_proxy NAME [UPSTREAM] -> prints host:port of a proxy with an empty cache; its
# pid goes to $WORK/NAME.pid (this runs in a command substitution).
start_proxy() {
  local name="$1" upstream="${2:-$SRC}" port admin
  port="$(free_port)"; admin="$(free_port)"
  mkdir -p "$WORK/$name"
  cat >"$WORK/$name/proxy.yaml" <<YAML
upstreams:
  - host: "$upstream"
    name: up
registry: {allowLoopback: true, plainHttp: ["$upstream"]}
cache: {directory: $WORK/$name/cache, maxSize: 8GiB}
clients: {maxRequestsPerClient: 0}
YAML
  DETOUR_LOG=warn "$BIN" proxy --plain-http --config "$WORK/$name/proxy.yaml" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >"$WORK/$name.log" 2>&1 &
  echo $! >"$WORK/$name.pid"
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break
    sleep 0.05
  done
  echo "127.0.0.1:$port"
}
peak_rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Copies go to memory when /dev/shm is there: the client's disk writes are
# not what is measured (they made the direct times vary by half).
OUT_ROOT="$WORK"
if [[ -d /dev/shm && -w /dev/shm ]]; then OUT_ROOT="$(mktemp -d /dev/shm/detour-bench.XXXXXX)"; fi
trap 'cleanup; rm -rf "$OUT_ROOT"' EXIT

copy() { # SOURCE-REF OUT -> seconds
  rm -rf "$2"
  HOME="$WORK/skopeo-home" /usr/bin/time -f '%e' -o "$WORK/time" \
    skopeo copy -q --all --src-tls-verify=false "docker://$1" "dir:$2"
  cat "$WORK/time"
}
upstream_blob_gets() { grep -c '"GET /v2/bench/big/blobs/' "$WORK/upstream.log" || true; }

# The upstream's access log counts what the proxy fetched.
sed -i 's/accesslog: {disabled: true}/accesslog: {disabled: false}/' "$WORK/upstream/config.yml"
kill "$(cat "$WORK/upstream.pid")"; wait "$(cat "$WORK/upstream.pid")" 2>/dev/null || true
docker-registry serve "$WORK/upstream/config.yml" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!); echo $! >"$WORK/upstream.pid"
for _ in $(seq 200); do (exec 3<>"/dev/tcp/${SRC%:*}/${SRC#*:}") 2>/dev/null && break; sleep 0.05; done

rounds() { # LABEL UPSTREAM: ROUNDS rounds of direct, cold, warm, direct
  local label="$1" upstream="$2"
  : >"$WORK/ratios"
  echo
  echo "$label"
  printf '%-6s %9s %9s %9s %11s %10s %13s\n' round direct cold warm cold/direct warm/direct "proxy RSS MB"
  for round in $(seq "$ROUNDS"); do
    P="$(start_proxy "proxy-$label-$round" "$upstream")"
    PROXY_PID="$(cat "$WORK/proxy-$label-$round.pid")"; PIDS+=("$PROXY_PID")
    # Direct before and after, averaged: the machine's speed drifts.
    direct_before="$(copy "$upstream/bench/big:v1" "$OUT_ROOT/out")"
    before="$(upstream_blob_gets)"
    cold="$(copy "$P/up/bench/big:v1" "$OUT_ROOT/out")"
    fetched=$(( $(upstream_blob_gets) - before ))
    warm="$(copy "$P/up/bench/big:v1" "$OUT_ROOT/out")"
    refetched=$(( $(upstream_blob_gets) - before - fetched ))
    [[ "$(sha256sum <"$OUT_ROOT/out/manifest.json" | cut -d' ' -f1)" == "$SOURCE_DIGEST" ]] \
      || { echo "digest through the proxy differs"; exit 1; }
    direct_after="$(copy "$upstream/bench/big:v1" "$OUT_ROOT/out")"
    direct="$(echo "($direct_before + $direct_after) / 2" | bc -l | xargs printf '%.2f')"
    echo "$(echo "$cold/$direct" | bc -l) $(echo "$warm/$direct" | bc -l)" >>"$WORK/ratios"
    printf '%-6s %9s %9s %9s %11.2f %10.2f %13s\n' "$round" "$direct" "$cold" "$warm" \
      "$(echo "$cold/$direct" | bc -l)" "$(echo "$warm/$direct" | bc -l)" "$(peak_rss_mb "$PROXY_PID")"
    echo "round $round: direct ${direct_before}s before, ${direct_after}s after; upstream blob GETs: cold $fetched (5 blobs), warm $refetched"
    kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
  done
  python3 - "$WORK/ratios" "$label" <<'PY'
import statistics, sys
rows = [tuple(map(float, line.split())) for line in open(sys.argv[1])]
print("%s, median over %d rounds: cold/direct %.2f, warm/direct %.2f"
      % (sys.argv[2], len(rows), statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)))
PY
}

rounds loopback "$SRC"
LINK_PORT="$(free_port)"
"$LINK_BIN" "127.0.0.1:$LINK_PORT" "$SRC" "$LINK_MBIT" "$LINK_DELAY_MS" &
PIDS+=($!)
sleep 0.3
rounds "link-${LINK_MBIT}mbit-${LINK_DELAY_MS}ms" "127.0.0.1:$LINK_PORT"

# 50 clients, one uncached 448 MiB layer, a fresh proxy.
P="$(start_proxy proxy-fanout)"
PROXY_PID="$(cat "$WORK/proxy-fanout.pid")"; PIDS+=("$PROXY_PID")
LAYER="$(skopeo inspect --raw --tls-verify=false "docker://$SRC/bench/big:v1" \
  | python3 -c 'import json,sys; print(max(json.load(sys.stdin)["layers"], key=lambda l: l["size"])["digest"])')"
before="$(upstream_blob_gets)"
start=$(date +%s.%N)
CURLS=()
for i in $(seq "$CLIENTS"); do
  (curl -sf "http://$P/v2/up/bench/big/blobs/$LAYER" | sha256sum >"$WORK/fanout-$i") &
  CURLS+=($!)
done
wait "${CURLS[@]}" || true
elapsed="$(echo "$(date +%s.%N) - $start" | bc -l)"
good="$(grep -c "${LAYER#sha256:}" "$WORK"/fanout-* | awk -F: '{s+=$2} END {print s}')"
printf '%s clients x 448 MiB uncached layer: %.1f s, %s of %s got the right bytes, upstream GETs %s, proxy peak RSS %s MB\n' \
  "$CLIENTS" "$elapsed" "$good" "$CLIENTS" "$(( $(upstream_blob_gets) - before ))" "$(peak_rss_mb "$PROXY_PID")"
