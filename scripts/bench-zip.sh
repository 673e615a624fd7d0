#!/usr/bin/env bash
# Peak memory while loading a ~1 GB (uncompressed) CSV that arrives as a zip member: the zip is
# spilled to disk and its member streamed, so RSS should stay near the plain-CSV figure.
# Reuses the CSV of scripts/bench.sh (run that first, or set BENCH_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${BENCH_DIR:-bench-work}
cargo build --release -q
csv=$(ls "$work"/src/*.CSV | head -1)
mkdir -p "$work/zipsrc"
zipobj="$work/zipsrc/$(basename "$csv")"   # a FOCUS name, zip content: recognised by magic bytes
if [ ! -s "$zipobj" ]; then
  python3 - "$csv" "$zipobj" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    z.write(sys.argv[1], "bill/part-1.csv")
PY
fi
rm -rf "$work/lake-zip"
/usr/bin/time -v target/release/billpipe run -q --source "$work/zipsrc" --dest "$work/lake-zip" 2> "$work/zip.time" || true
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$work/zip.time")
rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/zip.time")
echo "zip object: $(stat -c %s "$zipobj") bytes holding $(stat -c %s "$csv") bytes of CSV"
python3 -c "import sys; w=float(sys.argv[1]); r=int(sys.argv[2]); b=int(sys.argv[3]); print(f'{w:.2f} s, {b/1e6/w:.1f} MB/s of CSV, peak RSS {r/1024:.0f} MB')" "$wall" "$rss" "$(stat -c %s "$csv")"
