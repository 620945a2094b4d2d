#!/usr/bin/env bash
# The coordinator under load from an external client: installs wrk (Debian package) if absent, builds the
# release coordinator, and runs `coldfuse-coordinator bench` (idle / 8 uploads / a 125 M-parameter fusion /
# both; /v1/round and a 1 MB ranged download; plain and TLS). Extra arguments go to the bench.
# Usage: scripts/bench/load.sh [--seconds 3] [--out results.json]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coldfuse/target}"
if ! command -v wrk >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y wrk >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y wrk >&2; }
fi
cargo build --release -p coldfuse-coordinator >&2
# The access log is on, as in production (RUST_LOG=info,rustls=error,coldfuse::access=off turns it off).
exec "$CARGO_TARGET_DIR/release/coldfuse-coordinator" bench "$@"
