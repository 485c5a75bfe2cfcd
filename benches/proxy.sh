#!/usr/bin/env bash
# The release blueprint-proxy beside nginx (1 worker, injecting `Authorization`, upstream
# keep-alive) and a direct baseline, under wrk at 32 connections, interleaved over several
# rounds. For each: requests per second, p50/p99 latency, and CPU µs per request of the
# proxy's process (utime + stime from /proc, over the round).
#
#   bash benches/proxy.sh                # 5 rounds of 10 s
#   ROUNDS=3 SECONDS_PER_ROUND=5 bash benches/proxy.sh
#   LOG=off bash benches/proxy.sh        # the proxy's access log off (RUST_LOG=warn)
#   PROXY_BIN_B=/path/to/other/blueprint-proxy bash benches/proxy.sh
#                                        # a second build beside the first, in the same
#                                        # rounds (row `proxy_b`): an A/B of two builds
#   FLOOR=0 bash benches/proxy.sh        # without the row `hyper_floor`
#   PROXY_BIN_B=/var/tmp/blueprint-target/release/blueprint-proxy LOG_B=off \
#       bash benches/proxy.sh            # the same build with its access log off, in the
#                                        # same rounds: what the access line costs
#
# Needs nginx and wrk (Debian packages `nginx-light`, `wrk`) and a release build
# (`cargo build --release -p blueprint-proxy`; this script builds it if missing).
#
# Both proxies run one worker (nginx `worker_processes 1`, the proxy `--worker-threads 1`)
# pinned to CPU 1; wrk and the upstream (a second nginx answering a small JSON body with
# Intercom's rate-limit headers) share CPU 0, so the proxies never compete with the load
# for their core. Both proxies write an access line per call to a file.
#
# The row `hyper_floor` is benches/hyper_forwarder.rs, also one worker on CPU 1: a hyper
# server that sets `Authorization` and forwards through a hyper-util client, and nothing
# else (no log). It is the least a proxy built on hyper and tokio costs per call, so the
# proxy's figure splits into that and what is ours.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
SECONDS_PER_ROUND="${SECONDS_PER_ROUND:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
LOG="${LOG:-on}"
# The access log of the second build (`PROXY_BIN_B`): as the first's unless set.
LOG_B="${LOG_B:-$LOG}"
TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/blueprint-target}"
PROXY_BIN="$TARGET_DIR/release/blueprint-proxy"

for tool in nginx wrk taskset curl; do
    command -v "$tool" >/dev/null || { echo "proxy.sh: $tool is not installed" >&2; exit 1; }
done
if [ ! -x "$PROXY_BIN" ] || [ "${REBUILD:-1}" = 1 ]; then
    CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked -p blueprint-proxy >&2
fi

FLOOR="${FLOOR:-1}"
FLOOR_BIN=""
if [ "$FLOOR" = 1 ]; then
    FLOOR_BIN=$(CARGO_TARGET_DIR="$TARGET_DIR" cargo bench --locked --bench hyper_forwarder --no-run 2>&1 \
        | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
    [ -x "$FLOOR_BIN" ] || { echo "proxy.sh: could not build benches/hyper_forwarder.rs" >&2; exit 1; }
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$work/up.pid" ] && kill "$(cat "$work/up.pid")" 2>/dev/null || true
    [ -f "$work/ng.pid" ] && kill "$(cat "$work/ng.pid")" 2>/dev/null || true
    sleep 0.2
    rm -rf "$work"
}
trap cleanup EXIT

. benches/proxy_setup.sh
UP=$(free_port); NG=$(free_port); PX=$(free_port); PXB=$(free_port); HF=$(free_port)

# --- the upstream: nginx answering like Intercom ---------------------------------------
start_upstream "$work" "$UP" 0

# --- nginx as the proxy under test -------------------------------------------------------
cat >"$work/ng.conf" <<EOF
worker_processes 1;
pid $work/ng.pid;
error_log $work/ng.err warn;
events { worker_connections 4096; }
http {
    access_log $work/ng.access.log;
    keepalive_requests 1000000;
    upstream api { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$NG;
        location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer bench-token";
        }
    }
}
EOF
taskset -c 1 nginx -c "$work/ng.conf" -p "$work" -g 'daemon on;'

# --- blueprint-proxy -------------------------------------------------------------------
KEY=$(new_key)
# RUST_LOG of a proxy whose access log is on (`on`) or off (`off`).
rust_log_for() { if [ "$1" = off ]; then echo warn; else echo info; fi; }
rust_log=$(rust_log_for "$LOG")
# start_proxy BIN DIR PORT [RUST_LOG]: one worker, pinned to CPU 1, its store and logs in DIR, the
# connection imported; its pid in STARTED.
start_proxy() {
    local bin=$1 dir=$2 port=$3 rust_log=${4:-$rust_log}
    mkdir -p "$dir"
    write_integrations "$dir" "$UP"
    BLUEPRINT_SECRET_KEY="$KEY" RUST_LOG="$rust_log" taskset -c 1 "$bin" \
        --config "$dir/integrations.yaml" --store "sqlite://$dir/store.db" \
        --listen "127.0.0.1:$port" --worker-threads 1 >"$dir/px.out" 2>"$dir/px.log" &
    STARTED=$!
    pids+=("$STARTED")
    connect_proxy "$port" "$KEY" 50
}
start_proxy "$PROXY_BIN" "$work" "$PX"
PROXY_PID=$STARTED
WHO="direct nginx proxy"
PROXY_B_PID=""
if [ -n "${PROXY_BIN_B:-}" ]; then
    start_proxy "$PROXY_BIN_B" "$work/b" "$PXB" "$(rust_log_for "$LOG_B")"
    PROXY_B_PID=$STARTED
    WHO="direct nginx proxy proxy_b"
