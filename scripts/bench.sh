#!/usr/bin/env bash
# fdguard benchmark harness.
#
#   scripts/bench.sh                 # full run (~10 min), writes BENCHMARKS.md
#   BENCH_QUICK=1 scripts/bench.sh   # smoke run (< 1 min), writes target/bench/BENCHMARKS-quick.md
#
# Builds the C workloads in bench/ (and, unless FDGUARD_LIB is given, the
# library with `cargo build --release`), runs native / fdguard / peer
# configurations interleaved round by round, and prints one markdown report
# (also written to $BENCH_OUT).  Exits non-zero on real errors (a workload
# crashing or timing out, a missing library, a failed build), never because a
# performance target was missed.  Run it from the repository root.
#
# Environment (all optional):
#   FDGUARD_LIB          preload library (default target/release/libfdguard.so,
#                        built with cargo if that default is used)
#   BENCH_QUICK=1        tiny configuration: few rounds, few iterations
#   BENCH_ROUNDS         rounds of the interleaved micro runs (9; quick 2)
#   BENCH_SCALE          multiplier for the micro iteration counts (1; quick 0.03)
#   BENCH_OPS            micro workloads (open open2 socket fopen pipe accept)
#   BENCH_DEPTHS         call depths (5 30)
#   BENCH_BUILDS         nofp = -O2, fp = -O2 -fno-omit-frame-pointer (nofp fp)
#   BENCH_SECTIONS       any of: micro macro mem cli runtime trace (all six)
#   BENCH_PEERS=0        skip valgrind / strace / ltrace
#   BENCH_PEER_ROUNDS    rounds that include the peers (3; quick 1)
#   BENCH_TARGET_ROUNDS  rounds of the hot-path targets' workload (open, nofp, depth 30), which
#                        runs on alone after the other micro rounds (31; quick 2): 9 rounds do
#                        not settle a 3 % target on a noisy machine
#   BENCH_PEER_DEPTHS    depths the peers run at (5 30; quick 30); peers use the nofp build
#   BENCH_MACRO_CONNS    connections per macro run (20000; quick 1500)
#   BENCH_MACRO_ROUNDS   rounds of the macro workload (15; quick 2): runs are short, noise is high
#   BENCH_MACRO_PAR      parallel load-generator processes (4)
#   BENCH_MEM_FDS        fds in the memory/report workload (100000), from 1000 stacks
#   BENCH_MEM_ROUNDS     rounds of the memory workload (3; quick 1)
#   BENCH_MEM_FALLBACK=0 skip the memory workload if RLIMIT_NOFILE cannot be raised
#                        (default: measure with as many fds as the limit allows)
#   BENCH_CLI_FDS        fds held for `fdguard inspect` (100000; as many as the limit allows)
#   BENCH_CLI_ROUNDS     rounds of the command's workload (5; quick 1)
#   BENCH_REPORTS        SIGUSR2 reports timed per format and round (3; quick 1)
#   BENCH_REPORT_TIMEOUT seconds to wait for one report (60; quick 20)
#   BENCH_TEXT_END_MARKER  last line of a text report; {pid} = the process id
#   BENCH_RUNTIME_ROUNDS rounds of the runtimes' workloads (9; quick 2)
#   BENCH_RUNTIME_SCALE  multiplier for their iteration counts (1; quick 0.05)
#   BENCH_TRACE_ROUNDS   rounds of the traced Go server's workload (5; quick 1)
#   BENCH_TRACE_REQUESTS requests per traced-server run and mode (20000; quick 2000)
#   BENCH_OUT            output file (BENCHMARKS.md; quick target/bench/BENCHMARKS-quick.md)
#   BENCH_BUILD_DIR      where the workloads are built (target/bench)
#   BENCH_CARGO=0        do not run cargo even for the default library path
#   CC, CFLAGS_EXTRA     C compiler (cc) and extra flags for the workloads
set -euo pipefail

# ---- the one place that knows how a text report ends ---------------------
TEXT_END_MARKER=${BENCH_TEXT_END_MARKER:-'=={pid}== fdguard: end of report'}

START_DIR=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { echo "bench.sh: error: $*" >&2; exit 1; }
warn() { echo "bench.sh: warning: $*" >&2; }
note() { echo "bench.sh: $*" >&2; }

abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$START_DIR/$1" ;; esac; }

QUICK=${BENCH_QUICK:-0}
[[ $QUICK == 0 || $QUICK == 1 ]] || die "BENCH_QUICK must be 0 or 1"
q() { if [[ $QUICK == 1 ]]; then echo "$2"; else echo "$1"; fi; }

