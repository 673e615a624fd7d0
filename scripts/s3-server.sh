#!/usr/bin/env bash
# Installs, starts and stops a real S3-compatible server (Garage) on 127.0.0.1 for billpipe's
# integration tests. No mocks: the tests talk S3 over HTTP to this server.
#
#   scripts/s3-server.sh install   # cargo install garage (about 6 minutes the first time)
#   scripts/s3-server.sh start     # install if needed, start, create a key; writes $STATE/env
#   scripts/s3-server.sh stop
#   scripts/s3-server.sh env       # print the exports the tests need
#
# State (config, data, pid, env) lives in target/garage unless BILLPIPE_S3_DIR says otherwise.
# The S3 API listens on 127.0.0.1:${BILLPIPE_S3_PORT:-3900} (RPC and admin on the next ports).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=${BILLPIPE_S3_DIR:-$repo/target/garage}
tools=${BILLPIPE_TOOLS_DIR:-$repo/target/tools}
port=${BILLPIPE_S3_PORT:-3900}
garage_version=2.5.0
# Fixed test-only credentials (Garage key ids are GK + 24 hex digits, secrets 64 hex digits).
key_id=GK0123456789abcdef01234567
secret=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

find_garage() {
  if [ -x "$tools/bin/garage" ]; then echo "$tools/bin/garage"; return; fi
  if command -v garage >/dev/null 2>&1 && garage --version 2>/dev/null | grep -q "cargo:$garage_version"; then
    command -v garage; return
  fi
  return 1
}

install() {
  if find_garage >/dev/null; then return; fi
  echo "s3-server: installing garage $garage_version from crates.io into $tools (about 6 minutes on 2 cores)" >&2
  # Only what the tests use (sqlite metadata, bundled C libraries), built at opt-level 1: about
  # half the build time of the default install, and fast enough for tests.
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install garage --version "$garage_version" --locked \
    --no-default-features --features bundled-libs,sqlite --root "$tools" >&2
}

cli() { "$(find_garage)" -c "$state/garage.toml" "$@"; }

write_env() {
  cat > "$state/env" <<ENV
export BILLPIPE_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=garage
ENV
}

running() { [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; }

start() {
  install
  mkdir -p "$state"
  if running; then write_env; echo "s3-server: already running (pid $(cat "$state/pid"))" >&2; return; fi
  rm -rf "$state/meta" "$state/data"
  cat > "$state/garage.toml" <<CONF
metadata_dir = "$state/meta"
data_dir = "$state/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$((port + 1))"
rpc_public_addr = "127.0.0.1:$((port + 1))"
rpc_secret = "$(printf '%064d' 7)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((port + 3))"
CONF
  RUST_LOG=${GARAGE_LOG:-warn} nohup "$(find_garage)" -c "$state/garage.toml" server > "$state/server.log" 2>&1 &
  echo $! > "$state/pid"
  for _ in $(seq 1 100); do
    if cli status >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  node=$(cli node id -q 2>/dev/null | cut -d@ -f1)
  cli layout assign -z dc1 -c 1G "$node" >/dev/null
  cli layout apply --version 1 >/dev/null
  cli key import --yes -n billpipe-test "$key_id" "$secret" >/dev/null
  cli key allow --create-bucket billpipe-test >/dev/null
  # The S3 API answers once the layout is live.
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.2
  done
  write_env
  echo "s3-server: garage on http://127.0.0.1:$port (pid $(cat "$state/pid")); env in $state/env" >&2
}

stop() {
  if running; then kill "$(cat "$state/pid")"; sleep 0.5; fi
  rm -f "$state/pid"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  env) cat "$state/env" ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
