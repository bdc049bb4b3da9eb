#!/usr/bin/env bash
# Builds fdguard and shows it catching a real leak: a "server" whose request handler fopen()s a
# file per request and never fclose()s it (seed 000). First `fdguard inspect` looks at the
# running process from outside, as at any PID; then the same server runs under the library
# (`fdguard run`), and `fdguard report` names the leaking function and counts its streams.
set -euo pipefail
cd "$(dirname "$0")/.."

# fdguard's eBPF recorder (`fdguard attach` on Go and static programs) is compiled with clang.
. scripts/needs.sh
install_missing "fdguard is built without eBPF attach" "clang clang"

# Cargo's own progress shows: a first build compiles every dependency in release mode.
echo "== building fdguard (libfdguard.so and the fdguard command, release); the first build takes a few minutes"
cargo build --release
echo
fdguard="$PWD/target/release/fdguard"
work="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
cc -O2 -g -o "$work/fopen_leak" examples/c/fopen_leak.c

ready() { for _ in $(seq 100); do grep -q served "$1" 2>/dev/null && return; sleep 0.05; done; }

echo "== examples/c/fopen_leak.c served 200 requests; what any PID shows: fdguard inspect"
"$work/fopen_leak" 200 wait >"$work/plain.out" &
pids+=($!)
ready "$work/plain.out"
"$fdguard" inspect "${pids[0]}" | head -n 12

echo
echo "== the same server under fdguard; who holds the fds: fdguard report"
"$fdguard" run --report "$work/report.%p.log" -- "$work/fopen_leak" 200 wait >"$work/guarded.out" &
pids+=($!)
ready "$work/guarded.out"
"$fdguard" report "${pids[1]}" | head -n 16
