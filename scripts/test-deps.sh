#!/usr/bin/env bash
# Installs what `make test` needs besides PostgreSQL, RabbitMQ and the Rust toolchain — only what
# is missing, saying what it installs: Debian's Chromium (the browser test), docker-compose (the
# compose file check), prometheus (for promtool: the alert rules' tests; the server it also
# installs is not started) and the browser test's node modules (playwright-core, from its lock
# file).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[test-deps] %s\n' "$*"; }

packages=()
command -v chromium >/dev/null 2>&1 || [ -n "${CHROMIUM:-}" ] || packages+=(chromium)
command -v docker-compose >/dev/null 2>&1 || packages+=(docker-compose)
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
if [ ${#packages[@]} -gt 0 ]; then
  say "installing Debian packages: ${packages[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# Installed when missing or not the version the lock file names.
wanted=$(node -p 'require("./tests/browser/package-lock.json").packages["node_modules/playwright-core"].version')
have=$(node -p 'require("./tests/browser/node_modules/playwright-core/package.json").version' 2>/dev/null || true)
if [ "$have" != "$wanted" ]; then
  say "installing the browser test's node modules (npm ci in tests/browser: playwright-core $wanted)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
