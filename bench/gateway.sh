#!/usr/bin/env bash
# Gateway benchmark, in one run, all on 127.0.0.1: the same fast upstream
# (nginx serving a 1 KiB file, keep-alive) measured
#   1. directly,
#   2. through nginx as a reverse proxy (keep-alive pool to the upstream),
#   3. through `commons up` with identity (API token) + metering on,
#   4. through `commons up` with metering off,
# with wrk, saturated (throughput) and lightly loaded (latency).
#
#   bench/gateway.sh [--duration 5s] [--connections 64]    # ROUNDS=10 GATEWAY_WORKERS=N
#
# Needs nginx and wrk (apt-get install nginx wrk) and oha (cargo install
# oha --locked; installed here if missing) for latency at a fixed rate below
# saturation; prints requests/s, p50/p99 latency and the ratios.
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
for tool in nginx wrk; do command -v $tool >/dev/null || { echo "$tool is missing: apt-get install nginx wrk" >&2; exit 1; }; done
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || cargo install oha --locked
cargo build --release --locked -q -p commons

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  pkill -f -- "--data $work/data-" 2>/dev/null || true
  for conf in origin proxy; do nginx -p "$work" -c $conf.conf -s stop 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/www" "$work/logs"
chmod 755 "$work"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/index.html"
# Two nginx processes, so that each proxy under test is its own process in
# front of the same origin process: the origin serves the file, the other
# proxies to it.
cat > "$work/origin.conf" <<NGINX
worker_processes auto;
pid $work/origin.pid;
error_log $work/logs/origin.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:9201; root $work/www; location / { } }
}
NGINX
cat > "$work/proxy.conf" <<NGINX
worker_processes auto;
pid $work/proxy.pid;
error_log $work/logs/proxy.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:9201; keepalive 256; }
  server {
    listen 127.0.0.1:9202;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
NGINX
nginx -p "$work" -c origin.conf
nginx -p "$work" -c proxy.conf

commons=target/release/commons
for mode in on off; do
  data="$work/data-$mode"
  mkdir -p "$data"
  # GATEWAY_WORKERS=N overrides the gateway's default (one per core).
  [ -n "${GATEWAY_WORKERS:-}" ] && echo "workers = $GATEWAY_WORKERS" >> "$data/commons.toml"
  # GATEWAY_PRIORITY=N overrides the workers' nice value (default -5).
  [ -n "${GATEWAY_PRIORITY:-}" ] && echo "priority = $GATEWAY_PRIORITY" >> "$data/commons.toml"
  $commons --data "$data" project add bench >/dev/null
  $commons --data "$data" site add bench --upstream 127.0.0.1:9201 --operator bench --project bench --provider bench >/dev/null
  $commons --data "$data" token add benchuser > "$data.token"
done
# Each gateway in a session of its own, as a service runs (nginx does the
# same when it daemonizes): with the kernel's autogroup scheduling, a
# process left in this script's session would share one CPU share with
# wrk, while each nginx has a share of its own.
COMMONS_LOG=warn setsid $commons --data "$work/data-on" up --listen 127.0.0.1:9203 --control-listen 127.0.0.1:9213 --internal-listen 127.0.0.1:9223 2>"$work/logs/on.log" & pids+=($!)
COMMONS_LOG=warn setsid $commons --data "$work/data-off" up --listen 127.0.0.1:9204 --control-listen 127.0.0.1:9214 --internal-listen 127.0.0.1:9224 --no-metering 2>"$work/logs/off.log" & pids+=($!)
sleep 1.5

run() { # name port token connections threads
  local auth=()
  [ -n "$3" ] && auth=(-H "Authorization: Bearer $3")
  wrk -t"$5" -c"$4" -d"$duration" --latency -H "Host: bench.commons.localhost" "${auth[@]}" "http://127.0.0.1:$2/index.html" \
    | awk -v name="$1" '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF}
        END {printf "%-34s %12.0f req/s   p50 %8s   p99 %8s%s\n", name, rps, p50, p99, (bad ? "   NON-2xx: " bad : "")}'
}
token_on=$(cat "$work/data-on.token"); token_off=$(cat "$work/data-off.token")
echo "$(nproc) cores; nginx $(nginx -v 2>&1 | sed 's/.*\///'); wrk -t2 -c$connections -d$duration; 1 KiB responses; gateway workers: ${GATEWAY_WORKERS:-default}, priority: ${GATEWAY_PRIORITY:-default}"
rounds=${ROUNDS:-10}
echo "-- throughput (saturated), $rounds rounds, each the three proxies back to back (order reversed every other round)"
nginx_run() { run "nginx reverse proxy" 9202 "" "$connections" 2 | tee -a "$work/nginx"; }
on_run() { run "commons gateway, metering on" 9203 "$token_on" "$connections" 2 | tee -a "$work/on"; }
off_run() { run "commons gateway, metering off" 9204 "$token_off" "$connections" 2 | tee -a "$work/off"; }
run "upstream direct" 9201 "" "$connections" 2
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then nginx_run; on_run; off_run; else off_run; on_run; nginx_run; fi
done
run "upstream direct" 9201 "" "$connections" 2
rate=${RATE:-2000}
echo "-- latency below saturation (oha: $rate requests/s for ${LATENCY_DURATION:-15s}, 8 connections, corrected for coordinated omission)"
latency() { # name port token
  local auth=()
  [ -n "$3" ] && auth=(-H "Authorization: Bearer $3")
  oha -z "${LATENCY_DURATION:-15s}" -q "$rate" -c 8 --latency-correction --no-tui --output-format json \
    -H "Host: bench.commons.localhost" "${auth[@]}" "http://127.0.0.1:$2/index.html" \
    | python3 -c "import json,sys; m=json.load(sys.stdin)['metrics']; l=m['latency_ms']; print(f'{sys.argv[1]:<34} {m[\"requests_per_sec\"]:12.0f} req/s   p50 {l[\"p50\"]*1000:7.0f}us   p99 {l[\"p99\"]*1000:7.0f}us   success {m[\"success_rate\"]:.3f}')" "$1"
}
latency "upstream direct" 9201 ""
latency "nginx reverse proxy" 9202 ""
latency "commons gateway, metering on" 9203 "$token_on"
latency "commons gateway, metering off" 9204 "$token_off"
rates() { awk '{for(i=1;i<=NF;i++) if($i=="req/s") print $(i-1)}' "$1" | paste -sd,; }
python3 - "$(rates "$work/nginx")" "$(rates "$work/on")" "$(rates "$work/off")" <<'PY'
import statistics, sys
nginx, on, off = ([float(x) for x in arg.split(",")] for arg in sys.argv[1:4])
print(f"best: nginx {max(nginx):.0f}, gateway metering on {max(on):.0f}, off {max(off):.0f} req/s")
print(f"ratios: gateway (metering on) / nginx = {max(on) / max(nginx):.2f}x best against best; "
      f"metering costs {100 * (1 - max(on) / max(off)):.1f} % of throughput")
# Each round runs the proxies back to back: their ratio within a round is
# the least noisy figure on a shared machine.
rounds = [g / n for g, n in zip(on, nginx)]
print("gateway / nginx per round: " + ", ".join(f"{r:.2f}" for r in rounds)
      + f"; median {statistics.median(rounds):.2f}x")
cost = [100 * (1 - a / b) for a, b in zip(on, off)]
print(f"metering's cost per round: median {statistics.median(cost):.1f} %")
PY
curl -sk https://127.0.0.1:9213/metrics | grep -E "^commons_(metering_events|gateway_responses)_total" || true
