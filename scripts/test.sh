#!/usr/bin/env bash
# Every check: formatting, lints, unit tests, and the integration tests that run real programs
# (C programs built by the tests, Rust examples, python3) under LD_PRELOAD=libfdguard.so.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/cli_attach.rs attaches to a real Redis too: installed here where the machine allows.
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    timeout 300 apt-get install -y -q redis-server >/dev/null 2>&1 \
        || echo "test.sh: redis-server could not be installed; its attach test will say so"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# `cargo test` does not rebuild the cdylib the integration tests preload: build it first.
cargo build --workspace
cargo test --workspace --all-targets
