#!/usr/bin/env bash
# Confinement's cost, in one run, all on 127.0.0.1: the same app (nginx
# serving a 1 KiB file, bench/apps/static) deployed on two `commons up`,
# one confining its apps (the default: own user, namespaces, cgroup,
# seccomp, reached inside its network namespace) and one `--unconfined`,
#   1. requests/s through each gateway (wrk, saturated, keep-alive), the
#      two back to back in each round (order reversed every other round);
#   2. how long an instance takes to start (install, start, first healthy
#      answer), confined and unconfined alternating (crates/runtime's
#      example start_time: a deploy's own time is the control loop's ticks).
#
#   bench/confinement.sh [--duration 5s] [--connections 64]    # ROUNDS=8 STARTS=15
#
# Needs root, bubblewrap, nginx and wrk (apt-get install bubblewrap nginx wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=5s
connections=64
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
for tool in nginx wrk bwrap; do command -v $tool >/dev/null || { echo "$tool is missing: apt-get install nginx wrk bubblewrap" >&2; exit 1; }; done
cargo build --release --locked -q -p commons

work=$(mktemp -d)
chmod 711 "$work"   # the apps' own users pass through it (see README, Confinement)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT
commons=target/release/commons
declare -A listen=([confined]=9303 [unconfined]=9304)
declare -A control=([confined]=9313 [unconfined]=9314)
declare -A internal=([confined]=9323 [unconfined]=9324)
for mode in confined unconfined; do
  data="$work/data-$mode"
  mkdir -p "$data"
  $commons --data "$data" node add n1 --provider bench >/dev/null
  flag=(); [ $mode = unconfined ] && flag=(--unconfined)
  # A session of its own, as a service runs (see bench/gateway.sh).
  COMMONS_LOG=warn setsid $commons --data "$data" up "${flag[@]}" --listen 127.0.0.1:${listen[$mode]} \
    --control-listen 127.0.0.1:${control[$mode]} --internal-listen 127.0.0.1:${internal[$mode]} 2>"$work/$mode.log" & pids+=($!)
done
sleep 1.5
version=0
deploy() { # mode → seconds the deploy took
  version=$((version + 1))
  local app="$work/static-$1-$version"
  cp -r bench/apps/static "$app"
  sed -i "s/^version = .*/version = \"1.0.$version\"/" "$app/commons.toml"
  local start; start=$(date +%s%N)
  $commons --data "$work/data-$1" deploy files --operator bench --anonymous --node n1 --app "$app" >/dev/null
  echo "scale=3; ($(date +%s%N) - $start) / 1000000000" | bc
}
deploy confined >/dev/null; deploy unconfined >/dev/null
run() { # mode
  wrk -t2 -c"$connections" -d"$duration" --latency -H "Host: files.commons.localhost" "http://127.0.0.1:${listen[$1]}/index.html" \
    | awk -v name="$1" '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF}
        END {printf "%-12s %12.0f req/s   p50 %8s   p99 %8s%s\n", name, rps, p50, p99, (bad ? "   NON-2xx: " bad : "")}' \
    | tee -a "$work/$1.rps"
}
echo "$(nproc) cores; nginx $(nginx -v 2>&1 | sed 's/.*\///'); bubblewrap $(bwrap --version | cut -d' ' -f2); wrk -t2 -c$connections -d$duration; 1 KiB responses through the gateway (metering on)"
rounds=${ROUNDS:-8}
echo "-- throughput (saturated), $rounds rounds"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then run confined; run unconfined; else run unconfined; run confined; fi
done
rates() { awk '{for(i=1;i<=NF;i++) if($i=="req/s") print $(i-1)}' "$1" | paste -sd,; }
python3 - "$(rates "$work/confined.rps")" "$(rates "$work/unconfined.rps")" <<'PY'
import statistics, sys
confined, unconfined = ([float(x) for x in arg.split(",")] for arg in sys.argv[1:3])
rounds = [c / u for c, u in zip(confined, unconfined)]
print("confined / unconfined per round: " + ", ".join(f"{r:.2f}" for r in rounds)
      + f"; median {statistics.median(rounds):.2f}x")
PY
echo "-- instance start"
cargo run --release --locked -q -p runtime --example start_time -- "${STARTS:-15}"
