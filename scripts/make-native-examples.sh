#!/usr/bin/env bash
# Regenerates testdata/native: small examples of Tencent's native bill families (see the README's
# "Tencent bill families"), made with `billpipe generate --format detail` and zipped as Tencent
# delivers them. Load them with:
#   cargo run --release -- run --source testdata/native --dest lake-native
set -euo pipefail
cd "$(dirname "$0")/.."
out=testdata/native
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out" && mkdir -p "$out"
gen() { cargo run -q -- generate --format detail --rows-per-day 3 --out-dir "$tmp" "$@" >/dev/null; }
gen --account 100010445724 --month 2025-11 --through-day 7 --seed 1
gen --account 100010445724 --month 2025-11 --seed 1
gen --account 200018967974 --month 2025-11 --seed 2
gen --account 100000000001 --month 2025-11 --seed 3 --zh
gen --account 800001608331 --month 2025-11 --seed 4
python3 - "$tmp" "$out" <<'PY'
import sys, zipfile, os
tmp, out = sys.argv[1], sys.argv[2]
def z(name, members):
    with zipfile.ZipFile(os.path.join(out, name), "w", zipfile.ZIP_DEFLATED) as f:
        for arc, src in members:
            f.write(os.path.join(tmp, src), arc)
# legacy daily (days 1-7, delivered on the 8th) and the monthly split into 3 CSVs
z("100010445724-20251108-by_used_time-bill_details.zip", [("100010445724-20251108.csv", "100010445724-20251107-detail.csv")])
lines = open(os.path.join(tmp, "100010445724-202511-detail.csv"), encoding="utf-8").read().split("\n")
header, rows = lines[0], [l for l in lines[1:] if l]
third = (len(rows) + 2) // 3
for i in range(3):
    with open(os.path.join(tmp, f"part{i+1}.csv"), "w", encoding="utf-8", newline="") as fh:
        fh.write(header + "\n" + "\n".join(rows[i*third:(i+1)*third]) + "\n")
z("100010445724-202511-by_used_time-bill_details.zip", [(f"bill/part{i+1}.csv", f"part{i+1}.csv") for i in range(3)])
# a monthly bill pack, a China-site zh_cn monthly, a reseller L3 CSV
z("200018967974-202511-by_used_time-bill_pack.zip", [("pack/details.csv", "200018967974-202511-detail.csv")])
z("100000000001-202511-按扣费周期-明细账单.zip", [("明细账单.csv", "100000000001-202511-detail.csv")])
os.replace(os.path.join(tmp, "800001608331-202511-detail.csv"), os.path.join(out, "L3-bill_details-800001608331-202511-0001-example.csv"))
PY
ls -l "$out"
