#!/usr/bin/env bash
# Scale of a reseller's consolidated bill (issue 12): every customer of a reseller interleaved
# in one file, so one snapshot spreads over thousands of partitions.
#
# For each case CUSTOMERS:MB (default "3000:300 20000:1000") generates a consolidated zip of
# about MB megabytes of CSV with that many customers (`billpipe generate --customers`), and a
# single-account file of the same bytes (the same generator, one customer, as many rows), runs
# `billpipe run` on each into a fresh local lake under /usr/bin/time -v, and prints MB of CSV,
# seconds, MB/s, peak RSS, and whether every customer's partition (rows and BilledCost, exact)
# equals the generator's totals (read back with `billpipe totals --json`).
#
# Usage: scripts/reseller-scale.sh [BINARY]   (default target/release/billpipe, built if absent)
# After each consolidated load, the month is delivered again without its last 100 customers
# (SCALE_DROPPED) and loaded into the same lake, which must then equal the new bill exactly.
# After the rounds of a case, a run with nothing to load is timed ("next run") on the last
# re-delivered lake: it frees the files the re-delivery replaced, which a local lake leaves to
# the next run (`src/store/set_aside.rs`).
#
# The three loads of a case (consolidated, re-delivered, single account) run in SCALE_ROUNDS
# rounds (default 3), one after the other within a round, and the case ends with the ratio of
# each consolidated throughput to the single-account throughput *of the same round*, and their
# median: on this project's VMs the same run's wall time varies by 20-30 % within minutes (CPU
# and disk shared with other machines), so only loads measured side by side compare.
# Env: SCALE_CASES="3000:300 20000:1000", SCALE_ROUNDS=3, SCALE_DIR=reseller-work (removed case
# by case).
# Needs: python3, /usr/bin/time (Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/billpipe}
[ -x "$bin" ] || cargo build --release -q
cases=${SCALE_CASES:-"3000:300 20000:1000"}
work=${SCALE_DIR:-reseller-work}
month=2025-11 # 30 days
reseller=500000000009
DROPPED=${SCALE_DROPPED:-100} # customers left out of the re-delivered consolidated bill
rounds=${SCALE_ROUNDS:-3}
mkdir -p "$work"

# Bytes per row of the detail bill, from a probe.
rm -rf "$work/probe" && mkdir -p "$work/probe"
bpr=$("$bin" generate --month $month --account $reseller --customers 1 --rows-per-day 20000 \
  --through-day 1 --out-dir "$work/probe" | awk 'NR==1 {print int($(NF-2) / $(NF-4))}')
rm -rf "$work/probe"

# Each measurement loads into a new lake folder, and the lakes are removed only at the end: on
# ext4 without a journal (this project's VMs) creating a file scans past every inode freed in the
# last minute or more (`recently_deleted` in the kernel), so deleting the last lake's 20,000 files
# just before a run made its file creation several times slower than on a machine that deletes
# nothing (a nightly run). Rerunning the script within minutes of its last run still pays it.
lakes=0
trap 'rm -rf "$work"/lake-*' EXIT
measure() { # label, csv bytes, totals file, source dir [keep: load into the last lake]
  local label=$1 bytes=$2 totals=$3 src=$4 keep=${5:-}
  [ -n "$keep" ] || lakes=$((lakes + 1))
  local lake="$work/lake-$lakes" log="$work/time.log"
  sync
  /usr/bin/time -v "$bin" run --source "$src" --dest "$lake" --report "$work/report.json" \
    > "$work/run.out" 2> "$log" || { cat "$work/run.out" "$log"; echo "$label: run failed"; return 1; }
  "$bin" totals --dest "$lake" --month $month --json > "$work/totals.json"
  python3 - "$label" "$bytes" "$log" "$totals" "$work/totals.json" "$work/seconds.txt" <<'PY'
import json, re, sys
from decimal import Decimal
label, nbytes, log, gen, lake, seconds = sys.argv[1:]
text = open(log).read()
wall = text.split("Elapsed (wall clock) time (h:mm:ss or m:ss): ")[1].split()[0]
secs = 0.0
for part in wall.split(":"):
    secs = secs * 60 + float(part)
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
want = {}
for line in open(gen):
    m = re.match(r"customer (\S+): (\d+) rows, BilledCost sum (\S+)", line)
    if m:
        want[m.group(1)] = (int(m.group(2)), Decimal(m.group(3)))
got = {r["billing_account_id"]: (r["rows"], Decimal(r["billed_cost"] or "0"))
       for r in json.load(open(lake))}
exact = got == want and len(want) > 0
mb = int(nbytes) / 1e6
print(f"{label:<28} {mb:8.0f} MB CSV {secs:7.1f} s {mb / secs:7.1f} MB/s "
      f"peak RSS {rss_kb / 1024:6.0f} MB  partitions {len(got):6d}  exact: {'yes' if exact else 'no'}")
with open(seconds, "a") as out:
    out.write(f"{mb / secs}\n")
PY
}

