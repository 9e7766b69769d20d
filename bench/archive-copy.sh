#!/usr/bin/env bash
# Carries a 1 GiB two-platform image (an OCI index over two 512 MiB images,
# layers of 320 and 192 MiB each) through an OCI archive, with detour and with
# `skopeo copy --all --preserve-digests`, in the same run:
#   write: registry -> oci-archive file
#   read:  oci-archive file -> a fresh registry
# Reports wall time and peak RSS (GNU time) of each leg and checks that every
# copy has the source index's digest.
#
#   bash bench/archive-copy.sh           # ROUNDS=2 by default
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
echo "seeding $SRC with bench/multi:v1 (two platforms, 1 GiB)..."
python3 bench/seed-registry.py "$SRC" bench/multi amd64 1:320 2:192 >/dev/null 2>&1
python3 bench/seed-registry.py "$SRC" bench/multi arm64 3:320 4:192 >/dev/null 2>&1
python3 - "$SRC" <<'PY'
import hashlib, http.client, json, sys
host = sys.argv[1]
def get(ref):
    c = http.client.HTTPConnection(host)
    c.request("GET", f"/v2/bench/multi/manifests/{ref}",
              headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse()
    return r.getheader("Content-Type"), r.read()
entries = []
for arch in ("amd64", "arm64"):
    media, body = get(arch)
    entries.append({"mediaType": media, "size": len(body),
                    "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                    "platform": {"os": "linux", "architecture": arch}})
media = "application/vnd.oci.image.index.v1+json"
index = json.dumps({"schemaVersion": 2, "mediaType": media, "manifests": entries}).encode()
c = http.client.HTTPConnection(host)
c.request("PUT", "/v2/bench/multi/manifests/v1", body=index, headers={"Content-Type": media})
assert c.getresponse().status == 201
PY
SOURCE_DIGEST="$(digest_of "$SRC/bench/multi:v1")"
IMAGE="$SRC/bench/multi:v1"

timed() { /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >/dev/null; cat "$WORK/time"; }

printf '%-6s %-7s %-6s %9s %12s\n' round tool leg seconds "peak RSS MB"
for round in $(seq "$ROUNDS"); do
  A="$(start_registry "detour-$round")"
  B="$(start_registry "skopeo-$round")"
  rm -f "$WORK"/*.tar
  for tool in $( (( round % 2 )) && echo "detour skopeo" || echo "skopeo detour" ); do
    if [[ $tool == detour ]]; then
      read -r w_s w_kib < <(timed "$BIN" mirror "$IMAGE" --to "oci-archive:$WORK/detour.tar" \
        --plain-http "$SRC" --allow-loopback --no-progress)
      read -r r_s r_kib < <(timed "$BIN" mirror "oci-archive:$WORK/detour.tar:$IMAGE" --to "$A/bench/multi:v1" \
        --plain-http "$A" --allow-loopback --no-progress)
      [[ "$(digest_of "$A/bench/multi:v1")" == "$SOURCE_DIGEST" ]] || { echo "detour: digest differs"; exit 1; }
    else
      export HOME="$WORK/skopeo-home-$round"
      read -r w_s w_kib < <(timed skopeo copy -q --all --preserve-digests --src-tls-verify=false \
        "docker://$IMAGE" "oci-archive:$WORK/skopeo.tar:bench")
      read -r r_s r_kib < <(timed skopeo copy -q --all --preserve-digests --dest-tls-verify=false \
        "oci-archive:$WORK/skopeo.tar:bench" "docker://$B/bench/multi:v1")
      [[ "$(digest_of "$B/bench/multi:v1")" == "$SOURCE_DIGEST" ]] || { echo "skopeo: digest differs"; exit 1; }
    fi
    printf '%-6s %-7s %-6s %9s %12.1f\n' "$round" "$tool" write "$w_s" "$(echo "$w_kib/1024" | bc -l)"
    printf '%-6s %-7s %-6s %9s %12.1f\n' "$round" "$tool" read "$r_s" "$(echo "$r_kib/1024" | bc -l)"
  done
  echo "archive sizes: $(stat -c '%n %s' "$WORK"/*.tar | sed "s|$WORK/||" | tr '\n' ' ')"
  stop_registry "detour-$round"
  stop_registry "skopeo-$round"
done
