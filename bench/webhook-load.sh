#!/usr/bin/env bash
# Load benchmark of `detour serve` (release build) over TLS with keep-alive,
# driven by oha on 127.0.0.1, against a ceiling: bench/ceiling.rs, the same
# TLS listener, runtime and body reading answering a constant AdmissionReview.
# For a 3-container and a 60-container Pod it alternates detour and the
# ceiling at full load (ROUNDS each) and prints detour's requests/s as a ratio
# of the ceiling's; then p50/p99 at a fixed rate, and detour's peak RSS. A
# third server in each round, the ceiling answering detour's own answer, shows
# how much of the gap is the larger answer rather than detour's work.
#
#   cargo install oha --locked     # once
#   bash bench/webhook-load.sh     # DURATION=6 ROUNDS=3 RATE=2000 CONNECTIONS=16 to change
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"
DURATION="${DURATION:-6}"
ROUNDS="${ROUNDS:-3}"
RATE="${RATE:-2000}"
CONNECTIONS="${CONNECTIONS:-16}"
command -v oha >/dev/null || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }

cargo build --release --quiet --bin detour --example ceiling
BIN="$CARGO_TARGET_DIR/release/detour"
CEILING_BIN="$CARGO_TARGET_DIR/release/examples/ceiling"
WORK="$(mktemp -d)"
trap 'kill "$PID" "$CEILING" "${SAME[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$BIN" certs --out "$WORK/tls" --ip 127.0.0.1 >/dev/null
# Bodies shaped like the recorded apiserver request, with N containers each.
python3 - "$WORK" <<'PY'
import json, sys, copy
work = sys.argv[1]
base = json.load(open("tests/fixtures/kube-apiserver-v1.19-pod-create.json"))
images = ["registry.k8s.io/ingress-nginx/controller:v1.9.4", "nginx:1.25", "quay.io/prometheus/node-exporter:v1.7.0",
          "k8s.gcr.io/pause:3.1", "ghcr.io/org/tool:2", "registry.k8s.io/coredns/coredns:v1.11.1"]
for n in (3, 60):
    r = copy.deepcopy(base)
    template = r["request"]["object"]["spec"]["containers"][0]
    containers = []
    for i in range(n):
        c = copy.deepcopy(template)
        c["name"] = f"c{i}"
        c["image"] = images[i % len(images)]
        containers.append(c)
    r["request"]["object"]["spec"]["containers"] = containers
    json.dump(r, open(f"{work}/pod-{n}.json", "w"))
PY

PORT=18443; ADMIN=18080; CEILING_PORT=18444
"$CEILING_BIN" "$WORK/tls" 127.0.0.1:$CEILING_PORT &
CEILING=$!
SAME=()
"$BIN" serve --cert-dir "$WORK/tls" --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$ADMIN \
  --shutdown-delay 0s --log-format json 2>"$WORK/detour.log" &
PID=$!
# Waits until a POST to PORT's /mutate is answered (any server here).
wait_mutate() { for _ in $(seq 100); do curl -sfk -o /dev/null -X POST -d '{}' "https://127.0.0.1:$1/mutate" && return; sleep 0.1; done; }
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
wait_mutate "$CEILING_PORT"
# A diagnostic third server per body: the ceiling answering detour's own answer
# to that body, so that the cost of the larger answer (for the server and for
# oha) is told apart from detour's work.
for n in 3 60; do
  curl -sfk -H 'Content-Type: application/json' --data-binary @"$WORK/pod-$n.json" \
    "https://127.0.0.1:$PORT/mutate" > "$WORK/answer-$n.json"
  "$CEILING_BIN" "$WORK/tls" 127.0.0.1:$((18444 + n)) "$WORK/answer-$n.json" &
  SAME+=($!)
done
for n in 3 60; do
  wait_mutate $((18444 + n))
done

