#!/usr/bin/env bash
# Contract tests against Intercom's own OpenAPI description: installs Prism (a mock server
# generated from the description, which checks every request against it), starts it on a
# free loopback port, proves that it rejects a request the description forbids, runs
# `tests/intercom_contract.rs` against it and always stops it. Exits non-zero if anything
# fails.
#
#   bash .ci/prism.sh
#
# Environment (all optional):
#   PRISM_HOME        where Prism is installed and reused (default /var/tmp/blueprint-prism)
#   INTERCOM_OPENAPI  the description (default: the copy vendored in the repository,
#                     crates/intercom-blueprint/openapi/api.intercom.io-2.16.yaml)
#   CARGO_TARGET_DIR  honoured by cargo as usual
set -euo pipefail
cd "$(dirname "$0")/.."

PRISM_VERSION=5.16.0
# Seed of Prism's schema-driven answers (asked for with `Prefer: dynamic=true`): with this
# Prism and this description, list and search pages carry a `pages.next.starting_after`
# cursor, so the tests also check the requests for second pages.
PRISM_SEED=38
PRISM_HOME="${PRISM_HOME:-/var/tmp/blueprint-prism}"
SPEC="${INTERCOM_OPENAPI:-crates/intercom-blueprint/openapi/api.intercom.io-2.16.yaml}"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
say() { printf 'prism.sh: %s\n' "$*"; }
fail() { printf 'prism.sh: FAILED: %s\n' "$*" >&2; exit 1; }

for tool in node npm curl cargo; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
[ -r "$SPEC" ] || fail "no OpenAPI description at $SPEC (set INTERCOM_OPENAPI)"

# --- install (reused while the pinned manifest and version match) ---------------------
# The CLI pins json-schema-faker exactly but takes its own @stoplight/prism-* packages
# with ^: overrides pin those too, so the seeded answers stay the same.
manifest=$(cat <<EOF
{
  "name": "blueprint-prism",
  "private": true,
  "dependencies": { "@stoplight/prism-cli": "$PRISM_VERSION" },
  "overrides": {
    "@stoplight/prism-core": "$PRISM_VERSION",
    "@stoplight/prism-http": "$PRISM_VERSION",
    "@stoplight/prism-http-server": "$PRISM_VERSION"
  }
}
EOF
)
prism="$PRISM_HOME/node_modules/.bin/prism"
started=$(now)
if [ -x "$prism" ] && [ "$(cat "$PRISM_HOME/package.json" 2>/dev/null)" = "$manifest" ] \
    && [ "$("$prism" --version 2>/dev/null)" = "$PRISM_VERSION" ]; then
    say "Prism $PRISM_VERSION already installed in $PRISM_HOME"
else
    say "installing @stoplight/prism-cli@$PRISM_VERSION into $PRISM_HOME"
    mkdir -p "$(dirname "$PRISM_HOME")"
    staging="$PRISM_HOME.new.$$"
    rm -rf "$staging"
    mkdir -p "$staging"
    printf '%s\n' "$manifest" >"$staging/package.json"
    if ! (cd "$staging" && npm install --no-audit --no-fund --no-update-notifier \
        --loglevel=error >/dev/null); then
        rm -rf "$staging"
        fail "npm install of @stoplight/prism-cli@$PRISM_VERSION"
    fi
    rm -rf "$PRISM_HOME"
    mv "$staging" "$PRISM_HOME"
    [ "$("$prism" --version)" = "$PRISM_VERSION" ] || fail "installed Prism is not $PRISM_VERSION"
    say "installed in $(since "$started")"
fi

# --- build the tests first, so Prism does not wait on the compiler --------------------
started=$(now)
cargo test --locked --test intercom_contract --no-run
say "tests built in $(since "$started")"

# --- start ---------------------------------------------------------------------------
# `prism mock` checks every request (path, method, security, headers, query, body) and
# answers a violation with the description's own 4xx, or 422/401/406 problem+json.
# `--errors` is NOT passed: it only adds *response* checks, and Intercom's own examples
# break their schemas in places (POST /contacts' example has `tags.url` values that are not
# URIs), which would turn valid requests into 500s.
work=$(mktemp -d)
log="$work/prism.log"
pid=""
watchdog=""
stop() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ -n "$watchdog" ]; then
        kill "$watchdog" 2>/dev/null || true
        wait "$watchdog" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop EXIT
on_signal() { exit 130; }
trap on_signal INT TERM HUP

free_port() {
    node -e 'const s = require("net").createServer();
             s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

auth=(-H "Authorization: Bearer contract-test-token" -H "Accept: application/json")
url=""
for try in 1 2 3; do
    port=$(free_port)
    started=$(now)
    "$prism" mock --host 127.0.0.1 --port "$port" --seed "$PRISM_SEED" "$SPEC" >"$log" 2>&1 &
    pid=$!
    # Stops Prism even when this script dies without running its traps (SIGKILL).
    (
        while kill -0 "$$" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
        kill "$pid" 2>/dev/null
    ) >/dev/null 2>&1 &
    watchdog=$!
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || break
        code=$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "http://127.0.0.1:$port/me" || true)
        if [ "$code" = 200 ]; then
            url="http://127.0.0.1:$port"
            break 2
        fi
        sleep 0.1
    done
    say "Prism did not come up on port $port (try $try); its log:"
    tail -n 20 "$log" >&2 || true
    kill "$pid" "$watchdog" 2>/dev/null || true
    wait "$pid" "$watchdog" 2>/dev/null || true
    pid=""
    watchdog=""
done
[ -n "$url" ] || fail "Prism did not start"
up=$(since "$started")
version=$("$prism" --version)
say "Prism $version listening on $url (seed $PRISM_SEED), up in $up"

# --- prove it rejects what the description forbids -----------------------------------
expect() {
    local want=$1 what=$2
    shift 2
    local got
    got=$(curl -s -o "$work/answer" -w '%{http_code}' "$@" || true)
    if [ "$got" != "$want" ]; then
        say "answer: $(head -c 600 "$work/answer" 2>/dev/null)"
        fail "$what: Prism answered $got, not $want; it is not checking requests"
    fi
    say "self-check: $what -> $got"
}
expect 422 "GET /me with Intercom-Version 9.99" "${auth[@]}" -H "Intercom-Version: 9.99" "$url/me"
expect 401 "GET /me without a token" -H "Accept: application/json" "$url/me"

# --- the contract tests --------------------------------------------------------------
checked=$(wc -l <"$log")
started=$(now)
status=0
PRISM_URL="$url" cargo test --locked --test intercom_contract -- --ignored --nocapture || status=$?
if [ "$status" -ne 0 ]; then
    say "what Prism rejected during the tests (the negative tests' rejections are expected):"
    tail -n "+$((checked + 1))" "$log" | grep -E 'VALIDATOR\].*(✖|error)|Request terminated' \
        | grep -v 'Violation: response' | tail -n 60 >&2 || true
    fail "contract tests (cargo test exit $status)"
fi
say "contract tests passed in $(since "$started")"
