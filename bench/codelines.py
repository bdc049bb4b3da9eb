#!/usr/bin/env python3
"""Code lines a preload runs per operation: the unit the hot path pays for (bench/analysis.md,
session 8: after each system call the instruction cache is cold, ~2.2 ns a 64-byte line).

    bench/codelines.py LIB [ENV=VALUE ...]     e.g. target/release/libfdguard.so FDGUARD_DEPTH=0

Runs `fdbench-nofp open 20000 30` (target/bench/, built by scripts/bench.sh, or built here)
under `valgrind --tool=callgrind --dump-instr=yes` and counts, for the library, libc and the
benchmark itself, the distinct 64-byte lines holding an instruction run at least once per
iteration. Deterministic: the same on any x86-64 machine whatever the load.
"""
import collections, glob, os, re, subprocess, sys, tempfile

ITERS = 20000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_binary(tmp):
    built = os.path.join(ROOT, "target", "bench", "fdbench-nofp")
    if os.path.exists(built):
        return built
    out = os.path.join(tmp, "fdbench-nofp")
    subprocess.run(["cc", "-O2", "-o", out, os.path.join(ROOT, "bench", "fdbench.c")], check=True)
    return out


def per_instruction(path):
    """Self cost per instruction address, per object, from a callgrind file."""
    names, costs, obj, addr, skip = {}, collections.defaultdict(collections.Counter), "", 0, False
    for line in open(path):
        line = line.rstrip("\n")
        m = re.match(r"^(c?ob)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, ident, name = m.groups()
            if name:
                names[ident] = name
            if kind == "ob":
                obj = names[ident]
            continue
        if line.startswith("calls="):
            skip = True  # the next cost line is the call's inclusive cost
            continue
        m = re.match(r"^(0x[0-9a-f]+|\+\d+|-\d+|\*)\s+\S+\s+(\d+)$", line)
        if not m:
            continue
        a, c = m.groups()
        if a.startswith("0x"):
            addr = int(a, 16)
        elif a[0] in "+-":
            addr += int(a)
        if skip:
            skip = False
        else:
            costs[obj][addr] += int(c)
    return costs


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    lib = os.path.abspath(sys.argv[1])
    env = dict(os.environ, LD_PRELOAD=lib)
    for kv in sys.argv[2:]:
        k, _, v = kv.partition("=")
        env[k] = v
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", "--dump-instr=yes",
               "--callgrind-out-file=" + os.path.join(tmp, "cg.%p"),
               bench_binary(tmp), "open", str(ITERS), "30"]
        subprocess.run(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        biggest = max(glob.glob(os.path.join(tmp, "cg.*")), key=os.path.getsize)
        costs = per_instruction(biggest)
    # Run every iteration: the timed loop and the warm-up make a little over ITERS.
    every = ITERS * 95 // 100
    for want in (os.path.basename(lib), "libc.so", "fdbench"):
        hot = [a for obj, c in costs.items() if want in obj for a, n in c.items() if n >= every]
        print(f"{want}: {len({a >> 6 for a in hot})} lines, {len(hot)} instructions per open+close")


if __name__ == "__main__":
    main()
