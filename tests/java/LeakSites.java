import java.io.BufferedReader;
import java.io.Closeable;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.List;

/**
 * Seed 002 in Java, for tests/suite/runtime_java.rs: a log shipper that leaks the batch files
 * it reads (readBatch) and the sockets of its failed deliveries (ship: a non-blocking connect
 * to a collector that is not listening, given up without a close).
 *
 *     java LeakSites BATCH_FILE LEAKS
 *
 * It stops at `CHECKPOINT start` (a test may attach fdguard there), then leaks once from each
 * site in the interpreter (the methods' first calls), calls both sites WARM times without
 * leaking so that the JIT compiles them, says `warm` on stderr (where a test has the JVM's
 * own output go, `-XX:+DisplayVMOutputToStderr`: the JIT's lines, printed by other threads,
 * would cut stdout's lines), leaks LEAKS - 1 more from each
 * (compiled), all through the same calls, and stops at `CHECKPOINT leaked` (a line on stdin
 * goes on past a checkpoint).
 * The lines marked `// LEAK name` are where the leaked fds are made.
 */
public class LeakSites {
    static final int WARM = 30_000;
    static final List<Closeable> held = new ArrayList<>();

    static void readBatch(File batch, boolean leak) throws IOException {
        FileInputStream in = new FileInputStream(batch); // LEAK readBatch
        if (leak) {
            held.add(in);
        } else {
            in.close();
        }
    }

    static void ship(InetSocketAddress collector, boolean leak) throws IOException {
        SocketChannel ch = SocketChannel.open(); // LEAK ship
        ch.configureBlocking(false);
        if (leak && !ch.connect(collector)) {
            held.add(ch);
            return;
        }
        ch.close();
    }

    static final BufferedReader in = new BufferedReader(new InputStreamReader(System.in));

    static void checkpoint(String name) throws IOException {
        System.out.println("CHECKPOINT " + name);
        in.readLine();
    }

    public static void main(String[] a) throws Exception {
        File batch = new File(a[0]);
        int leaks = Integer.parseInt(a[1]);
        InetAddress loopback = InetAddress.getLoopbackAddress();
        InetSocketAddress collector;
        try (ServerSocket s = new ServerSocket(0, 1, loopback)) {
            collector = new InetSocketAddress(loopback, s.getLocalPort());
        }
        checkpoint("start");
        // One call site per leak site: its first call leaks (in the interpreter), the next
        // WARM do not, the rest do again (compiled).
        for (int i = 0; i < WARM + leaks; i++) {
            if (i == WARM) {
                // The compilations the warm-up queued end before the leaks go on.
                Thread.sleep(500);
                System.err.println("warm");
            }
            boolean leak = i == 0 || i > WARM;
            readBatch(batch, leak);
            ship(collector, leak);
        }
        checkpoint("leaked");
        System.out.println("bye " + held.size());
    }
}
