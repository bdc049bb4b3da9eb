/*
 * open+close from Java at a given call depth, for scripts/bench.sh's runtime rows.
 *
 *     javac -d DIR bench/JavaOpen.java && java -cp DIR JavaOpen ITERS DEPTH
 *
 * Opens and closes /dev/null ITERS times with a FileInputStream (one `open` and one `close`
 * each) from a method DEPTH Java calls deep, and prints, as bench/fdbench.c does,
 * `op=java-open depth=D iters=N ns_per_op=X fastest_ns_per_op=Y`: the time per open+close over
 * the whole loop, and over its fastest chunk of 1,000 (noise only adds time). The chain is
 * entered anew for every 100 opens, as a server's request path is for every request, so that
 * the JIT compiles it (C2, after the warm-up) the way it compiles a hot path: the numbers are
 * those of compiled code. Only the timed loop counts: the JVM's start, the warm-up and
 * fdguard's loading do not.
 */
import java.io.FileInputStream;
import java.io.IOException;

public class JavaOpen {
    static final int CHUNK = 1000;
    static final int BATCH = 100;

    static void leaf(int n) throws IOException {
        for (int i = 0; i < n; i++) {
            new FileInputStream("/dev/null").close();
        }
    }

    static void nest(int depth, int n) throws IOException {
        if (depth <= 1) {
            leaf(n);
        } else {
            nest(depth - 1, n);
        }
    }

    /** Opens and closes `iters` times; the fastest chunk's time per op, in ns. */
    static double run(int nests, long iters) throws IOException {
        double fastest = Double.MAX_VALUE;
        for (long done = 0; done < iters; ) {
            long n = Math.min(CHUNK, iters - done);
            long t = System.nanoTime();
            for (long k = 0; k < n; k += BATCH) {
                nest(nests, (int) Math.min(BATCH, n - k));
            }
            fastest = Math.min(fastest, (double) (System.nanoTime() - t) / n);
            done += n;
        }
        return fastest;
    }

    public static void main(String[] a) throws IOException {
        long iters = Long.parseLong(a[0]);
        int depth = Integer.parseInt(a[1]);
        // `depth` frames of this program at the open: main's, run's, the nests' and leaf's.
        int nests = Math.max(1, depth - 3);
        run(nests, 60_000); // warm-up: the JIT compiles the chain
        long t = System.nanoTime();
        double fastest = run(nests, iters);
        double perOp = (double) (System.nanoTime() - t) / iters;
        System.out.printf("op=java-open depth=%d iters=%d ns_per_op=%.2f fastest_ns_per_op=%.2f%n",
                depth, iters, perOp, fastest);
    }
}
