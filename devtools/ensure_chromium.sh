#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/browser), installed with apt only when
# /usr/bin/chromium is missing. Idempotent and quiet: prints nothing when Chromium is there, one line
# when it installs it, apt's output only when apt fails. Needs root or sudo on Debian/Ubuntu.
# Playwright drives this binary (executable_path=/usr/bin/chromium); never `playwright install`.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM is missing and apt-get is not available; install Chromium by hand" >&2
    exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "ensure_chromium: need root or sudo to install chromium" >&2; exit 1; }
    SUDO=(sudo -n)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "ensure_chromium: installing chromium with apt-get ..."
# fonts-liberation: Chromium's recommended fonts are left out (--no-install-recommends); without a
# Latin font family the screenshots show boxes.
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium fonts-liberation; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "ensure_chromium: apt-get failed" >&2
    exit 1
fi
[ -x "$CHROMIUM" ] || { cat "$log" >&2; echo "ensure_chromium: $CHROMIUM still missing after apt-get" >&2; exit 1; }
echo "ensure_chromium: $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed"
