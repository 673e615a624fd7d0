#!/usr/bin/env bash
# Regenerates testdata/bucket: the small example bucket the README's first command loads.
# Two accounts; 2025-11 has three dailies and the monthly final, 2025-12 has two dailies; one
# row of account 200020002002's newest December daily has an unparsable BilledCost.
set -euo pipefail
cd "$(dirname "$0")/.."
out=testdata/bucket/billing/focus
rm -rf testdata/bucket
mkdir -p "$out"
gen() { cargo run -q -- generate --rows-per-day 4 --out-dir "$out" "$@" >/dev/null; }
for acct in 200020002001 200020002002; do
  for day in 3 10 20; do gen --account "$acct" --month 2025-11 --through-day "$day"; done
  gen --account "$acct" --month 2025-11
  gen --account "$acct" --month 2025-12 --through-day 2
done
gen --account 200020002001 --month 2025-12 --through-day 5
gen --account 200020002002 --month 2025-12 --through-day 5 --bad-rows 7
cat > testdata/bucket/billing/README.txt <<'TXT'
Not a bill file: billpipe lists it as skipped.
TXT
ls -l "$out"
