"""open+close from Python at a given call depth, for scripts/bench.sh's runtime rows.

    python3 bench/pyopen.py ITERS DEPTH

Opens and closes /dev/null ITERS times (unbuffered, so each is one `open` and one `close`)
from a function DEPTH Python calls deep, and prints, as bench/fdbench.c does,
`op=python-open depth=D iters=N ns_per_op=X fastest_ns_per_op=Y`: the time per open+close over
the whole loop, and over its fastest chunk of 1,000 (noise only adds time). Only the loop is
timed: start-up, imports and fdguard's loading are not.
"""
import sys
import time

CHUNK = 1000


def leaf(iters):
    fastest = float("inf")
    done = 0
    clock = time.perf_counter_ns
    start = clock()
    while done < iters:
        n = min(CHUNK, iters - done)
        t = clock()
        for _ in range(n):
            open("/dev/null", "rb", buffering=0).close()
        fastest = min(fastest, (clock() - t) / n)
        done += n
    return (clock() - start) / iters, fastest


def nest(depth, iters):
    if depth <= 1:
        return leaf(iters)
    return nest(depth - 1, iters)


def main():
    iters, depth = int(sys.argv[1]), int(sys.argv[2])
    # `depth` frames at the open: the module's, main's, the nests' and leaf's.
    nests = max(1, depth - 3)
    nest(nests, min(iters, CHUNK))  # warm up: the interpreter specialises the calls
    per_op, fastest = nest(nests, iters)
    print(f"op=python-open depth={depth} iters={iters} ns_per_op={per_op:.2f} "
          f"fastest_ns_per_op={fastest:.2f}")


main()
