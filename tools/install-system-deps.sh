#!/usr/bin/env bash
# Debian packages the test suite drives for real: Chromium + ChromeDriver (HMI end-to-end),
# mbpoll (an independent Modbus master), PostgreSQL (plant-scale history), shellcheck and
# systemd-analyze (deployment files), openssl (a self-signed certificate for the HMI's TLS
# test). Installs only what is missing; needs root and apt.
set -euo pipefail

declare -A want=(
  [chromium]=/usr/bin/chromium
  [chromium-driver]=/usr/bin/chromedriver
  [mbpoll]=/usr/bin/mbpoll
  [postgresql]=/usr/lib/postgresql
  [shellcheck]=/usr/bin/shellcheck
  [systemd]=/usr/bin/systemd-analyze
  [gcc]=/usr/bin/gcc
  [openssl]=/usr/bin/openssl
)
missing=()
for pkg in "${!want[@]}"; do
  [ -e "${want[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
