#!/usr/bin/env bash
# Storage benchmark: virtio-blk (apps/bench-disk on the embedded VMM, a
# 64 MiB --disk file) and a host volume (bench-disk volume: the file
# /data/bench.bin on -v DIR:/data, virtio-9p) against the host doing the
# same I/O on the disk file directly (buffered pread/pwrite from Python,
# fdatasync after each write phase), in one run. Pattern: 32 MiB sequential write and read in 4 KiB
# requests, then 2048 random 4 KiB writes and reads (the guest's xorshift
# offsets). Each side runs RUNS times; medians and guest/host ratios are
# printed. Usage: bench/disk.sh [RUNS]   (default 5). Needs /dev/kvm.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
[ -r /dev/kvm ] || { echo "bench/disk.sh: /dev/kvm is not usable here; nothing to measure" >&2; exit 1; }
cargo build -q --release -p kiln
KILN=target/release/kiln
$KILN build -q apps/bench-disk >/dev/null 2>&1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
truncate -s 64M "$tmp/disk.img"
mkdir "$tmp/vol"
host() {
    python3 - "$tmp/disk.img" <<'PY'
import os, sys, time
SPAN, IO, OPS = 32 << 20, 4096, 2048
fd = os.open(sys.argv[1], os.O_RDWR)
buf = b"\x5a" * IO
def offsets():
    x, mask = 1, (1 << 64) - 1
    for _ in range(OPS):
        x ^= (x << 13) & mask; x ^= x >> 7; x ^= (x << 17) & mask
        yield (x % (SPAN // IO)) * IO
def run(write, random):
    start = time.perf_counter_ns()
    seq = range(0, SPAN, IO)
    moved = 0
    for off in (offsets() if random else seq):
        if write: os.pwrite(fd, buf, off)
        else: os.pread(fd, IO, off)
        moved += IO
    if write: os.fdatasync(fd)
    return moved / (1 << 20) / ((time.perf_counter_ns() - start) / 1e9)
for metric, w, r in (("seq_write", 1, 0), ("seq_read", 0, 0), ("rand_write", 1, 1), ("rand_read", 0, 1)):
    print(f"bench: {metric} {run(w, r):.1f} MiB/s")
PY
}
for _ in $(seq "$RUNS"); do
    $KILN run -q apps/bench-disk --disk "$tmp/disk.img" 2>/dev/null | grep '^bench: ' >>"$tmp/guest"
    $KILN run -q apps/bench-disk -v "$tmp/vol:/data" -- volume 2>/dev/null | grep '^bench: ' >>"$tmp/volume"
    host >>"$tmp/host"
done
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "disk benchmark, $(date -u +%Y-%m-%d), median of $RUNS runs, MiB/s (4 KiB requests)"
printf '%-14s%14s%14s%14s%10s%10s\n' metric "virtio-blk" "9p volume" "host direct" "blk/host" "9p/host"
for metric in seq_write seq_read rand_write rand_read; do
    g=$(grep "^bench: $metric " "$tmp/guest" | awk '{ print $3 }' | median)
    v=$(grep "^bench: $metric " "$tmp/volume" | awk '{ print $3 }' | median)
    h=$(grep "^bench: $metric " "$tmp/host" | awk '{ print $3 }' | median)
    printf '%-14s%14s%14s%14s%10s%10s\n' "$metric" "$g" "$v" "$h" \
        "$(awk -v g="$g" -v h="$h" 'BEGIN { printf "%.3f", g / h }')" \
        "$(awk -v g="$v" -v h="$h" 'BEGIN { printf "%.3f", g / h }')"
done
