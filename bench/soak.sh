#!/usr/bin/env bash
# Soak test (not in CI): DURATION seconds (default 300) of wrk load
# (1 thread, 16 connections) on kiln apps/httpd behind user-mode
# networking, sampling the guest's heap (from /api/status) every 30 s.
# Passes when wrk saw no socket errors and no non-2xx answers, the heap
# in use under load stays within 1 MiB of the first sample, and after the
# load (every connection closed) it is no larger than that first sample.
# Usage: bench/soak.sh [DURATION_SECS].   Needs /dev/kvm and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-300}
command -v wrk >/dev/null || { echo "bench/soak.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }
cargo build -q --release -p kiln
KILN=target/release/kiln
$KILN build -q apps/httpd >/dev/null 2>&1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$KILN run -q apps/httpd -p "$port:80" --timeout $((DURATION + 120)) -- --admin >/tmp/kiln-soak.log 2>&1 &
kiln_pid=$!
trap 'kill $kiln_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
heap() { curl -s "http://127.0.0.1:$port/api/status" | sed 's/.*"heap_used_bytes":\([0-9]*\).*/\1/'; }
wrk -t1 -c16 -d"${DURATION}s" "http://127.0.0.1:$port/" >/tmp/kiln-soak.wrk &
wrk_pid=$!
samples=()
sleep 10
while kill -0 $wrk_pid 2>/dev/null; do
    samples+=("$(heap)")
    echo "soak: t=$(( ${#samples[@]} * 30 - 20 ))s heap_used_bytes=${samples[-1]}"
    for _ in $(seq 30); do kill -0 $wrk_pid 2>/dev/null || break; sleep 1; done
done
wait $wrk_pid
sleep 2
after=$(heap)
cat /tmp/kiln-soak.wrk
curl -s -X POST -H 'Content-Length: 0' "http://127.0.0.1:$port/shutdown" >/dev/null || true
errors=$(grep -cE 'Socket errors|Non-2xx' /tmp/kiln-soak.wrk || true)
first=${samples[0]}
drift=0
for s in "${samples[@]}"; do
    d=$(( s > first ? s - first : first - s ))
    (( d > drift )) && drift=$d
done
echo "soak: $(date -u +%Y-%m-%d) ${DURATION}s, ${#samples[@]} heap samples under load, first $first bytes, largest drift $drift bytes, $after bytes after the load, wrk error lines: $errors"
if (( errors == 0 && drift <= 1048576 && after <= first )); then
    echo "soak: PASS"
else
    echo "soak: FAIL"
    exit 1
fi
