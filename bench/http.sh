#!/usr/bin/env bash
# HTTP benchmark: wrk (1 thread, CONNS keep-alive connections, DURATION
# seconds each) against, in one run:
#   - kiln apps/httpd on the embedded VMM behind rootless user-mode
#     networking (`kiln run apps/httpd -p PORT:80`, wrk to 127.0.0.1:PORT);
#   - the same image behind a TAP device (`--net tap:kiln0`), in a network
#     namespace this script creates (tap 10.0.2.2/24, guest 10.0.2.15);
#   - nginx with one worker, natively on the host, serving the same page
#     bytes (httpd's 145-byte index page) on 127.0.0.1.
# Prints requests/s, p99 latency and ratios to nginx.
# Usage: bench/http.sh [DURATION_SECS] [CONNS]   (defaults 10, 16).
# Needs /dev/kvm, root (for the namespace), wrk and nginx (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-16}
for tool in wrk nginx ip; do
    command -v $tool >/dev/null || { echo "bench/http.sh: $tool is missing (apt-get install wrk nginx iproute2)" >&2; exit 1; }
done
[ -r /dev/kvm ] || { echo "bench/http.sh: /dev/kvm is not usable here" >&2; exit 1; }
cargo build -q --release -p kiln
KILN=$PWD/target/release/kiln
$KILN build -q apps/httpd >/dev/null 2>&1
tmp=$(mktemp -d)
chmod 755 "$tmp"
NS=kilnbench$$
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
[ -n "${KEEP_TMP:-}" ] && echo "tmp: $tmp"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "bench/http.sh: $1 never answered" >&2; exit 1; }
# wrk's summary -> "REQS_PER_SEC P99_MS ERRORS"
run_wrk() {
    local out
    out=$("$@" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$URL")
    echo "$out" >>"$tmp/wrk.log"
    local rps p99 errors
    rps=$(echo "$out" | awk '/^Requests\/sec/ { print $2 }')
    p99=$(echo "$out" | awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 } print v }')
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ { e = 1 } END { print e + 0 }')
    echo "$rps $p99 $errors"
}

# The page: exactly the bytes httpd serves at /.
page_port=$(free_port)
$KILN run -q apps/httpd --timeout 60 -p "$page_port:80" >"$tmp/user.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$page_port/"
curl -s "http://127.0.0.1:$page_port/" >"$tmp/index.html"

# 1. kiln, user-mode networking.
URL="http://127.0.0.1:$page_port/"
read -r user_rps user_p99 user_err < <(run_wrk)

# 2. kiln, TAP in a namespace.
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" ip tuntap add kiln0 mode tap
ip netns exec "$NS" ip addr add 10.0.2.2/24 dev kiln0
ip netns exec "$NS" ip link set kiln0 up
ip netns exec "$NS" "$KILN" run -q apps/httpd --timeout 60 --net tap:kiln0 >"$tmp/tap.log" 2>&1 &
pids+=($!)
URL="http://10.0.2.15/"
for _ in $(seq 100); do ip netns exec "$NS" curl -s -o /dev/null "$URL" && break; sleep 0.1; done
read -r tap_rps tap_p99 tap_err < <(run_wrk ip netns exec "$NS")

# 3. nginx, one worker, natively.
nginx_port=$(free_port)
mkdir -p "$tmp/www"
cp "$tmp/index.html" "$tmp/www/index.html"
cat >"$tmp/nginx.conf" <<CONF
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $tmp/body;
    proxy_temp_path $tmp/proxy;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    server {
        listen 127.0.0.1:$nginx_port;
        root $tmp/www;
        default_type text/html;
    }
}
CONF
nginx -c "$tmp/nginx.conf"
URL="http://127.0.0.1:$nginx_port/"
wait_http "$URL"
curl -s "$URL" | cmp -s - "$tmp/index.html" || { echo "bench/http.sh: nginx serves other bytes" >&2; exit 1; }
read -r nginx_rps nginx_p99 nginx_err < <(run_wrk)

echo "http benchmark, $(date -u +%Y-%m-%d), wrk -t1 -c$CONNS -d${DURATION}s, page of $(wc -c <"$tmp/index.html") bytes"
printf '%-28s%14s%12s%8s%14s\n' server "requests/s" "p99 ms" errors "rps/nginx"
for row in "kiln httpd, user-mode -p:$user_rps:$user_p99:$user_err" \
           "kiln httpd, TAP:$tap_rps:$tap_p99:$tap_err" \
           "nginx (1 worker), host:$nginx_rps:$nginx_p99:$nginx_err"; do
    IFS=: read -r name rps p99 err <<<"$row"
    printf '%-28s%14s%12s%8s%14s\n' "$name" "$rps" "$p99" "$err" \
        "$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN { printf "%.3f", a / b }')"
done
