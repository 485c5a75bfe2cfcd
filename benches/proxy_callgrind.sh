#!/usr/bin/env bash
# Instructions per proxied call: the release proxy under `valgrind --tool=callgrind`, behind
# the same upstream as benches/proxy.sh (nginx answering like Intercom), driven by wrk. The
# count is reset after a warm-up and dumped after the measured run, then divided by the
# requests wrk made. Instructions, unlike seconds, do not depend on what else the machine
# does, so two builds compare exactly (run to run: about ±500).
#
#   bash benches/proxy_callgrind.sh           # 15 s measured, prints instr/call
#   SECONDS_MEASURED=30 bash benches/proxy_callgrind.sh
#   KEEP=1 bash benches/proxy_callgrind.sh    # keeps the callgrind file for callgrind_annotate
#
# Needs valgrind, nginx and wrk (Debian packages `valgrind`, `nginx-light`, `wrk`) and a
# release build (`cargo build --release -p blueprint-proxy`; built here if missing). Line
# tables make the profile readable and change no code:
# `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p blueprint-proxy`.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_MEASURED="${SECONDS_MEASURED:-15}"
TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/blueprint-target}"
PROXY_BIN="$TARGET_DIR/release/blueprint-proxy"
for tool in valgrind callgrind_control nginx wrk curl; do
    command -v "$tool" >/dev/null || { echo "proxy_callgrind.sh: $tool is not installed" >&2; exit 1; }
done
if [ ! -x "$PROXY_BIN" ]; then
    CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked -p blueprint-proxy >&2
fi

work=$(mktemp -d)
vg=""
cleanup() {
    [ -n "$vg" ] && kill "$vg" 2>/dev/null || true
    [ -f "$work/up.pid" ] && kill "$(cat "$work/up.pid")" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

. benches/proxy_setup.sh
UP=$(free_port); PX=$(free_port)
start_upstream "$work" "$UP"
KEY=$(new_key)
write_integrations "$work" "$UP"
BLUEPRINT_SECRET_KEY="$KEY" RUST_LOG="${RUST_LOG:-info}" \
    valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$PROXY_BIN" \
    --config "$work/integrations.yaml" --store "sqlite://$work/store.db" \
    --listen "127.0.0.1:$PX" --worker-threads 1 >"$work/px.out" 2>"$work/px.log" &
vg=$!
# valgrind starts the proxy slowly: up to a minute.
connect_proxy "$PX" "$KEY" 300
headers=(-H "Authorization: Bearer $KEY" -H 'Provider-Config-Key: intercom' -H 'Connection-Id: acme')

wrk -t1 -c8 -d5s "${headers[@]}" "http://127.0.0.1:$PX/proxy/me" >/dev/null
callgrind_control -z "$vg" >/dev/null 2>&1
out=$(wrk -t1 -c8 -d"${SECONDS_MEASURED}s" "${headers[@]}" "http://127.0.0.1:$PX/proxy/me")
callgrind_control -d "$vg" >/dev/null 2>&1
requests=$(awk '/requests in/ {print $1}' <<<"$out")
sleep 1
dump=$(ls -t "$work"/callgrind.out.* | head -1)
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
echo "requests $requests, instructions $total, per proxied call $((total / requests))"
[ "${KEEP:-0}" = 1 ] && echo "callgrind file: $dump"