ROUNDS=${BENCH_ROUNDS:-$(q 9 2)}
SCALE=${BENCH_SCALE:-$(q 1 0.03)}
OPS=${BENCH_OPS:-"open open2 socket fopen pipe accept"}
DEPTHS=${BENCH_DEPTHS:-"5 30"}
BUILDS=${BENCH_BUILDS:-"nofp fp"}
SECTIONS=${BENCH_SECTIONS:-"micro macro mem cli runtime trace"}
PEERS=${BENCH_PEERS:-1}
PEER_ROUNDS=${BENCH_PEER_ROUNDS:-$(q 3 1)}
TARGET_ROUNDS=${BENCH_TARGET_ROUNDS:-$(q 31 2)}
PEER_DEPTHS=${BENCH_PEER_DEPTHS:-$(q "5 30" "30")}
MACRO_CONNS=${BENCH_MACRO_CONNS:-$(q 20000 1500)}
MACRO_ROUNDS=${BENCH_MACRO_ROUNDS:-$(q 15 2)}
MACRO_PAR=${BENCH_MACRO_PAR:-4}
MEM_FDS=${BENCH_MEM_FDS:-100000}
MEM_PATHS=1000
MEM_ROUNDS=${BENCH_MEM_ROUNDS:-$(q 3 1)}
MEM_FALLBACK=${BENCH_MEM_FALLBACK:-1}
REPORTS=${BENCH_REPORTS:-$(q 3 1)}
CLI_FDS=${BENCH_CLI_FDS:-100000}
CLI_ROUNDS=${BENCH_CLI_ROUNDS:-$(q 5 1)}
REPORT_TIMEOUT=${BENCH_REPORT_TIMEOUT:-$(q 60 20)}
RUNTIME_ROUNDS=${BENCH_RUNTIME_ROUNDS:-$(q 9 2)}
RUNTIME_SCALE=${BENCH_RUNTIME_SCALE:-$(q 1 0.05)}
TRACE_ROUNDS=${BENCH_TRACE_ROUNDS:-$(q 5 1)}
TRACE_REQUESTS=${BENCH_TRACE_REQUESTS:-$(q 20000 2000)}
# Paths given by the caller are relative to where they called from; the
# defaults are relative to the repository root.
OUT=$(abspath "${BENCH_OUT:-$ROOT/$(q BENCHMARKS.md target/bench/BENCHMARKS-quick.md)}")
BUILD=$(abspath "${BENCH_BUILD_DIR:-$ROOT/target/bench}")
CC=${CC:-cc}
LIB_SET=${FDGUARD_LIB+set}
LIB=$(abspath "${FDGUARD_LIB:-$ROOT/target/release/libfdguard.so}")

for v in ROUNDS PEER_ROUNDS TARGET_ROUNDS MACRO_ROUNDS MACRO_CONNS MACRO_PAR MEM_FDS MEM_ROUNDS REPORTS REPORT_TIMEOUT CLI_FDS CLI_ROUNDS RUNTIME_ROUNDS TRACE_ROUNDS TRACE_REQUESTS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $SCALE =~ ^[0-9]*\.?[0-9]+$ ]] || die "BENCH_SCALE must be a number (got '$SCALE')"
[[ $RUNTIME_SCALE =~ ^[0-9]*\.?[0-9]+$ ]] || die "BENCH_RUNTIME_SCALE must be a number (got '$RUNTIME_SCALE')"
(( MEM_FDS >= MEM_PATHS )) || die "BENCH_MEM_FDS must be at least $MEM_PATHS"
has_section() { [[ " $SECTIONS " == *" $1 "* ]]; }
# The workload the hot-path targets are judged on, and how many rounds it gets: at least the
# other micro workloads' (none extra if it is not being run).
is_target() { [[ $1 == nofp && $2 == open && $3 == 30 ]]; }
target_rounds() {
    local b o d
    for b in $BUILDS; do for o in $OPS; do for d in $DEPTHS; do
        if is_target "$b" "$o" "$d" && ((TARGET_ROUNDS > ROUNDS)); then
            echo "$TARGET_ROUNDS"
            return
        fi
    done; done; done
    echo "$ROUNDS"
}

# Micro iteration counts at scale 1 (each native run takes ~0.1-0.2 s here).
declare -A ITERS_BASE=([open]=200000 [open2]=200000 [socket]=60000 [fopen]=150000 [pipe]=100000 [accept]=30000)
# Peers are 100x-1000x slower: small fixed counts, cost still reported per op.
declare -A PEER_ITERS=([valgrind]=$(q 2000 200) [strace]=$(q 200 30) [ltrace]=$(q 500 50))
STRACE_SET=openat,open,close,socket,pipe,pipe2,accept,accept4
LTRACE_SET='open+open64+openat+openat64+close+socket+pipe+pipe2+accept+accept4+fopen+fopen64+fclose'

for op in $OPS; do [[ -n ${ITERS_BASE[$op]:-} ]] || die "unknown workload '$op' in BENCH_OPS"; done
for b in $BUILDS; do [[ $b == nofp || $b == fp ]] || die "unknown build '$b' in BENCH_BUILDS"; done
for d in $DEPTHS $PEER_DEPTHS; do [[ $d =~ ^[0-9]+$ ]] || die "bad depth '$d'"; done

