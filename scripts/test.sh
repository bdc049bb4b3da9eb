#!/usr/bin/env bash
# Every check: formatting, lints, unit tests, and the integration tests that run real programs
# (C programs built by the tests, Rust examples, python3) under LD_PRELOAD=libfdguard.so.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# `cargo test` does not rebuild the cdylib the integration tests preload: build it first.
cargo build --workspace
cargo test --workspace --all-targets