fi

FLOOR_PID=""
if [ -n "$FLOOR_BIN" ]; then
    FORWARD_LISTEN="127.0.0.1:$HF" FORWARD_UPSTREAM="127.0.0.1:$UP" taskset -c 1 "$FLOOR_BIN" \
        >"$work/hf.out" 2>"$work/hf.log" &
    FLOOR_PID=$!
    pids+=("$FLOOR_PID")
    wait_until_answers "http://127.0.0.1:$HF/me" 50
    WHO="direct nginx hyper_floor ${WHO#direct nginx }"
fi

ng_worker() { pgrep -P "$(cat "$work/ng.pid")" | head -1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# wrk's latency ("430.00us", "1.20ms", "1.01s") in milliseconds.
to_ms() {
    awk '{ v = $1 + 0
           if ($1 ~ /us$/) v /= 1000
           else if ($1 ~ /ms$/) v = v
           else if ($1 ~ /s$/) v *= 1000
           printf "%.3f\n", v }'
}

# Runs wrk against $1 with extra headers; prints
# "req/s p50_ms p99_ms cpu_us_per_req kernel_us_per_req".
run() {
    local url=$1 pid=$2; shift 2
    local before after sys_before sys_after out reqs secs
    before=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0 )
    sys_before=$( [ -n "$pid" ] && sys_ticks "$pid" || echo 0 )
    out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_ROUND}s" --latency "$@" "$url")
    after=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0 )
    sys_after=$( [ -n "$pid" ] && sys_ticks "$pid" || echo 0 )
    # "  224000 requests in 3.00s, 50.00MB read"; latencies as "430.00us", "1.20ms" or "1.01s".
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    secs=$(awk '/requests in/ {gsub("s,","",$4); print $4}' <<<"$out")
    local p50 p99
    p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
    p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
    awk -v r="$reqs" -v s="$secs" -v b="$before" -v a="$after" -v sb="$sys_before" -v sa="$sys_after" \
        -v hz="$hz" -v p50="$p50" -v p99="$p99" \
        'BEGIN { printf "%.0f %s %s %.2f %.2f\n", r / s, p50, p99,
                 (a - b) / hz * 1e6 / r, (sa - sb) / hz * 1e6 / r }'
}

results="$work/results"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
    order=$WHO
    # Two builds take turns going first, so that neither always runs after nginx.
    [ -n "$PROXY_B_PID" ] && [ $((round % 2)) = 0 ] && order="${WHO% proxy proxy_b} proxy_b proxy"
    for who in $order; do
        case $who in
            direct) line=$(run "http://127.0.0.1:$UP/me" "") ;;
            nginx) line=$(run "http://127.0.0.1:$NG/me" "$(ng_worker)") ;;
            hyper_floor) line=$(run "http://127.0.0.1:$HF/me" "$FLOOR_PID") ;;
            proxy) line=$(run "http://127.0.0.1:$PX/proxy/me" "$PROXY_PID" \
                -H "Authorization: Bearer $KEY" -H 'Provider-Config-Key: intercom' \
                -H 'Connection-Id: acme') ;;
            proxy_b) line=$(run "http://127.0.0.1:$PXB/proxy/me" "$PROXY_B_PID" \
                -H "Authorization: Bearer $KEY" -H 'Provider-Config-Key: intercom' \
                -H 'Connection-Id: acme') ;;
        esac
        echo "$who $line" >>"$results"
        echo "round $round $who: $line" >&2
    done
done

echo
echo "blueprint-proxy vs nginx, $CONNECTIONS connections, $ROUNDS rounds of ${SECONDS_PER_ROUND}s, access log $LOG${PROXY_BIN_B:+ (proxy_b: $LOG_B)} (medians)"
echo
echo "| what | req/s | p50 | p99 | CPU µs/request (proxy process) | of which in the kernel |"
echo "|---|---|---|---|---|---|"
median() { sort -n | awk '{ v[NR]=$1 } END { print v[int((NR+1)/2)] }'; }
for who in $WHO; do
    col() { awk -v who="$who" -v c="$1" '$1 == who { print $c }' "$results"; }
    rps=$(col 2 | median)
    p50=$(col 3 | median)
    p99=$(col 4 | median)
    cpu=$(col 5 | median)
    kernel=$(col 6 | median)
    [ "$who" = direct ] && cpu="-" && kernel="-"
    echo "| $who | $rps | ${p50} ms | ${p99} ms | $cpu | $kernel |"
done
lines=$(wc -l <"$work/px.log")
echo
echo "proxy log lines written: $lines"