# ---- temp dir, background processes, cleanup ------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fdguard-bench.XXXXXX")
BG_PIDS=()
FG_PID=
cleanup() {
    local p
    [[ -z $FG_PID ]] || { kill "$FG_PID" 2>/dev/null || true; wait "$FG_PID" 2>/dev/null || true; }
    for p in "${BG_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${BG_PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
forget_pid() { # remove $1 from BG_PIDS
    local keep=() p
    for p in "${BG_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    BG_PIDS=("${keep[@]}")
}
# Stop a background process we started; never fails.
stop_bg() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

# Keep the caller's FDGUARD_* settings out of every run: each configuration
# sets exactly the variables it is about.
# shellcheck disable=SC2163 # un-export the variable named by $v
while IFS= read -r v; do export -n "$v"; done < <(compgen -e | grep '^FDGUARD_' || true)
unset LD_PRELOAD

RAW=$TMP/raw.tsv
: >"$RAW"
record() { (IFS=$'\t'; echo "$*") >>"$RAW"; }

# ---- build ----------------------------------------------------------------
command -v "$CC" >/dev/null || die "C compiler '$CC' not found"
command -v python3 >/dev/null || die "python3 not found"
command -v timeout >/dev/null || die "timeout (coreutils) not found"
mkdir -p "$BUILD" "$(dirname "$OUT")"

if [[ -z $LIB_SET && ${BENCH_CARGO:-1} != 0 ]]; then
    if command -v cargo >/dev/null && [[ -f Cargo.toml ]]; then
        note "building the library: cargo build --release"
        cargo build --release >&2 || die "cargo build --release failed"
    fi
fi
[[ -f $LIB ]] || die "preload library not found: $LIB (build it with 'cargo build --release' or set FDGUARD_LIB)"

note "building workloads in $BUILD"
WFLAGS="-Wall -Wextra -std=gnu11"
# shellcheck disable=SC2086
{
    $CC -O2 $WFLAGS ${CFLAGS_EXTRA:-} -o "$BUILD/fdbench-nofp" bench/fdbench.c
    $CC -O2 -fno-omit-frame-pointer $WFLAGS ${CFLAGS_EXTRA:-} -o "$BUILD/fdbench-fp" bench/fdbench.c
    $CC -O2 $WFLAGS ${CFLAGS_EXTRA:-} -o "$BUILD/fdserve" bench/fdserve.c
    $CC -O2 $WFLAGS ${CFLAGS_EXTRA:-} -o "$BUILD/fdload" bench/fdload.c
    $CC -O2 $WFLAGS ${CFLAGS_EXTRA:-} -o "$BUILD/fdmem" bench/fdmem.c
    $CC -O2 $WFLAGS ${CFLAGS_EXTRA:-} -o "$BUILD/fdwait" bench/fdwait.c
    $CC -O2 $WFLAGS ${CFLAGS_EXTRA:-} -o "$BUILD/fdhold" bench/fdhold.c
    $CC -O2 $WFLAGS ${CFLAGS_EXTRA:-} -shared -fPIC -DFDREF_FORWARD -o "$BUILD/fdref-forward.so" bench/fdref.c -ldl
    $CC -O2 $WFLAGS ${CFLAGS_EXTRA:-} -shared -fPIC -o "$BUILD/fdref-record.so" bench/fdref.c -ldl
} || die "building the workloads failed"

# Load check: the library must load into a process without breaking it.
LD_PRELOAD=$LIB FDGUARD_REPORT=$TMP/loadcheck.report "$BUILD/fdbench-nofp" open 10 1 >/dev/null 2>"$TMP/loadcheck.err" \
    || { cat "$TMP/loadcheck.err" >&2; die "a trivial workload fails with LD_PRELOAD=$LIB"; }

# ---- peers ------------------------------------------------------------------
declare -A PEER_STATUS=() # name -> ok | message
PEER_LIST=()
probe_peer() { # name probe-command...
    local name=$1; shift
    if ! command -v "$name" >/dev/null; then
        PEER_STATUS[$name]="not installed"
    elif "$@" >"$TMP/probe.out" 2>&1; then
        PEER_STATUS[$name]=ok
        PEER_LIST+=("$name")
    else
        PEER_STATUS[$name]="unusable: $(grep -m1 . "$TMP/probe.out" | cut -c1-80 | tr '\t|' '  ')"
    fi
}
if has_section micro && [[ $PEERS != 0 ]]; then
    probe_peer valgrind timeout 60 valgrind --tool=none --track-fds=yes --log-file=/dev/null true
    probe_peer strace timeout 60 strace -f -k -e trace=close -o /dev/null true
    probe_peer ltrace timeout 60 ltrace -f -e close -o /dev/null true
else
    PEER_STATUS=([valgrind]="not run" [strace]="not run" [ltrace]="not run")
fi
for p in valgrind strace ltrace; do record peer "$p" "${PEER_STATUS[$p]}"; done

# ---- running one measurement -----------------------------------------------
# Command prefix for a configuration (the workload's argv follows it).
config_prefix() { # config report-file
    case $1 in
    native | native-again) PREFIX=() ;;
    fdg-depth0) PREFIX=(env "LD_PRELOAD=$LIB" "FDGUARD_REPORT=$2" FDGUARD_DEPTH=0) ;;
    fdg-default) PREFIX=(env "LD_PRELOAD=$LIB" "FDGUARD_REPORT=$2") ;;
    fdg-close) PREFIX=(env "LD_PRELOAD=$LIB" "FDGUARD_REPORT=$2" FDGUARD_CLOSE_STACKS=1) ;;
    ref-forward) PREFIX=(env "LD_PRELOAD=$BUILD/fdref-forward.so") ;;
    ref-record) PREFIX=(env "LD_PRELOAD=$BUILD/fdref-record.so") ;;
    valgrind) PREFIX=(valgrind --tool=none --track-fds=yes "--log-file=$TMP/valgrind.%p.log") ;;
    strace) PREFIX=(strace -f -k "-e" "trace=$STRACE_SET" -o /dev/null) ;;
    ltrace) PREFIX=(ltrace -f -e "$LTRACE_SET" -o "$TMP/ltrace.log") ;;
    *) die "internal: unknown config $1" ;;
    esac
}
is_peer() { [[ $1 == valgrind || $1 == strace || $1 == ltrace ]]; }

# Run a command with a time limit and wait for it; sets OUTPUT (its stdout),
# leaves its stderr in $TMP/stderr, returns its status.  It runs in the
# background and is waited for with `wait`, so that INT/TERM reach our traps at
# once instead of after the command (bash defers traps during a foreground
# command).
run_bounded() { # limit-seconds command...
    local limit=$1 st=0; shift
    timeout --foreground -k 5 "$limit" "$@" >"$TMP/stdout" 2>"$TMP/stderr" &
    FG_PID=$!
    wait "$FG_PID" 2>/dev/null || st=$?
    FG_PID=
    OUTPUT=$(<"$TMP/stdout")
    return $st
}
fail_run() { # description status
    local what=$1 st=$2
    echo "---- stderr of the failed run:" >&2
    tail -n 20 "$TMP/stderr" >&2 || true
    if [[ $st == 124 ]]; then die "$what: timed out"; fi
    if [[ $st =~ ^[0-9]+$ ]] && ((st > 128)); then
        die "$what: killed by signal $((st - 128)) ($(kill -l $((st - 128)) 2>/dev/null || echo '?'))"
    fi
    die "$what: exited with status $st"
}

