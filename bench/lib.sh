# Shared by the registry benchmarks: a work directory removed on exit, local
# docker-registry instances on free loopback ports, and a manifest digest.
# Source it after `cd` to the repository root.
WORK="$(mktemp -d /var/tmp/detour-bench.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_registry NAME -> prints host:port; storage under $WORK/NAME
# (ACCESS_LOG=1: requests logged to $WORK/NAME.log)
start_registry() {
  local name="$1" port quiet=true
  [[ "${ACCESS_LOG:-0}" == 1 ]] && quiet=false
  port="$(free_port)"
  mkdir -p "$WORK/$name/storage"
  cat >"$WORK/$name/config.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: $quiet}}
storage: {filesystem: {rootdirectory: $WORK/$name/storage}, delete: {enabled: true}}
http: {addr: "127.0.0.1:$port", secret: bench}
YAML
  docker-registry serve "$WORK/$name/config.yml" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  echo $! >"$WORK/$name.pid"
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.05
  done
  echo "127.0.0.1:$port"
}

stop_registry() {
  kill "$(cat "$WORK/$1.pid")" 2>/dev/null || true
  rm -rf "$WORK/$1"
}

digest_of() { skopeo inspect --raw --tls-verify=false "docker://$1" | sha256sum | cut -d' ' -f1; }