run() { # label, port, extra oha args...
  local label=$1 port=$2; shift 2
  local out="$WORK/run-$((++RUNS)).json"
  # -w: requests still in flight at the deadline are awaited, not counted as errors.
  oha --no-tui --output-format json -z "${DURATION}s" -c "$CONNECTIONS" -w -m POST \
    -H 'Content-Type: application/json' --insecure "$@" "https://127.0.0.1:$port/mutate?timeout=5s" > "$out"
  python3 - "$out" "$label" "$WORK/results.tsv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
errors = sum(r.get("errorDistribution", {}).values())
ok = codes.get("200", 0)
failures = errors + sum(v for k, v in codes.items() if k != '200')
print(f"| {sys.argv[2]} | {s['requestsPerSec']:.0f} | {p['p50']*1000:.3f} | {p['p99']*1000:.3f} | {ok} | {failures} |")
with open(sys.argv[3], "a") as f:
    f.write(f"{sys.argv[2]}\t{s['requestsPerSec']}\n")
PY
}

RUNS=0
echo "| run | requests/s | p50 ms | p99 ms | 200s | failures |"
echo "|---|---|---|---|---|---|"
for n in 3 60; do
  for round in $(seq "$ROUNDS"); do
    # Alternate which server goes first, so that drift on a shared VM
    # does not favour one of them.
    if (( round % 2 )); then order="detour ceiling same-answer"; else order="same-answer ceiling detour"; fi
    for server in $order; do
      case $server in
        detour) port=$PORT ;;
        ceiling) port=$CEILING_PORT ;;
        same-answer) port=$((18444 + n)) ;;
      esac
      run "$n containers, $server, full load, round $round" "$port" -D "$WORK/pod-$n.json"
    done
  done
done
for n in 3 60; do
  run "$n containers, detour, fixed ${RATE}/s" "$PORT" -D "$WORK/pod-$n.json" -q "$RATE"
  run "$n containers, ceiling, fixed ${RATE}/s" "$CEILING_PORT" -D "$WORK/pod-$n.json" -q "$RATE"
done
echo
python3 - "$WORK/results.tsv" <<'PY'
import sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, rps = line.rstrip("\n").split("\t")
    if "full load" in label:
        n, server = label.split(", ")[:2]
        runs[(n, server)].append(float(rps))
for n in ("3 containers", "60 containers"):
    d, c, a = runs[(n, "detour")], runs[(n, "ceiling")], runs[(n, "same-answer")]
    md, mc, ma = sum(d) / len(d), sum(c) / len(c), sum(a) / len(a)
    print(f"{n}: detour {md:.0f}/s, ceiling {mc:.0f}/s, ratio {md / mc:.2f} "
          f"(per round: {', '.join(f'{x / y:.2f}' for x, y in zip(d, c))}); "
          f"diagnostic: the ceiling answering detour's answer {ma:.0f}/s ({ma / mc:.2f} of the ceiling), "
          f"detour {md / ma:.2f} of that")
PY
# detour's own time per admission (read body, decide, answer), from its histogram.
curl -s "http://127.0.0.1:$ADMIN/metrics" | python3 -c '
import sys
buckets = [(float(l.split("le=\"")[1].split("\"")[0]), float(l.split()[-1])) for l in sys.stdin if l.startswith("detour_admission_duration_seconds_bucket")]
total = max(c for _, c in buckets)
for q in (0.5, 0.99, 0.999):
    le = next(le for le, c in sorted(buckets) if c >= q * total)
    print(f"server-side p{q*100:g}: <= {le*1000:.3f} ms over {int(total)} admissions")'
echo "detour peak RSS: $(awk '/VmHWM/ {printf "%.1f MB", $2/1024}' /proc/$PID/status) (ceiling: $(awk '/VmHWM/ {printf "%.1f MB", $2/1024}' /proc/$CEILING/status))"
echo "machine: $(nproc) cores, oha on the same cores; $(oha --version)"
