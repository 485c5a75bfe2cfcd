#!/usr/bin/env bash
# Instructions per request of each client of benches/loopback_cpu.rs on loopback, counted on
# the client's own thread under `valgrind --tool=callgrind` (user space only: the kernel's
# share of a request is not counted). Each client runs twice, with N1 and N2 requests, and
# the figure is the slope between the two, so start-up and warm-up drop out. Unlike the
# wall-clock bench, the figure hardly moves with what else the machine does (about ±1% run
# to run: how often a socket is found not ready yet still depends on timing), so two builds
# compare closely. The last column is the bare client's instructions over each client's,
# the throughput each would keep if instructions were all a request cost.
#
#   bash benches/loopback_callgrind.sh                  # every client
#   CLIENTS="bare_hyper_util stack_static_token" bash benches/loopback_callgrind.sh
#   N1=1000 N2=2000 bash benches/loopback_callgrind.sh  # quicker, a little less exact
#
# Needs valgrind. Builds the bench with line tables (they change no code) into
# $CARGO_TARGET_DIR (default /var/tmp/blueprint-target).
set -euo pipefail
cd "$(dirname "$0")/.."

N1="${N1:-2000}"
N2="${N2:-4000}"
CLIENTS="${CLIENTS:-bare_hyper_util bare_same_headers stack_static_token stack_oauth2_store}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/blueprint-target}"
command -v valgrind >/dev/null || { echo "loopback_callgrind.sh: valgrind is not installed" >&2; exit 1; }

bin=$(CARGO_PROFILE_BENCH_DEBUG=line-tables-only cargo bench --locked --bench loopback_cpu --no-run 2>&1 \
    | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
[ -x "$bin" ] || { echo "loopback_callgrind.sh: could not build the bench" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The instructions of the client thread: the last thread the run started (the main thread
# and the server's come first).
client_instructions() {
    local out="$1" last
    last=$(ls "$out"-* | sort | tail -1)
    awk '/^(summary|totals):/ {print $2; exit}' "$last"
}

declare -A per_request
for client in $CLIENTS; do
    for n in "$N1" "$N2"; do
        ONLY="$client" ROUNDS=1 REQUESTS="$n" valgrind --tool=callgrind --separate-threads=yes \
            --callgrind-out-file="$work/$client.$n" "$bin" >/dev/null 2>"$work/$client.$n.log" \
            || { echo "loopback_callgrind.sh: $client failed:" >&2; tail -5 "$work/$client.$n.log" >&2; exit 1; }
    done
    a=$(client_instructions "$work/$client.$N1")
    b=$(client_instructions "$work/$client.$N2")
    per_request[$client]=$(( (b - a) / (N2 - N1) ))
    rm -f "$work/$client".*
done

echo "| client | instructions per request (client thread) | vs bare_hyper_util |"
echo "|---|---|---|"
base="${per_request[bare_hyper_util]:-}"
for client in $CLIENTS; do
    if [ -n "$base" ]; then
        ratio=$(awk -v a="$base" -v b="${per_request[$client]}" 'BEGIN { printf "%.1f%% (%+d)", 100 * a / b, b - a }')
    else
        ratio="-"
    fi
    echo "| $client | ${per_request[$client]} | $ratio |"
done