micro_iters() { # op
    python3 -c "import sys; print(max(1, int(round(${ITERS_BASE[$1]} * float(sys.argv[1])))))" "$SCALE"
}

run_micro() { # build op depth config round
    local build=$1 op=$2 depth=$3 config=$4 round=$5 iters st=0 limit=120 ns fastest
    if is_peer "$config"; then iters=${PEER_ITERS[$config]}; limit=600; else iters=${MICRO_ITERS[$op]}; fi
    config_prefix "$config" "$TMP/report.$config"
    run_bounded "$limit" "${PREFIX[@]}" "$BUILD/fdbench-$build" "$op" "$iters" "$depth" || st=$?
    rm -f "$TMP/report.$config" "$TMP"/valgrind.*.log "$TMP/ltrace.log"
    ns=$(sed -n 's/.* ns_per_op=\([0-9.]*\).*/\1/p' <<<"$OUTPUT")
    fastest=$(sed -n 's/.* fastest_ns_per_op=\([0-9.]*\).*/\1/p' <<<"$OUTPUT")
    if [[ $st != 0 || -z $ns ]]; then
        [[ $st != 0 ]] || st="ok but printed no ns_per_op ('$OUTPUT')"
        if is_peer "$config"; then
            warn "$config on $op/$build/depth $depth failed ($st); left out"
            tail -n 5 "$TMP/stderr" >&2 || true
            record micro-fail "$op" "$build" "$depth" "$config" "$round" "status $st"
            return 0
        fi
        fail_run "micro $op ($build, depth $depth, $config)" "$st"
    fi
    record micro "$op" "$build" "$depth" "$config" "$round" "$iters" "$ns" "${fastest:-$ns}"
}

# Rotate a list by n positions, so no configuration always runs first.
rotate() { # n items...
    local n=$1; shift
    local a=("$@") k=$#
    local i
    for ((i = 0; i < k; i++)); do printf '%s\n' "${a[$(((i + n) % k))]}"; done
}

# ---- environment -----------------------------------------------------------
ENVF=$TMP/env.tsv
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'cpu\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    printf 'cores\t%s\n' "$(nproc)"
    printf 'kernel\t%s\n' "$(uname -srm)"
    printf 'glibc\t%s\n' "$(getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version 2>/dev/null | head -n1)"
    printf 'cc\t%s\n' "$($CC --version 2>/dev/null | head -n1)"
    if git rev-parse --git-dir >/dev/null 2>&1; then
        c=$(git rev-parse --short HEAD 2>/dev/null || echo "no commits")
        [[ -z $(git status --porcelain --untracked-files=no 2>/dev/null | head -n1) ]] || c="$c (dirty tree)"
        printf 'commit\t%s\n' "$c"
    else
        printf 'commit\t%s\n' "not a git repository"
    fi
    printf 'library\t%s\n' "$LIB ($(stat -c '%s bytes, modified %y' "$LIB" | cut -d. -f1))"
    printf 'valgrind\t%s\n' "$(valgrind --version 2>/dev/null || echo -)"
    printf 'strace\t%s\n' "$(strace -V 2>/dev/null | head -n1 || echo -)"
    printf 'mode\t%s\n' "$(q full "quick (BENCH_QUICK=1)")"
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'peer_rounds\t%s\n' "$PEER_ROUNDS"
    printf 'target_rounds\t%s\n' "$(target_rounds)"
    printf 'mem_rounds\t%s\n' "$MEM_ROUNDS"
    printf 'macro_rounds\t%s\n' "$MACRO_ROUNDS"
    printf 'macro_par\t%s\n' "$MACRO_PAR"
    printf 'macro_conns\t%s\n' "$MACRO_CONNS"
    printf 'runtime_rounds\t%s\n' "$RUNTIME_ROUNDS"
    printf 'text_end_marker\t%s\n' "$TEXT_END_MARKER"
    printf 'peer_depths\t%s\n' "$PEER_DEPTHS"
} >"$ENVF"

T_START=$(date +%s)
# native-again is a second native run in the same round: its "ratio" shows the
# noise floor of the machine (an A/A comparison).
FDG_CONFIGS=(native native-again fdg-depth0 fdg-default fdg-close)

# ---- micro workloads ----------------------------------------------------------
if has_section micro; then
    declare -A MICRO_ITERS=()
    for op in $OPS; do MICRO_ITERS[$op]=$(micro_iters "$op"); done
    last=$(target_rounds)
    for ((r = 1; r <= last; r++)); do
        note "micro: round $r/$last ($(($(date +%s) - T_START)) s so far)"
        for build in $BUILDS; do
            for depth in $DEPTHS; do
                for op in $OPS; do
                    ((r <= ROUNDS)) || is_target "$build" "$op" "$depth" || continue
                    configs=("${FDG_CONFIGS[@]}")
                    # The floor any interposer pays (bench/fdref.c hooks only open and close).
                    [[ $op != open ]] || configs+=(ref-forward ref-record)
                    if ((r <= PEER_ROUNDS)) && [[ $build == nofp && " $PEER_DEPTHS " == *" $depth "* ]]; then
                        configs+=("${PEER_LIST[@]}")
                    fi
                    mapfile -t order < <(rotate "$r" "${configs[@]}")
                    for config in "${order[@]}"; do
                        run_micro "$build" "$op" "$depth" "$config" "$r"
                    done
                done
            done
        done
    done
fi

# ---- macro: loopback server, one connection per request --------------------------
wait_for_line() { # file regex timeout-seconds pid -> 0 found, 1 process died, 2 timeout
    local file=$1 re=$2 limit=$3 pid=$4 i
    for ((i = 0; i < limit * 100; i++)); do
        grep -qE "$re" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { grep -qE "$re" "$file" 2>/dev/null && return 0; return 1; }
        sleep 0.01
    done
    return 2
}

