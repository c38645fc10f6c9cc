#!/usr/bin/env bash
# Lints the guest-only code (compiled under --cfg kiln_guest), which a plain
# `cargo clippy --workspace` does not see. Uses its own target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
guest_packages=(-p kiln-hal -p kiln-rt -p hello -p panic -p fault -p hang -p selftest)
CARGO_ENCODED_RUSTFLAGS=$(printf '%s\x1f' --cfg kiln_guest -C panic=abort | sed 's/\x1f$//') \
    cargo clippy --target x86_64-unknown-linux-gnu --target-dir target/guest-clippy \
    "${guest_packages[@]}" -- -D warnings
