#!/usr/bin/env bash
# Every check: formatting, lints, unit tests, and the integration tests that run real programs
# (C programs built by the tests, Rust examples, python3, redis-server, node, java, nginx)
# under LD_PRELOAD=libfdguard.so. Every test runs even when one fails; a summary ends the
# output, and the exit status is non-zero when anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

# What the build and the tests run besides the Rust toolchain: a command, and the Debian
# package that brings it, installed here when it is missing and the machine allows (root,
# apt-get: scripts/needs.sh). A test whose program is missing fails and names it
# (tests/suite/common `require`).
needs=(
    "cc gcc"
    "c++ g++"
    "prlimit util-linux"
    "promtool prometheus"
    "setpriv util-linux"
    "strip binutils"
    "readelf binutils"
    "addr2line binutils"
    "python3 python3"
    "redis-server redis-server"
    "node nodejs"
    "java openjdk-17-jdk-headless"
    "javac openjdk-17-jdk-headless"
    "nginx nginx"
    "go golang-go"
    # Debian's package rather than pip's: one installer for the table, and Debian's python3 for
    # it (pip would install into whichever python3 comes first on PATH: pyenv's, on the
    # developers' machines). Where init is systemd the package also starts its service
    # (Debian's default configuration, no programs); without an init, invoke-rc.d starts none.
    "supervisord supervisor"
    # The eBPF recorder of `fdguard attach` on Go and static programs (cli/build.rs).
    "clang clang"
    # Debian's own python3 (the runtime tests run it beside pyenv's; `python3` above may be
    # pyenv's).
    "/usr/bin/python3 python3"
)
. scripts/needs.sh
install_missing "the tests that need them will fail" "${needs[@]}"

# The CPython versions tests/suite/runtime_python.rs runs besides those: pyenv's 3.10, 3.12
# and 3.13 (Debian has no package of them), installed with pyenv where it is and can fetch them.
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
for version in 3.10 3.12 3.13; do
    compgen -G "$pyenv_root/versions/$version.*/bin/python$version" >/dev/null && continue
    if command -v pyenv >/dev/null; then
        echo "test.sh: installing CPython $version with pyenv"
        timeout 900 pyenv install -s "$version" >/dev/null 2>&1 \
            || echo "test.sh: pyenv could not install CPython $version; the tests that need it will fail"
    else
        echo "test.sh: CPython $version is not in $pyenv_root and pyenv is missing; the tests that need it will fail"
    fi
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# `cargo test` does not rebuild the cdylib the integration tests preload: build it first.
cargo build --workspace

built=$SECONDS
# Eight test threads on two cores: the tests that measure CPU take turns (one lock), and the
# threads waiting for it would otherwise leave the cores to the one that holds it.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --no-fail-fast -- --test-threads=8 2>&1 | tee "$log" \
    || status=$?

passed=$(awk '/^test result:/ { n += $4 } END { print n + 0 }' "$log")
failed=$(awk '/^test result:/ { n += $6 } END { print n + 0 }' "$log")
echo
echo "== test.sh summary: $((SECONDS - start)) s in all, $((built - start)) s to check and build, $((SECONDS - built)) s to build and run the tests =="
if [ "$status" != 0 ]; then
    echo "failed:"
    grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/    \1/' || true
    # What each failure said, here at the end where a truncated log still shows it: from the
    # `panicked at` line, up to 12 lines.
    awk '/^---- .* stdout ----$/ { name = $2; shown = 0; next }
         /^failures:$/ { name = ""; shown = 0; next }
         /panicked at/ && name != "" { shown = 1; n = 0; print "--- " name ":" }
         shown && n < 12 { print "    " $0; n++ }' "$log" || true
    [ "$failed" != 0 ] || echo "    (no test failed: cargo test itself did, see above)"
fi
echo "summary: $passed passed, $failed failed"
exit "$status"