# Starts a server in the background, its stdin from `in` (and not this shell's fd 7, a fifo's
# writer), that prints `port=N` on stdout; sets SPID and PORT.
start_server() { # what in out err command...
    local what=$1 in=$2 out=$3 err=$4
    shift 4
    rm -f "$out" # the poll below must not see a previous run's port
    "$@" <"$in" >"$out" 2>"$err" 7>&- &
    SPID=$!
    BG_PIDS+=("$SPID")
    if ! wait_for_line "$out" '^port=[0-9]+' 30 "$SPID"; then
        cat "$err" >&2
        die "$what did not start"
    fi
    PORT=$(sed -n 's/^port=//p' "$out")
}

run_macro() { # config round
    local config=$1 round=$2 spid port st=0 rate cpu
    config_prefix "$config" "$TMP/report.$config"
    start_server "macro server ($config)" /dev/null "$TMP/serve.out" "$TMP/serve.err" \
        "${PREFIX[@]}" "$BUILD/fdserve" "$MACRO_CONNS"
    spid=$SPID port=$PORT
    run_bounded 300 "$BUILD/fdload" "$port" "$MACRO_CONNS" "$MACRO_PAR" || st=$?
    if [[ $st != 0 ]]; then
        stop_bg "$spid"
        cat "$TMP/serve.err" >&2
        fail_run "macro load generator against the $config server" "$st"
    fi
    st=0
    wait "$spid" || st=$?
    forget_pid "$spid"
    if [[ $st != 0 ]]; then
        cat "$TMP/serve.err" >&2
        die "macro server ($config) exited with status $st"
    fi
    rm -f "$TMP/report.$config"
    rate=$(sed -n 's/.*conns_per_s=\([0-9.]*\).*/\1/p' <<<"$OUTPUT")
    [[ -n $rate ]] || die "macro load generator printed no rate: $OUTPUT"
    cpu=$(sed -n 's/.*cpu_ns_per_conn=\([0-9.]*\).*/\1/p' "$TMP/serve.out")
    [[ -n $cpu ]] || die "macro server printed no CPU time: $(cat "$TMP/serve.out")"
    record macro conn - - "$config" "$round" "$MACRO_CONNS" "$rate"
    record macro cpu - - "$config" "$round" "$MACRO_CONNS" "$cpu"
}

if has_section macro; then
    note "macro: $MACRO_ROUNDS rounds of $MACRO_CONNS connections"
    for ((r = 1; r <= MACRO_ROUNDS; r++)); do
        mapfile -t order < <(rotate "$r" native fdg-depth0 fdg-default)
        for config in "${order[@]}"; do run_macro "$config" "$r"; done
    done
fi

# ---- memory per tracked fd and report cost ------------------------------------------
NOFILE_NEED=$((MEM_FDS + 20000))
MEM_PREFIX=()
MEM_NOTE=""
mem_plan() {
    local soft hard err
    soft=$(ulimit -Sn); hard=$(ulimit -Hn)
    MEM_PER_PATH=$(((MEM_FDS + MEM_PATHS - 1) / MEM_PATHS))
    if [[ $soft == unlimited ]] || ((soft >= NOFILE_NEED)); then
        return 0
    fi
    if err=$(prlimit "--nofile=$NOFILE_NEED:$NOFILE_NEED" -- true 2>&1); then
        MEM_PREFIX=(prlimit "--nofile=$NOFILE_NEED:$NOFILE_NEED" --)
        return 0
    fi
    err=${err##*: }
    local msg="cannot raise RLIMIT_NOFILE to $NOFILE_NEED for $MEM_FDS fds ($err; hard limit $hard; needs root with CAP_SYS_RESOURCE)"
    if [[ $MEM_FALLBACK == 0 || $hard == unlimited ]] || ((hard < MEM_PATHS + 200)); then
        MEM_SKIP="$msg"
        return 0
    fi
    MEM_PER_PATH=$(((hard - 200) / MEM_PATHS))
    MEM_PREFIX=(prlimit "--nofile=$hard:$hard" --)
    MEM_NOTE="$msg: measured with $((MEM_PER_PATH * MEM_PATHS)) fds instead; report times are extrapolated linearly to $MEM_FDS fds"
}

# Start fdmem in the background under a configuration; sets MEM_PID, MEM_LINE.
mem_start() { # config format
    local config=$1 format=$2 st
    config_prefix "$config" "$TMP/mem-report"
    local extra=()
    # No threshold report while the fds are opened: this measures what tracking costs.
    [[ $config == native ]] || extra=("FDGUARD_THRESHOLD=0")
    [[ $config == native || -z $format ]] || extra+=("FDGUARD_FORMAT=$format")
    rm -f "$TMP/mem-report" "$TMP/mem.out"
    "${MEM_PREFIX[@]}" "${PREFIX[@]}" "${extra[@]}" "$BUILD/fdmem" "$MEM_PATHS" "$MEM_PER_PATH" 300 \
        >"$TMP/mem.out" 2>"$TMP/mem.err" &
    MEM_PID=$!
    BG_PIDS+=("$MEM_PID")
    st=0
    wait_for_line "$TMP/mem.out" ' ready$|^SKIP' 120 "$MEM_PID" || st=$?
    if [[ $st != 0 ]]; then
        cat "$TMP/mem.err" "$TMP/mem.out" >&2
        stop_bg "$MEM_PID"
        if [[ $st == 2 ]]; then die "memory workload ($config) did not get ready in 120 s"; fi
        die "memory workload ($config) died before its checkpoint"
    fi
    MEM_LINE=$(grep -m1 -E ' ready$|^SKIP' "$TMP/mem.out")
    if [[ $MEM_LINE == SKIP* ]]; then
        stop_bg "$MEM_PID"
        die "memory workload: $MEM_LINE"
    fi
}

mem_record_rss() { # config round
    local before after n
    before=$(sed -n 's/.*rss_before_kb=\([0-9]*\).*/\1/p' <<<"$MEM_LINE")
    after=$(sed -n 's/.*rss_kb=\([0-9]*\).*/\1/p' <<<"$MEM_LINE")
    n=$(sed -n 's/.*nfds=\([0-9]*\).*/\1/p' <<<"$MEM_LINE")
    record mem rss - - "$1" "$2" "$n" "$before" "$after"
}

time_reports() { # format round
    local format=$1 round=$2 i st out
    for ((i = 1; i <= REPORTS; i++)); do
        st=0
        run_bounded $((REPORT_TIMEOUT + 10)) "$BUILD/fdwait" "$MEM_PID" "$TMP/mem-report" "$format" \
            "$TEXT_END_MARKER" "$REPORT_TIMEOUT" || st=$?
        out="$OUTPUT$(head -c 300 "$TMP/stderr")"
        if [[ $st == 0 ]]; then
            record report "$format" - - fdg-default "$round" "$(sed -n 's/.*nfds=\([0-9]*\).*/\1/p' <<<"$MEM_LINE")" \
                "$(sed -n 's/^report_ms=\([0-9.]*\) bytes=\([0-9]*\).*/\1\t\2/p' <<<"$out")"
        elif [[ $st == 1 ]]; then
            warn "$format report: $out"
            record report-fail "$format" - - fdg-default "$round" "$out"
            return 0
        else
            # The process died on SIGUSR2 (no handler installed?): a missing
            # feature of the library, reported in the table, not a harness error.
            warn "$format report failed: $out"
            tail -n 5 "$TMP/mem.err" >&2 || true
            record report-fail "$format" - - fdg-default "$round" "$(head -c 150 <<<"$out") (no SIGUSR2 handler?)"
            return 0
        fi
    done
}

if has_section mem; then
    MEM_SKIP=""
    mem_plan
    if [[ -n $MEM_SKIP ]]; then
        warn "memory workload skipped: $MEM_SKIP"
        record mem-skip "$MEM_SKIP"
    else
        [[ -z $MEM_NOTE ]] || { warn "$MEM_NOTE"; record mem-note "$MEM_NOTE"; }
        for ((r = 1; r <= MEM_ROUNDS; r++)); do
            note "memory/report: round $r/$MEM_ROUNDS ($((MEM_PER_PATH * MEM_PATHS)) fds)"
            mapfile -t order < <(rotate "$r" native fdg-depth0 text json)
            for what in "${order[@]}"; do
                case $what in
                native | fdg-depth0)
                    mem_start "$what" ""
                    mem_record_rss "$what" "$r"
                    ;;
                text | json)
                    mem_start fdg-default "$what"
                    mem_record_rss fdg-default "$r"
                    time_reports "$what" "$r"
                    ;;
                esac
                stop_bg "$MEM_PID"
            done
        done
    fi
