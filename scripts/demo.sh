#!/usr/bin/env bash
# Builds fdguard and shows it catching a real leak: a "server" whose request handler fopen()s a
# file per request and never fclose()s it (seed 000). fdguard's report, asked for with SIGUSR2,
# names the leaking function and counts the streams it holds.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
lib="$PWD/target/release/libfdguard.so"
work="$(mktemp -d)"
trap 'rm -rf "$work"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
cc -O2 -g -o "$work/fopen_leak" examples/c/fopen_leak.c

echo "== running examples/c/fopen_leak.c (200 requests) under fdguard; sending SIGUSR2"
LD_PRELOAD="$lib" "$work/fopen_leak" 200 wait >"$work/out" &
pid=$!
for _ in $(seq 100); do grep -q served "$work/out" 2>/dev/null && break; sleep 0.05; done
kill -USR2 "$pid"
sleep 1
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=
