#!/usr/bin/env bash
# Installs from Debian's packages whatever Herald needs locally and this machine lacks: the three
# servers, and with --tests also chromium (the inbox page's browser test). Does nothing when all
# are there. Used by `npm start` (servers/start.sh) and `npm test` (its pretest step).
set -euo pipefail

missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v clickhouse-server >/dev/null || missing+=(clickhouse-server)
if [ "${1:-}" = "--tests" ]; then
  command -v chromium >/dev/null || missing+=(chromium)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian's packages"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
