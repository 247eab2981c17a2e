#!/usr/bin/env bash
# Ledger benchmark, in one run on this machine:
# - durable appends of payment batches (each batch one block, committed to
#   disk) on the embedded SQLite store and on PostgreSQL, beside a plain
#   PostgreSQL table of one row per transfer inserted in the same batches
#   (row by row, and as one INSERT per batch);
# - reading the store back (every block re-checked);
# - verifying an export offline.
#
#   bench/ledger.sh [--transfers N] [--batch N] [--database URL]
#
# PostgreSQL: the local server (postgres://postgres@127.0.0.1:5432/test) by
# default; the benchmark works in a fresh schema and drops it.
set -euo pipefail
cd "$(dirname "$0")/.."
transfers=2000000
batch=10000
database=postgres://postgres@127.0.0.1:5432/test
while [ $# -gt 0 ]; do
  case "$1" in
    --transfers) transfers=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --database) database=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release --locked -q -p store --example ledger_bench -p ledger --example verify_bench
echo "$(nproc) cores; $(psql "$database" -Atc 'show server_version' 2>/dev/null | sed 's/^/PostgreSQL /'), synchronous_commit=$(psql "$database" -Atc 'show synchronous_commit' 2>/dev/null)"
target/release/examples/ledger_bench --transfers "$transfers" --batch "$batch" --database "$database"
target/release/examples/verify_bench "$transfers" "$batch"
