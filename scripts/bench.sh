#!/usr/bin/env bash
# Benchmark: billpipe vs DuckDB on the same job, same machine, same run.
#
# Generates a realistic Tencent FOCUS monthly file of about BENCH_MB megabytes (default 1000),
# then times `billpipe run` (local folder -> local lake) and DuckDB (CSV -> typed, zstd,
# Hive-partitioned Parquet with the same types and partition rule), each under /usr/bin/time -v,
# and prints throughput (MB/s of CSV input), peak RSS and the ratio. Both lakes' BilledCost sums
# are compared, so a fast wrong answer cannot pass.
#
# Needs: python3 with duckdb (pip install duckdb), /usr/bin/time (Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${BENCH_MB:-1000}
work=${BENCH_DIR:-bench-work}
python3 -c 'import duckdb' 2>/dev/null || pip install -q duckdb
cargo build --release -q
bin=target/release/billpipe

mkdir -p "$work/src"
csv=$(ls "$work"/src/*.CSV 2>/dev/null | head -1 || true)
if [ -z "$csv" ] || [ "$(stat -c %s "$csv")" -lt $((mb * 900000)) ] || [ "$(stat -c %s "$csv")" -gt $((mb * 1100000)) ]; then
  rm -rf "$work/src" && mkdir -p "$work/src"
  "$bin" generate --month 2025-12 --target-mb "$mb" --seed 11 --out-dir "$work/src"
  csv=$(ls "$work"/src/*.CSV | head -1)
fi
bytes=$(stat -c %s "$csv")
echo "input: $csv ($bytes bytes)"

measure() { # name, command...
  local name=$1; shift
  local log="$work/$name.time"
  sync
  /usr/bin/time -v "$@" > "$work/$name.out" 2> "$log" || {
    code=$?; [ "$code" -eq 3 ] || { cat "$log"; exit 1; }
  }
  local wall rss cpu
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {print s}' "$log")
  echo "$name $wall $rss cpu=$cpu"
}

# Each tool runs ${BENCH_RUNS:-3} times into a fresh lake, alternating; the median wall time and the
# highest peak RSS are reported (this machine class shows +-15% run-to-run noise). billpipe runs
# twice per round: with the pipeline's conformance rules (the tencent profile, as in production)
# and with every rule off (`--profile off`), which gives the cost of validation.
runs=${BENCH_RUNS:-3}
bp=(); bo=(); dd=()
for i in $(seq 1 "$runs"); do
  rm -rf "$work/lake-billpipe" "$work/lake-billpipe-off" "$work/lake-duckdb"
  bp+=("$(measure billpipe "$bin" run -q --source "$work/src" --dest "$work/lake-billpipe")")
  bo+=("$(measure billpipe-off "$bin" run -q --profile off --source "$work/src" --dest "$work/lake-billpipe-off")")
  dd+=("$(measure duckdb python3 bench/duckdb_job.py schemas/focus-1.1.toml "$csv" "$work/lake-duckdb")")
done
pick() { printf '%s\n' "$@" | awk '{print $2, $3}' | sort -n | awk '{w[NR]=$1; if ($2>r) r=$2} END {print w[int((NR+1)/2)], r}'; }
read -r bp_wall bp_rss < <(pick "${bp[@]}")
read -r dd_wall dd_rss < <(pick "${dd[@]}")
read -r bo_wall bo_rss < <(pick "${bo[@]}")
echo "billpipe runs (s, KB, CPU s): ${bp[*]}"
echo "billpipe, rules off (s, KB, CPU s): ${bo[*]}"
echo "duckdb runs   (s, KB, CPU s): ${dd[*]}"

python3 - "$bytes" "$bp_wall" "$bp_rss" "$dd_wall" "$dd_rss" "$work" "$bo_wall" "$bo_rss" <<'PY'
import sys, duckdb
size, bw, br, dw, dr, work = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
ow, orss = float(sys.argv[7]), int(sys.argv[8])
mb = size / 1e6
con = duckdb.connect()
def total(lake):
    return con.execute(f"select count(*), sum(BilledCost) from read_parquet('{lake}/billing_period=*/**/*.parquet', hive_partitioning=true, union_by_name=true)").fetchone()
tb, td, to = total(f"{work}/lake-billpipe"), total(f"{work}/lake-duckdb"), total(f"{work}/lake-billpipe-off")
print(f"{'':14} {'seconds':>8} {'MB/s':>8} {'peak RSS MB':>12}")
print(f"{'billpipe':14} {bw:8.2f} {mb/bw:8.1f} {br/1024:12.0f}")
print(f"{'billpipe off':14} {ow:8.2f} {mb/ow:8.1f} {orss/1024:12.0f}")
print(f"{'duckdb':14} {dw:8.2f} {mb/dw:8.1f} {dr/1024:12.0f}")
print(f"validation cost: {100*(bw-ow)/ow:+.1f}% wall time (rules on {bw:.2f} s vs off {ow:.2f} s)")
if to != tb:
    sys.exit(f"the profile changed the lake's totals: {tb} vs rules off {to}")
print(f"throughput ratio billpipe/duckdb: {dw/bw:.2f}x; peak RSS ratio: {br/dr:.2f}")
print(f"rows, BilledCost: billpipe {tb}  duckdb {td}")
if tb != td:
    sys.exit("totals differ between billpipe and DuckDB")
PY
