import java.io.BufferedReader;
import java.io.InputStreamReader;

/**
 * For tests/suite/runtime_java.rs: opens a file from a signal handler of a JNI method and
 * another directly (tests/c/jni_signal_open.c), prints both fds, and stops at
 * `CHECKPOINT opened` until a line comes on stdin.
 *
 *     java SignalOpen LIBRARY IN_HANDLER_FILE DIRECT_FILE
 */
public class SignalOpen {
    static native int openInHandler(String path);

    static native int openDirectly(String path);

    static int viaHandler(String path) {
        return openInHandler(path);
    }

    static int directly(String path) {
        return openDirectly(path);
    }

    public static void main(String[] a) throws Exception {
        System.load(a[0]);
        System.out.println("in handler " + viaHandler(a[1]));
        System.out.println("directly " + directly(a[2]));
        System.out.println("CHECKPOINT opened");
        new BufferedReader(new InputStreamReader(System.in)).readLine();
        System.out.println("bye");
    }
}
