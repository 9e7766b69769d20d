#!/usr/bin/env bash
# Copies a 1 GiB image (4 layers: 448, 256, 192 and 128 MiB) between two local
# registries with `detour mirror` and with `skopeo copy --all`, in the same
# run, each into its own fresh registry; reports wall time, peak RSS, and the
# bytes detour sends for a second image sharing 3 of its 4 layers.
#
#   bash bench/mirror-copy.sh            # ROUNDS=2 by default
#
# Needs docker-registry, skopeo, python3 and GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"
ROUNDS="${ROUNDS:-2}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/detour"
. bench/lib.sh

SRC="$(start_registry source)"
echo "seeding $SRC with bench/big:v1 (1 GiB) and bench/big:v2 (shares 3 of 4 layers)..."
python3 bench/seed-registry.py "$SRC" bench/big v1 1:448 2:256 3:192 4:128 2>/dev/null
python3 bench/seed-registry.py "$SRC" bench/big v2 1:448 2:256 3:192 5:64 2>/dev/null
SOURCE_DIGEST="$(digest_of "$SRC/bench/big:v1")"

run_detour() { # DST -> "seconds peak_kib bytes"
  local dst="$1" out
  out="$(/usr/bin/time -f '%e %M' -o "$WORK/time" "$BIN" mirror "$SRC/bench/big:$2" --to "$dst/bench/big:$2" \
    --plain-http "$SRC" --plain-http "$dst" --allow-loopback -o json --no-progress)"
  local bytes
  bytes="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bytesCopied"])' "$out")"
  echo "$(cat "$WORK/time") $bytes"
}

run_skopeo() { # DST -> "seconds peak_kib"
  # A fresh HOME: no blob-info cache from earlier runs (it would enable mounts).
  HOME="$WORK/skopeo-home-$RANDOM" /usr/bin/time -f '%e %M' -o "$WORK/time" \
    skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false \
    "docker://$SRC/bench/big:v1" "docker://$1/bench/big:v1"
  cat "$WORK/time"
}

printf '%-6s %-7s %9s %12s %14s\n' round tool seconds "peak RSS MB" "bytes sent"
for round in $(seq "$ROUNDS"); do
  A="$(start_registry "detour-$round")"
  B="$(start_registry "skopeo-$round")"
  if (( round % 2 )); then
    read -r d_s d_kib d_bytes < <(run_detour "$A" v1)
    read -r s_s s_kib < <(run_skopeo "$B")
  else
    read -r s_s s_kib < <(run_skopeo "$B")
    read -r d_s d_kib d_bytes < <(run_detour "$A" v1)
  fi
  [[ "$(digest_of "$A/bench/big:v1")" == "$SOURCE_DIGEST" ]] || { echo "detour copy digest differs"; exit 1; }
  [[ "$(digest_of "$B/bench/big:v1")" == "$SOURCE_DIGEST" ]] || { echo "skopeo copy digest differs"; exit 1; }
  printf '%-6s %-7s %9s %12.1f %14s\n' "$round" detour "$d_s" "$(echo "$d_kib/1024" | bc -l)" "$d_bytes"
  printf '%-6s %-7s %9s %12.1f %14s\n' "$round" skopeo "$s_s" "$(echo "$s_kib/1024" | bc -l)" "-"
  echo "round $round: detour/skopeo time ratio $(echo "scale=2; $d_s/$s_s" | bc -l)"
  if (( round == ROUNDS )); then
    read -r v2_s v2_kib v2_bytes < <(run_detour "$A" v2)
    echo "shared layers: bench/big:v2 into the same mirror sent $v2_bytes bytes in ${v2_s}s (its new 64 MiB layer and config; the 896 MiB it shares: none)"
  fi
  stop_registry "detour-$round"
  stop_registry "skopeo-$round"
done
