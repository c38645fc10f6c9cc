#!/usr/bin/env bash
# Boot benchmark: the same hello app, N boots each on the embedded KVM VMM
# (`kiln run --platform kvm`), on QEMU microvm with KVM (`--platform qemu`,
# the same image) and as a linuxu process (`--platform linuxu`, the linuxu
# build of the same sources), interleaved in one run, end to end (process
# start to exit, as a user sees it). Prints medians and ratios, the image
# sizes (stripped), and the smallest -m that boots on each VM platform.
#
# Usage: bench/boot.sh [N]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-30}

cargo build -q --release -p kiln
KILN=target/release/kiln
$KILN build -q --platform kvm apps/hello >/dev/null 2>&1
$KILN build -q --platform linuxu apps/hello >/dev/null 2>&1
IMAGE=target/guest/x86_64-unknown-linux-gnu/guest/hello
LINUXU_IMAGE=target/guest-linuxu/x86_64-unknown-linux-gnu/guest/hello
[ -r /dev/kvm ] || { echo "bench/boot.sh needs /dev/kvm" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "bench/boot.sh needs qemu-system-x86_64" >&2; exit 1; }

now_ns() { date +%s%N; }
boot_ms() { # platform -> prints wall milliseconds of one boot, fails if the output is wrong
    local t0 t1 out
    local image=$IMAGE
    [ "$1" = linuxu ] && image=$LINUXU_IMAGE
    t0=$(now_ns)
    out=$($KILN run -m 16M --platform "$1" "$image" -- bench 2>/dev/null)
    t1=$(now_ns)
    [ "$out" = $'Hello from Kiln!\nbench' ] || { echo "unexpected output on $1: $out" >&2; exit 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e6 }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Warm-up (page cache, QEMU's shared libraries).
boot_ms kvm >/dev/null; boot_ms qemu >/dev/null; boot_ms linuxu >/dev/null
kvm_times=(); qemu_times=(); linuxu_times=()
for _ in $(seq "$N"); do
    kvm_times+=("$(boot_ms kvm)")
    qemu_times+=("$(boot_ms qemu)")
    linuxu_times+=("$(boot_ms linuxu)")
done
kvm_med=$(printf '%s\n' "${kvm_times[@]}" | median)
qemu_med=$(printf '%s\n' "${qemu_times[@]}" | median)
linuxu_med=$(printf '%s\n' "${linuxu_times[@]}" | median)

smallest_mem() { # platform -> smallest -m (KiB, 16 KiB steps) that prints the greeting
    local kib
    for kib in $(seq 1088 16 4096); do
        if $KILN run -m "${kib}K" --platform "$1" "$IMAGE" 2>/dev/null | grep -q 'Hello from Kiln!'; then
            echo "$kib"; return
        fi
    done
    echo "none"
}

size=$(stat -c %s "$IMAGE")
tmp=$(mktemp); strip -o "$tmp" "$IMAGE"; stripped=$(stat -c %s "$tmp"); rm -f "$tmp"
echo "boot benchmark, $(date -u +%Y-%m-%d), $N boots per platform, interleaved"
printf '%-28s %10s\n' "platform" "median ms"
printf '%-28s %10s\n' "kiln kvm (embedded VMM)" "$kvm_med"
printf '%-28s %10s\n' "kiln qemu (microvm, KVM)" "$qemu_med"
printf '%-28s %10s\n' "kiln linuxu (process)" "$linuxu_med"
awk -v k="$kvm_med" -v q="$qemu_med" 'BEGIN { printf "ratio kvm/qemu: %.3f (target <= 0.5)\n", k / q }'
awk -v l="$linuxu_med" -v q="$qemu_med" 'BEGIN { printf "ratio linuxu/qemu: %.3f\n", l / q }'
echo "hello image: $size bytes (stripped: $stripped bytes); linuxu executable: $(stat -c %s "$LINUXU_IMAGE") bytes"
echo "smallest -m that boots: kvm $(smallest_mem kvm) KiB, qemu $(smallest_mem qemu) KiB"
