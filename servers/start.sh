#!/usr/bin/env bash
# Starts NATS (JetStream), Redis (AOF) and ClickHouse on their default ports without Docker.
# Installs whatever binary is missing from Debian's packages first. Idempotent: a server that
# already answers is left alone. Data lives under .herald/ (git-ignored). Stop: `herald servers stop`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v clickhouse-server >/dev/null || missing+=(clickhouse-server)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian's packages"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -d node_modules ] || npm install --no-audit --no-fund
node bin/herald.js servers start
