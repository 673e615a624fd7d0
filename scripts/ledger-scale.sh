#!/usr/bin/env bash
# The ledger at scale (issue #12): commits 10,000 customers x 20 months = 200,000 units one by
# one into a local lake through the real API (20 monthly runs, compacting as runs do), then
# times `state`, `state reset` of one account and `state compact`. See tests/ledger_scale.rs.
#
#   scripts/ledger-scale.sh            # release build (the figures that matter)
#   scripts/ledger-scale.sh --debug    # debug build (slower; what CI machines have built)
#   BILLPIPE_LEDGER_CUSTOMERS=1000 scripts/ledger-scale.sh --debug   # smaller
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
if [[ "${1:-}" == "--debug" ]]; then
    profile=()
fi
exec cargo test "${profile[@]}" --test ledger_scale -- --ignored --nocapture --test-threads 1
