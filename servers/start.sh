#!/usr/bin/env bash
# Starts NATS (JetStream), Redis (AOF) and ClickHouse on their default ports without Docker.
# Installs whatever binary is missing from Debian's packages first (servers/install.sh). Idempotent: a server that
# already answers is left alone. Data lives under .herald/ (git-ignored). Stop: `herald servers stop`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash servers/install.sh

[ -d node_modules ] || npm install --no-audit --no-fund
node bin/herald.js servers start
