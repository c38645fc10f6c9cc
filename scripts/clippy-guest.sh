#!/usr/bin/env bash
# Lints the guest-only code, which a plain `cargo clippy --workspace` does
# not see: once as a PVH image (--cfg kiln_guest) and once as a linuxu
# executable (--cfg kiln_guest --cfg kiln_linuxu). Own target directories.
set -euo pipefail
cd "$(dirname "$0")/.."
guest_packages=(-p kiln-hal -p kiln-rt -p hello -p panic -p fault -p hang -p selftest -p ktest -p prodcons -p bench-core -p kiln-rootfs -p fsdemo -p kiln-virtio-blk -p diskdemo -p bench-disk -p diskfs -p kiln-fs-ext2 -p kiln-virtio -p kiln-fs-9p -p kiln-netdev -p kiln-virtio-net -p kiln-net -p kiln-http -p httpd -p netdemo -p fileserver)
for variant in pvh linuxu; do
    flags=(--cfg kiln_guest -C panic=abort)
    [ "$variant" = linuxu ] && flags+=(--cfg kiln_linuxu)
    CARGO_ENCODED_RUSTFLAGS=$(printf '%s\x1f' "${flags[@]}" | sed 's/\x1f$//') \
        cargo clippy --target x86_64-unknown-linux-gnu --target-dir "target/guest-clippy-$variant" \
        "${guest_packages[@]}" -- -D warnings
done
