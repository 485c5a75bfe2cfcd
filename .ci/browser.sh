#!/usr/bin/env bash
# What the connections page's browser test (tests/ui/main.rs) needs, installed when
# missing and reused otherwise:
#   - Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`);
#   - Node.js 20 or later;
#   - the npm packages of tests/ui/package-lock.json (playwright-core only, which never
#     downloads a browser), installed with `npm ci` into BLUEPRINT_UI_NODE, outside the
#     repository, and reused while the manifest and lock file are the same.
# Exits non-zero, saying what is missing, when any of them cannot be had.
#
#   bash .ci/browser.sh
#
# Environment (all optional):
#   BLUEPRINT_UI_NODE      where node_modules goes (default /var/tmp/blueprint-ui-node)
#   BLUEPRINT_UI_CHROMIUM  the browser (default /usr/bin/chromium, installed if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_HOME="${BLUEPRINT_UI_NODE:-/var/tmp/blueprint-ui-node}"
CHROMIUM="${BLUEPRINT_UI_CHROMIUM:-/usr/bin/chromium}"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
say() { printf 'browser.sh: %s\n' "$*"; }
fail() { printf 'browser.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# --- Chromium ----------------------------------------------------------------------
started=$(now)
if [ -x "$CHROMIUM" ]; then
    say "Chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
    [ "$CHROMIUM" = /usr/bin/chromium ] \
        || fail "no Chromium at $CHROMIUM (BLUEPRINT_UI_CHROMIUM); unset it to use Debian's"
    command -v apt-get >/dev/null \
        || fail "no Chromium at /usr/bin/chromium, and no apt-get to install Debian's chromium"
    [ "$(id -u)" = 0 ] || fail "no Chromium at /usr/bin/chromium; install it as root: apt-get install -y chromium"
    say "Chromium is missing: installing Debian's chromium with apt-get (a few minutes)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || fail "apt-get update"
    apt-get install -y -qq chromium >/dev/null || fail "apt-get install -y chromium"
    [ -x "$CHROMIUM" ] || fail "apt-get installed chromium, but $CHROMIUM is not there"
    say "installed $("$CHROMIUM" --version 2>/dev/null || echo chromium) in $(since "$started")"
fi

# --- Node.js -----------------------------------------------------------------------
for tool in node npm; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (Node.js 20 or later)"
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || fail "Node.js $(node --version) is too old: Playwright needs 20 or later"

# --- playwright-core, from the lock file ----------------------------------------------
started=$(now)
if [ -f "$NODE_HOME/node_modules/playwright-core/package.json" ] \
    && cmp -s tests/ui/package.json "$NODE_HOME/package.json" \
    && cmp -s tests/ui/package-lock.json "$NODE_HOME/package-lock.json"; then
    say "npm packages of tests/ui/package-lock.json already installed in $NODE_HOME"
else
    say "installing the npm packages of tests/ui/package-lock.json into $NODE_HOME (npm ci)"
    mkdir -p "$(dirname "$NODE_HOME")"
    staging="$NODE_HOME.new.$$"
    rm -rf "$staging"
    mkdir -p "$staging"
    cp tests/ui/package.json tests/ui/package-lock.json "$staging/"
    if ! (cd "$staging" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts \
        --no-audit --no-fund --no-update-notifier --loglevel=error >/dev/null); then
        rm -rf "$staging"
        fail "npm ci of tests/ui/package-lock.json"
    fi
    rm -rf "$NODE_HOME"
    mv "$staging" "$NODE_HOME"
    say "installed in $(since "$started")"
fi
version=$(node -p "require(require.resolve('playwright-core/package.json', { paths: ['$NODE_HOME'] })).version") \
    || fail "playwright-core cannot be loaded from $NODE_HOME"
say "playwright-core $version, Node.js $(node --version), ready for tests/ui (cargo test --test ui)"
