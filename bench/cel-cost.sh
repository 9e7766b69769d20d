#!/usr/bin/env bash
# What native mode's CEL costs per variable, in the apiserver's own CEL
# environment (tests/kube/celcost): the policy `detour policy` prints for
# CONFIG (default: the shipped config) against Pods of 3 and 60 containers
# (the Pods of bench/apiserver-latency.sh), then CEL's building blocks.
#
#   bash bench/cel-cost.sh            # CONFIG=my-rules.yaml to change
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/detour-target}"
config="${CONFIG:-manifests/base/config.yaml}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd tests/kube && GOFLAGS="${GOFLAGS:-} -mod=readonly" go build -o "$work/celcost" ./celcost)
cargo build --release --locked --quiet
"$CARGO_TARGET_DIR/release/detour" policy --config "$config" -o json \
  | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["items"][0]))' > "$work/policy.json"
python3 - "$work" <<'PY'
import json, sys
for n in (3, 60):
    cs = []
    for i in range(n):
        if n == 3:
            image = ["registry.k8s.io/pause:3.9", "k8s.gcr.io/coredns:1.6.2", "docker.io/library/nginx:1.25"][i]
        elif i % 3 == 2:
            image = f"docker.io/library/nginx:1.{i}"
        else:
            image = f"registry.k8s.io/app-{i}:v1.{i}"
        cs.append({"name": f"c{i}", "image": image})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": cs}}
    json.dump(pod, open(f"{sys.argv[1]}/pod{n}.json", "w"))
PY
for n in 3 60; do
  echo "== $config, a Pod of $n containers"
  "$work/celcost" "$work/policy.json" "$work/pod$n.json"
done
echo "== building blocks, 60 times each (subtract the first line for one step)"
"$work/celcost" -e \
  "lists.range(60).map(i, i)" \
  "lists.range(60).map(i, s.indexOf('/'))" \
  "lists.range(60).map(i, s.find(r'[:@][^/]*\$'))" \
  "lists.range(60).map(i, [s].map(x, x)[0])" \
  "lists.range(60).map(i, {'a': s, 'b': s, 'c': s})"