for case in $cases; do
  customers=${case%%:*}
  mb=${case#*:}
  rpd=$(( (mb * 1000000 / bpr / 30 + customers / 2) / customers ))
  [ "$rpd" -ge 1 ] || rpd=1
  left=$((customers - DROPPED))
  # The three sources: the consolidated bill; the same folder plus the month re-delivered
  # without the last $DROPPED customers, other numbers (another seed, so another object name,
  # delivered later); one account with as many rows. The generator's totals of each are kept.
  rm -rf "$work"/src-* && mkdir -p "$work/src-c" "$work/src-s"
  "$bin" generate --month $month --account $reseller --customers "$customers" --rows-per-day $rpd \
    --seed 12 --out-dir "$work/src-c" > "$work/gen-c.txt"
  cp -r "$work/src-c" "$work/src-r"
  if [ "$left" -ge 1 ]; then
    "$bin" generate --month $month --account $reseller --customers $left --rows-per-day $rpd \
      --seed 13 --out-dir "$work/src-r" > "$work/gen-r.txt"
  fi
  "$bin" generate --month $month --account $reseller --customers 1 \
    --rows-per-day $((rpd * customers)) --seed 12 --out-dir "$work/src-s" > "$work/gen-s.txt"
  bytes() { awk 'NR==1 {print $(NF-2)}' "$1"; }
  rm -f "$work/seconds.txt"
  for round in $(seq "$rounds"); do
    echo "round $round of $rounds, $customers customers"
    measure "consolidated ($customers customers)" "$(bytes "$work/gen-c.txt")" "$work/gen-c.txt" "$work/src-c"
    # The lake must then equal the new bill exactly: those customers' partitions gone, every
    # other one replaced.
    if [ "$left" -ge 1 ]; then
      measure "re-delivered ($left left)" "$(bytes "$work/gen-r.txt")" "$work/gen-r.txt" "$work/src-r" keep
      redelivered=$work/lake-$lakes
    else
      echo "0" >> "$work/seconds.txt"
    fi
    measure "single (1 customer)" "$(bytes "$work/gen-s.txt")" "$work/gen-s.txt" "$work/src-s"
  done
  # The files a re-delivery replaced are freed by the next run (`store::set_aside`): one with
  # nothing to load shows what that costs when nothing overlaps it. Timed after the rounds: on
  # ext4 without a journal, inodes freed within the last minute or more slow the file creation
  # of the next consolidated load (see above), which a nightly run a day later does not see.
  if [ "$left" -ge 1 ]; then
    /usr/bin/time -f "%e" -o "$work/next.time" "$bin" run --source "$work/src-r" \
      --dest "$redelivered" > "$work/run.out" 2>&1 || { cat "$work/run.out"; exit 1; }
    echo "next run (nothing to load; frees what the last re-delivery replaced): $(cat "$work/next.time") s"
  fi
  python3 - "$work/seconds.txt" "$customers" <<'PY'
import statistics, sys
rates = [float(x) for x in open(sys.argv[1])]
rounds = [rates[i:i + 3] for i in range(0, len(rates), 3)]
for k, name in ((0, "consolidated"), (1, "re-delivered")):
    ratios = [r[k] / r[2] for r in rounds if r[k] > 0]
    if ratios:
        print(f"{sys.argv[2]} customers, {name} / single-account throughput by round: "
              + " ".join(f"{x:.0%}" for x in ratios) + f"; median {statistics.median(ratios):.0%}")
PY
done
rm -rf "$work"/src-*
