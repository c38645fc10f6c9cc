#!/usr/bin/env bash
# Core-services benchmark: context-switch cost (two threads yielding to
# each other, cooperative and preemptive schedulers), thread create+join
# cost, and allocator throughput (allocate/free pairs of mixed sizes, 64
# live blocks, for each heap allocator), measured inside the guest by
# apps/bench-core with the guest's monotonic clock, on the embedded VMM,
# QEMU and linuxu in one run. Each platform runs RUNS times; medians are
# printed. Usage: bench/core.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
cargo build -q --release -p kiln
KILN=target/release/kiln
platforms=(linuxu)
[ -r /dev/kvm ] && platforms=(kvm qemu linuxu)
command -v qemu-system-x86_64 >/dev/null || platforms=("${platforms[@]/qemu}")
tmp=$(mktemp -d)
for p in "${platforms[@]}"; do
    [ -n "$p" ] || continue
    $KILN build -q --platform "$p" apps/bench-core >/dev/null 2>&1
    for _ in $(seq "$RUNS"); do
        $KILN run -q --platform "$p" apps/bench-core 2>/dev/null | grep '^bench: ' | grep -v platform >>"$tmp/$p"
    done
done
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "core benchmark, $(date -u +%Y-%m-%d), median of $RUNS runs per platform (measured in the guest)"
printf '%-36s' "metric"
for p in "${platforms[@]}"; do [ -n "$p" ] && printf '%14s' "$p"; done
echo
for metric in context_switch context_switch_preemptive_sched thread_create_join alloc_tlsf alloc_buddy alloc_bump; do
    unit=$(grep -h "^bench: $metric " "$tmp"/* | head -1 | awk '{ print $4 }')
    printf '%-36s' "$metric ($unit)"
    for p in "${platforms[@]}"; do
        [ -n "$p" ] || continue
        printf '%14s' "$(grep "^bench: $metric " "$tmp/$p" | awk '{ print $3 }' | median)"
    done
    echo
done
rm -rf "$tmp"
