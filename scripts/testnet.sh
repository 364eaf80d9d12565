#!/usr/bin/env bash
# A local multi-process castnet testnet on anvil, in one command:
#   scripts/testnet.sh [DIR] [NODES]      start it (default ./castnet-testnet, 5 nodes)
#   .venv/bin/castnet testnet status|transcode FILE|down --dir DIR
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-castnet-testnet}"
NODES="${2:-5}"
make --no-print-directory install testnet-deps >/dev/null
exec .venv/bin/castnet testnet up --dir "$DIR" --nodes "$NODES"