fi

# ---- the fdguard command: inspect a process from /proc ---------------------------
# fdhold holds files, pipes, CLOSE_WAIT and unconnected sockets (as many as its limit allows
# of BENCH_CLI_FDS); each round times `fdguard inspect --json`, `fdguard inspect` (text) and,
# as the peer, `lsof -p`, in a rotated order; then the whole host with fdhold on it: `fdguard
# top --json` against `lsof -n | awk | sort | uniq -c` (seed 002's pipeline).
CLI=$(dirname "$LIB")/fdguard
# Timed with bash's EPOCHREALTIME (seconds, a radix character, 6 digits of microseconds):
# reading it forks nothing, where each `$(date +%s%N)` forked and ran date inside the timing,
# 1-2 ms added to every figure, which penalized the fastest tool most.
[[ -n ${EPOCHREALTIME:-} ]] || die "bash 5 or later is needed (EPOCHREALTIME)"
ms_of() { # command... -> prints elapsed milliseconds; stdout discarded
    local t0 t1
    t0=${EPOCHREALTIME//[!0-9]/}
    "$@" >/dev/null 2>"$TMP/cli.err" || { cat "$TMP/cli.err" >&2; return 1; }
    t1=${EPOCHREALTIME//[!0-9]/}
    echo $((10#$t1 - 10#$t0))e-3
}
# `fdguard top --json` (one sample) against the pipeline of seed 002 that answers the same
# question, `lsof -n | awk | sort | uniq -c`, on the whole host, in a rotated order; recorded
# with the fds fdhold holds on the host then ($1: 0 once it is gone).
time_host() { # held-fds
    local tools=(top-json) r tool ms
    if command -v lsof >/dev/null; then
        tools+=(lsof-host)
    else
        record cli-skip lsof-host "lsof is not installed"
    fi
    for ((r = 1; r <= CLI_ROUNDS; r++)); do
        note "the host ($1 fds held by fdhold): round $r/$CLI_ROUNDS"
        mapfile -t order < <(rotate "$r" "${tools[@]}")
        for tool in "${order[@]}"; do
            case $tool in
            top-json) ms=$(ms_of "$CLI" top --json) ;;
            lsof-host) ms=$(ms_of bash -c "lsof -n 2>/dev/null | awk '{print \$2}' | sort | uniq -c | sort -nr | head") ;;
            esac || die "$tool failed"
            record cli "$tool" - - - "$r" "$1" "$ms"
        done
    done
}
if has_section cli; then
    if [[ ! -x $CLI ]]; then
        warn "the fdguard command is not next to the library ($CLI): its workload is skipped"
    else
        cli_tools=(inspect-json inspect-text)
        command -v lsof >/dev/null && cli_tools+=(lsof)
        hold_prefix=()
        if prlimit "--nofile=$((CLI_FDS + 100)):$((CLI_FDS + 100))" -- true 2>/dev/null; then
            hold_prefix=(prlimit "--nofile=$((CLI_FDS + 100)):$((CLI_FDS + 100))" --)
        fi
        "${hold_prefix[@]}" "$BUILD/fdhold" "$CLI_FDS" 300 >"$TMP/hold.out" 2>"$TMP/hold.err" &
        HOLD_PID=$!
        BG_PIDS+=("$HOLD_PID")
        wait_for_line "$TMP/hold.out" ' ready$' 120 "$HOLD_PID" \
            || { cat "$TMP/hold.err" >&2; die "fdhold did not get ready"; }
        hold_n=$(sed -n 's/.*nfds=\([0-9]*\).*/\1/p' "$TMP/hold.out")
        for ((r = 1; r <= CLI_ROUNDS; r++)); do
            note "the command: round $r/$CLI_ROUNDS ($hold_n fds)"
            mapfile -t order < <(rotate "$r" "${cli_tools[@]}")
            for tool in "${order[@]}"; do
                case $tool in
                inspect-json) ms=$(ms_of "$CLI" inspect --json "$HOLD_PID") ;;
                inspect-text) ms=$(ms_of "$CLI" inspect --all "$HOLD_PID") ;;
                lsof) ms=$(ms_of lsof -n -P -p "$HOLD_PID") ;;
                esac || die "$tool failed on $hold_n fds"
                record cli "$tool" - - - "$r" "$hold_n" "$ms"
            done
        done
        # The whole host with fdhold on it (seed 002: one process with 65,966 fds), then
        # without it.
        time_host "$hold_n"
        stop_bg "$HOLD_PID"
        time_host 0
    fi
