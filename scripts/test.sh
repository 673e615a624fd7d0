#!/usr/bin/env bash
# The full test suite: starts the real S3 server (installing Garage if needed), runs every test
# against it, stops it. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/s3-server.sh start
trap 'scripts/s3-server.sh stop' EXIT
# shellcheck disable=SC1091
source target/garage/env
cargo test --all-targets "$@"
