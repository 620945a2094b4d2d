#!/usr/bin/env bash
# Round close on a real S3 server: installs SeaweedFS (scripts/assets.sh), starts `weed mini` on loopback
# with its data under $COLDFUSE_BENCH_DIR (default: a temp dir), builds the release coordinator, and runs
# `coldfuse-coordinator bench round --store s3://coldfuse/bench`. Extra arguments go to the bench.
# Usage: scripts/bench/round.sh [--params 125000000,1300000000] [--contributions 2,8,32]
#        [--strategy mean,median] [--out results.json]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coldfuse/target}"
eval "$(scripts/assets.sh)" >&2
cargo build --release -p coldfuse-coordinator >&2
dir=$(mktemp -d "${COLDFUSE_BENCH_DIR:-${TMPDIR:-/tmp}}/round-bench.XXXXXX")
weed_pid=""
cleanup() {
  [ -z "$weed_pid" ] || kill "$weed_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
port=$(( 30000 + RANDOM % 5000 ))
export AWS_ACCESS_KEY_ID=coldfuse AWS_SECRET_ACCESS_KEY=coldfuse-secret AWS_REGION=us-east-1
export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
mkdir -p "$dir/weed" "$dir/tmp"
"$COLDFUSE_WEED" mini -dir="$dir/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -webdav=false -admin.ui=false \
  -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
  -s3.port=$port -master.port=$((port + 1)) -volume.port=$((port + 2)) -filer.port=$((port + 3)) \
  -admin.port=$((port + 4)) -debug.port=$((port + 5)) -bucket=coldfuse >"$dir/weed.log" 2>&1 &
weed_pid=$!
for _ in $(seq 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
sleep 2 # the S3 gateway answers before the filer and the bucket are ready
RUST_LOG="${RUST_LOG:-warn}" "$CARGO_TARGET_DIR/release/coldfuse-coordinator" bench round \
  --store s3://coldfuse/bench --tmp "$dir/tmp" "$@"