fi

# ---- runtimes: open+close through a language runtime, at call depth 30 ----------------
# Each runtime's workload runs natively (native), with only the options `fdguard run` gives
# that runtime (options: what they cost by themselves), and under `fdguard run` (fdguard),
# in a rotated order round by round; a runtime that is not installed is said so. Python needs
# no options (`fdguard run` gives it none); python3 is needed by this script anyway.
RUNTIME_DEPTH=30
# What cli/src/run.rs (NODE_PERF_MAP, NODE_NO_INLINING) gives node 18.18 and later; node-calls
# is JavaScript without fds, to show what turning inlining off costs by itself.
NODE_RUN_OPTIONS="--perf-basic-prof-only-functions --interpreted-frames-native-stack \
--import \"data:text/javascript,import v8 from 'node:v8'; v8.setFlagsFromString('--no-turbo-inlining')\""
# What cli/src/run.rs (java_tool_options) gives a JVM: fdguard's JVM TI agent. Without the
# preload, the agent alone sets nothing up: the options column is the JVM loading it.
JAVA_RUN_OPTIONS="-agentpath:$LIB"
run_runtime() { # runtime config round command...
    local rt=$1 config=$2 round=$3 st=0 ns fastest iters; shift 3
    run_bounded 300 env -u NODE_OPTIONS -u JAVA_TOOL_OPTIONS "$@" || st=$?
    ns=$(sed -n 's/.* ns_per_op=\([0-9.]*\).*/\1/p' <<<"$OUTPUT")
    fastest=$(sed -n 's/.* fastest_ns_per_op=\([0-9.]*\).*/\1/p' <<<"$OUTPUT")
    iters=$(sed -n 's/.* iters=\([0-9]*\).*/\1/p' <<<"$OUTPUT")
    if [[ $st != 0 || -z $ns ]]; then
        [[ $st != 0 ]] || st="ok but printed no ns_per_op ('$OUTPUT')"
        fail_run "runtime $rt ($config)" "$st"
    fi
    rm -f "$TMP/report.runtime"
    record runtime "$rt" - "$RUNTIME_DEPTH" "$config" "$round" "$iters" "$ns" "${fastest:-$ns}"
}
if has_section runtime; then
    runtimes=(python)
    if command -v node >/dev/null; then
        runtimes+=(node node-calls)
    else
        warn "node is not installed: its runtime rows are skipped"
        record runtime-skip node "node is not installed"
        record runtime-skip node-calls "node is not installed"
    fi
    if command -v java >/dev/null && command -v javac >/dev/null; then
        javac -d "$BUILD" bench/JavaOpen.java || die "javac failed for bench/JavaOpen.java"
        runtimes+=(java)
    else
        warn "java or javac is not installed: its runtime row is skipped"
        record runtime-skip java "java or javac is not installed"
    fi
    if [[ ! -x $CLI ]]; then
        warn "the fdguard command is not next to the library ($CLI): the runtime rows are skipped"
        for rt in "${runtimes[@]}"; do
            record runtime-skip "$rt" "the fdguard command is not next to the library"
        done
        runtimes=()
    fi
    iters=$(python3 -c "import sys; print(max(1000, int(round(100000 * float(sys.argv[1])))))" "$RUNTIME_SCALE")
    for ((r = 1; r <= RUNTIME_ROUNDS; r++)); do
        for rt in "${runtimes[@]}"; do
            note "runtimes: $rt, round $r/$RUNTIME_ROUNDS"
            case $rt in
            python) cmd=(python3 bench/pyopen.py "$iters" "$RUNTIME_DEPTH") options=(env) ;;
            node | node-calls)
                script=bench/node_open.js
                [[ $rt == node-calls ]] && script=bench/node_calls.js
                cmd=(node "$script" "$iters" "$RUNTIME_DEPTH")
                options=(env "NODE_OPTIONS=$NODE_RUN_OPTIONS")
                ;;
            java)
                cmd=(java -cp "$BUILD" JavaOpen "$iters" "$RUNTIME_DEPTH")
                options=(env "JAVA_TOOL_OPTIONS=$JAVA_RUN_OPTIONS")
                ;;
            esac
            mapfile -t order < <(rotate "$r" native options fdguard)
            for config in "${order[@]}"; do
                case $config in
                native) run_runtime "$rt" native "$r" "${cmd[@]}" ;;
                options) run_runtime "$rt" options "$r" "${options[@]}" "${cmd[@]}" ;;
                fdguard) run_runtime "$rt" fdguard "$r" "$CLI" run --report "$TMP/report.runtime" -- "${cmd[@]}" ;;
                esac
            done
        done
    done
