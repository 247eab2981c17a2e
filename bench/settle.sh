#!/usr/bin/env bash
# Settlement benchmark: `commons settle` against the same levels 1-2 in
# DuckDB, on one generated period (1M subscribers, 10M usage rows, 20k
# sites, 10k projects by default), in one run on this machine.
#
#   bench/settle.sh [--seed N] [--subscribers N] [--usage-rows N] [--sites N] [--projects N] [--runs N]
#
# Prints each run's wall time and peak memory, the best of each, and the
# ratio; checks that both computed the same general fund, provider and
# operator accounts to the µCC. Data goes to bench/data/ (regenerated when
# the shape changes), DuckDB into its own virtual environment bench/.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
gen_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --seed|--subscribers|--usage-rows|--sites|--projects) gen_args+=("$1" "$2"); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

shape=$(printf '%s_' seed1 "${gen_args[@]}" | tr -c 'a-z0-9_' '_')
data=bench/data/period_$shape
cargo build --release --locked -q -p commons -p scenario --example generate
if [ ! -f "$data/usage.csv" ]; then
  echo "generating $data ${gen_args[*]}" >&2
  rm -rf "$data"
  target/release/examples/generate "$data" "${gen_args[@]}"
fi

if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c 'import duckdb' 2>/dev/null; then
  echo "installing DuckDB into bench/.venv" >&2
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q duckdb
fi

echo "input: $(du -sh "$data" | cut -f1) in $data; $(wc -l < "$data/usage.csv") usage lines, $(wc -l < "$data/subscriptions.csv") subscription lines; $(nproc) cores"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
commons_best=; duckdb_best=
for run in $(seq "$runs"); do
  /usr/bin/time -f '%e %M' -o "$tmp/commons.time" target/release/commons settle --scenario "$data" --json > "$tmp/commons.json"
  read -r c_s c_kib < "$tmp/commons.time"
  bench/.venv/bin/python bench/duckdb_settle.py "$data" > "$tmp/duckdb.json" 2> "$tmp/duckdb.err"
  d_s=$(sed -E 's/.*: ([0-9.]+) s, peak ([0-9]+) MiB/\1/' "$tmp/duckdb.err")
  d_mib=$(sed -E 's/.*: ([0-9.]+) s, peak ([0-9]+) MiB/\2/' "$tmp/duckdb.err")
  printf 'run %d: commons settle %6.2f s (peak %5d MiB)   duckdb %6.2f s (peak %5d MiB)\n' "$run" "$c_s" $((c_kib / 1024)) "$d_s" "$d_mib"
  commons_best=$(python3 -c "print(min(x for x in [$c_s, ${commons_best:-1e9}]))")
  duckdb_best=$(python3 -c "print(min(x for x in [$d_s, ${duckdb_best:-1e9}]))")
done

python3 - "$tmp/commons.json" "$tmp/duckdb.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))["accounts"]
theirs = {k: v for k, v in json.load(open(sys.argv[2]))["accounts"].items() if not k.startswith("developer-cut:")}
level2 = {k: v for k, v in ours.items() if k == "general-fund" or k.startswith(("provider:", "operator:"))}
if level2 != theirs:
    diff = sorted(set(level2.items()) ^ set(theirs.items()))[:5]
    sys.exit(f"MISMATCH between commons and duckdb level 1-2 accounts, e.g. {diff}")
print(f"check: {len(theirs)} general fund, provider and operator accounts equal to the µCC")
PY
python3 -c "print(f'best: commons settle {$commons_best:.2f} s, duckdb {$duckdb_best:.2f} s; duckdb / commons = {$duckdb_best / $commons_best:.2f}x')"
