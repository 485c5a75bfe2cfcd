# Shared by benches/proxy.sh and benches/proxy_callgrind.sh (sourced, not run): the upstream
# both measure the proxy against, and the proxy's configuration and connection.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_upstream DIR PORT [CPU]: nginx answering like Intercom (a small JSON body with
# Intercom's rate-limit headers, a large budget), one worker, pinned to CPU when given.
start_upstream() {
    local dir=$1 port=$2 cpu=${3:-}
    cat >"$dir/up.conf" <<EOC
worker_processes 1;
pid $dir/up.pid;
error_log $dir/up.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        location / {
            add_header X-RateLimit-Limit 100000;
            add_header X-RateLimit-Remaining 99999;
            add_header X-RateLimit-Reset 4102444800;
            default_type application/json;
            return 200 '{"type":"admin","id":"1"}';
        }
    }
}
EOC
    if [ -n "$cpu" ]; then
        taskset -c "$cpu" nginx -c "$dir/up.conf" -p "$dir" -g 'daemon on;'
    else
        nginx -c "$dir/up.conf" -p "$dir" -g 'daemon on;'
    fi
}

# write_integrations DIR PORT: Intercom's blueprint, its base URL the upstream's.
write_integrations() {
    cat >"$1/integrations.yaml" <<EOC
integrations:
  intercom:
    extends_blueprint: intercom:v0
    base_url: http://127.0.0.1:$2/
EOC
}

# new_key: a random proxy key.
new_key() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# wait_until_answers URL TRIES: waits (TRIES × 0.2 s at most) for URL to answer at all.
wait_until_answers() {
    for _ in $(seq 1 "$2"); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.2
    done
}

# connect_proxy PORT KEY TRIES: waits (TRIES × 0.2 s at most) for the proxy to answer, then
# imports the connection `intercom/acme` with the token `bench-token`.
connect_proxy() {
    local port=$1 key=$2 tries=$3
    wait_until_answers "http://127.0.0.1:$port/healthz" "$tries"
    curl -s -o /dev/null -X PUT "http://127.0.0.1:$port/connections/intercom/acme" \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -d '{"access_token": "bench-token"}'
}