fi

# ---- trace: Go and static programs under `fdguard run`'s tracer ------------------------
# A Go net/http server (bench/gohttp.go, static: `run` traces it) loaded by the same program's
# client, untraced, with a new connection per request and with keep-alive: requests/s natively,
# traced, and attached to through eBPF (`fdguard attach` once it listens, `detach` after the
# load; root only), in a rotated order round by round. And the cost of one traced call: a
# static fdbench's open+close (an open stops twice, at entry and exit; a close once) natively
# and traced.
TRACE_PAR=4
TRACE_DEPTH=30
trace_serve() { # config mode round
    local config=$1 mode=$2 round=$3 spid port st=0 rate
    local prefix=()
    [[ $config == traced ]] && prefix=("$CLI" run --report "$TMP/report.trace" --)
    # The server ends when its stdin does: a fifo whose one writer is this shell's fd 7.
    [[ -p $TMP/gohttp.in ]] || mkfifo "$TMP/gohttp.in"
    exec 7<>"$TMP/gohttp.in"
    start_server "Go server ($config)" "$TMP/gohttp.in" "$TMP/gohttp.out" "$TMP/gohttp.err" \
        "${prefix[@]}" "$BUILD/gohttp" serve
    spid=$SPID port=$PORT
    if [[ $config == ebpf ]]; then
        "$CLI" attach "$spid" >/dev/null || die "fdguard attach (eBPF) to the Go server failed"
    fi
    run_bounded 300 "$BUILD/gohttp" load "$port" "$TRACE_REQUESTS" "$TRACE_PAR" "$mode" || st=$?
    if [[ $config == ebpf ]]; then
        "$CLI" detach "$spid" >/dev/null || die "fdguard detach from the Go server failed"
    fi
    exec 7>&-
    wait "$spid" || true
    forget_pid "$spid"
    [[ $st == 0 ]] || fail_run "Go load against the $config server ($mode)" "$st"
    rate=$(sed -n 's/.*requests_per_s=\([0-9.]*\).*/\1/p' <<<"$OUTPUT")
    [[ -n $rate ]] || die "Go load printed no rate: $OUTPUT"
    record trace "$mode" - - "$config" "$round" "$TRACE_REQUESTS" "$rate"
    rm -f "$TMP/report.trace"
}
trace_calls() { # config round
    local config=$1 round=$2 st=0 ns iters
    iters=$(python3 -c "import sys; print(max(1000, int(round(20000 * float(sys.argv[1])))))" "$SCALE")
    local prefix=()
    [[ $config == traced ]] && prefix=("$CLI" run --report "$TMP/report.trace" --)
    run_bounded 300 "${prefix[@]}" "$BUILD/fdbench-static" open "$iters" "$TRACE_DEPTH" || st=$?
    [[ $st == 0 ]] || fail_run "static fdbench ($config)" "$st"
    ns=$(sed -n 's/.* ns_per_op=\([0-9.]*\).*/\1/p' <<<"$OUTPUT")
    [[ -n $ns ]] || die "static fdbench printed no ns_per_op: $OUTPUT"
    record trace open - "$TRACE_DEPTH" "$config" "$round" "$iters" "$ns"
    rm -f "$TMP/report.trace"
}
if has_section trace; then
    if ! command -v go >/dev/null; then
        warn "go is not installed: the traced Go server's rows are skipped"
        record trace-skip gohttp "go is not installed"
    elif [[ ! -x $CLI ]]; then
        warn "the fdguard command is not next to the library ($CLI): the trace rows are skipped"
        record trace-skip gohttp "the fdguard command is not next to the library"
    else
        (cd "$BUILD" && GOCACHE="$BUILD/go-cache" GOPATH="$BUILD/go-path" GOFLAGS=-mod=mod \
            GOTOOLCHAIN=local CGO_ENABLED=0 go build -o "$BUILD/gohttp" "$ROOT/bench/gohttp.go") \
            || die "go build failed for bench/gohttp.go"
        # shellcheck disable=SC2086
        $CC -O2 -static $WFLAGS ${CFLAGS_EXTRA:-} -o "$BUILD/fdbench-static" bench/fdbench.c \
            || die "building the static fdbench failed"
        # Loading eBPF programs takes root's capabilities.
        configs=(native traced)
        if [[ $(id -u) == 0 ]]; then
            configs+=(ebpf)
        else
            record trace-ebpf-skip gohttp "not root: eBPF programs cannot be loaded"
        fi
        for ((r = 1; r <= TRACE_ROUNDS; r++)); do
            note "trace: round $r/$TRACE_ROUNDS"
            mapfile -t order < <(rotate "$r" "${configs[@]}")
            for config in "${order[@]}"; do
                for mode in new keepalive; do trace_serve "$config" "$mode" "$r"; done
                # A program attached to runs from before the attach: the calls' cost is the
                # tracer's only.
                [[ $config == ebpf ]] || trace_calls "$config" "$r"
            done
        done
    fi
fi

# ---- summary ------------------------------------------------------------------
printf 'elapsed\t%s s\n' "$(($(date +%s) - T_START))" >>"$ENVF"
python3 bench/summarize.py "$RAW" "$ENVF" "$OUT" || die "summarizing failed"
note "written to $OUT"
