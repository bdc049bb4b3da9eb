/* Micro workloads for the fdguard benchmark.
 *
 *   fdbench OP ITERS DEPTH
 *
 * OP is one of open, open2, socket, fopen, pipe, accept.  The program descends a
 * chain of DEPTH non-inlined, non-tail-calling frames and runs the timed loop
 * from the bottom, so every fd call is made with that many extra frames on the
 * stack.  Only the loop is timed (CLOCK_MONOTONIC); process start-up, and thus
 * the preload library's initialisation, is excluded.  A short untimed warm-up
 * runs first at the same depth.
 *
 * Output (one line on stdout): the mean over the whole loop, and the fastest chunk of
 * 1,000 operations (see `struct timing`):
 *   op=open depth=30 iters=200000 ns_per_op=812.3 fastest_ns_per_op=790.1
 *
 * open2: open+close as in open, but from two call sites in turn (two functions), the way
 * a function that opens two files calls the hook: two call stacks at one depth.
 *
 * accept: a client process (forked) connects BATCH connections to a listener
 * on 127.0.0.1 (ephemeral port) while the timer is stopped; then the timed
 * loop accepts and closes them, so only accept+close is measured.  The client
 * then resets its ends (SO_LINGER 0: no TIME_WAIT) and connects the next batch.
 */
#include "common.h"

#include <fcntl.h>
#include <sys/wait.h>

enum op { OP_OPEN, OP_OPEN2, OP_SOCKET, OP_FOPEN, OP_PIPE, OP_ACCEPT };
static const char *const op_names[] = {"open", "open2", "socket", "fopen", "pipe", "accept"};

#define ACCEPT_BATCH 256

struct job {
    enum op op;
    long iters;
    long warmup;
    int depth;
    /* accept only */
    int lfd, port;
    int to_client, from_client;
    pid_t client;
};

volatile long sink;

NOINLINE static void op_open(void)
{
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0)
        die("open /dev/null");
    if (close(fd) != 0)
        die("close");
}

/* op_open's twin for open2; other flags, so the compiler cannot fold the two into one. */
NOINLINE static void op_open_other(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("open /dev/null");
    if (close(fd) != 0)
        die("close");
}

NOINLINE static void op_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (close(fd) != 0)
        die("close");
}

NOINLINE static void op_fopen(void)
{
    FILE *f = fopen("/dev/null", "r");
    if (!f)
        die("fopen /dev/null");
    if (fclose(f) != 0)
        die("fclose");
}

NOINLINE static void op_pipe(void)
{
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    if (close(p[0]) != 0 || close(p[1]) != 0)
        die("close");
}

NOINLINE static void op_accept(int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        die("accept");
    if (close(fd) != 0)
        die("close");
}

/* ---- accept: client process ------------------------------------------- */

static void client_main(int port, int cmd_fd, int ack_fd)
{
    static int held[ACCEPT_BATCH];
    int nheld = 0;
    for (;;) {
        int32_t k;
        if (read_full(cmd_fd, &k, sizeof k) != 0 || k < 0 || k > ACCEPT_BATCH)
            _exit(3);
        for (int i = 0; i < nheld; i++)
            close(held[i]);
        nheld = 0;
        if (k == 0)
            _exit(0);
        for (int i = 0; i < k; i++)
            held[nheld++] = connect_loopback(port);
        write_all(ack_fd, "r", 1);
    }
}

static void accept_setup(struct job *j)
{
    int cmd[2], ack[2];
    pid_t parent = getpid();
    j->lfd = listen_loopback(ACCEPT_BATCH + 16, &j->port);
    if (pipe(cmd) != 0 || pipe(ack) != 0)
        die("pipe");
    j->client = fork();
    if (j->client < 0)
        die("fork");
    if (j->client == 0) {
        child_dies_with_parent(parent);
        close(cmd[1]);
        close(ack[0]);
        close(j->lfd);
        client_main(j->port, cmd[0], ack[1]);
    }
    close(cmd[0]);
    close(ack[1]);
    j->to_client = cmd[1];
    j->from_client = ack[0];
}

static void accept_teardown(struct job *j)
{
    int32_t zero = 0;
    int st;
    write_all(j->to_client, &zero, sizeof zero);
    if (waitpid(j->client, &st, 0) < 0)
        die("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        errno = 0;
        die("accept client failed (status 0x%x)", st);
    }
    close(j->to_client);
    close(j->from_client);
    close(j->lfd);
}

/* Time of one run: the whole loop, and its fastest chunk of CHUNK_OPS operations (per
 * operation). Noise on a shared machine only ever adds time, and it comes in bursts (here
 * system calls alternate between two speeds for milliseconds to seconds at a time): the
 * fastest chunk is the run's figure least disturbed by it, as `timeit` takes the minimum. */
#define CHUNK_OPS 1000

struct timing {
    uint64_t ns;
    double fastest_per_op;
};

static void chunk_done(struct timing *t, uint64_t ns, long ops)
{
    double per_op = (double)ns / (double)ops;
    t->ns += ns;
    if (t->fastest_per_op == 0 || per_op < t->fastest_per_op)
        t->fastest_per_op = per_op;
}

/* Runs the n operations of one loop, timing each chunk of CHUNK_OPS. One loop with the
 * clock read between chunks, not a loop of chunks: the compiler unrolled the inner loop of
 * that by two, so the hook was called from two return addresses in turn (two call stacks,
 * another workload than the one measured so far). */
#define TIMED_LOOP(t, n, call)                                                                   \
    do {                                                                                         \
        uint64_t t0_ = now_ns();                                                                 \
        for (long i_ = 1; i_ <= (n); i_++) {                                                     \
            call;                                                                                \
            if (i_ % CHUNK_OPS == 0 || i_ == (n)) {                                              \
                uint64_t t1_ = now_ns();                                                         \
                chunk_done((t), t1_ - t0_, i_ % CHUNK_OPS == 0 ? CHUNK_OPS : i_ % CHUNK_OPS);    \
                t0_ = t1_;                                                                       \
            }                                                                                    \
        }                                                                                        \
    } while (0)

/* Run n operations; times the operations only. */
static struct timing run_ops(struct job *j, long n)
{
    struct timing t = {0, 0};
    switch (j->op) {
    case OP_OPEN:
        TIMED_LOOP(&t, n, op_open());
        return t;
    case OP_OPEN2:
        TIMED_LOOP(&t, n, (i_ & 1) ? op_open() : op_open_other());
        return t;
    case OP_SOCKET:
        TIMED_LOOP(&t, n, op_socket());
        return t;
    case OP_FOPEN:
        TIMED_LOOP(&t, n, op_fopen());
        return t;
    case OP_PIPE:
        TIMED_LOOP(&t, n, op_pipe());
        return t;
    case OP_ACCEPT:
        break;
    }
    /* accept: a chunk is one batch the client connected while the clock was stopped. */
    for (long done = 0; done < n;) {
        int32_t k = (int32_t)(n - done < ACCEPT_BATCH ? n - done : ACCEPT_BATCH);
        char c;
        write_all(j->to_client, &k, sizeof k);
        if (read_full(j->from_client, &c, 1) != 0) {
            errno = 0;
            die("accept client went away");
        }
        uint64_t t0 = now_ns();
        for (int32_t i = 0; i < k; i++)
            op_accept(j->lfd);
        chunk_done(&t, now_ns() - t0, k);
        done += k;
    }
    return t;
}

NOINLINE static long bottom(struct job *j)
{
    run_ops(j, j->warmup);
    struct timing t = run_ops(j, j->iters);
    printf("op=%s depth=%d iters=%ld ns_per_op=%.2f fastest_ns_per_op=%.2f\n", op_names[j->op],
           j->depth, j->iters, (double)t.ns / (double)j->iters, t.fastest_per_op);
    return (long)t.ns;
}

/* The depth chain: real frames (noinline/noclone), and the volatile store
 * after the recursive call keeps it from becoming a tail call or a loop. */
NOINLINE static long chain(int d, struct job *j)
{
    if (d == 0)
        return bottom(j);
    long r = chain(d - 1, j);
    sink = r + d;
    return r;
}

int main(int argc, char **argv)
{
    struct job j;
    int depth, found = 0;
    memset(&j, 0, sizeof j);
    if (argc != 4) {
        fprintf(stderr, "usage: %s open|open2|socket|fopen|pipe|accept ITERS DEPTH\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < (int)(sizeof op_names / sizeof op_names[0]); i++)
        if (strcmp(argv[1], op_names[i]) == 0) {
            j.op = (enum op)i;
            found = 1;
        }
    if (!found) {
        fprintf(stderr, "%s: unknown op '%s'\n", argv[0], argv[1]);
        return 2;
    }
    j.iters = parse_long(argv[2], "ITERS", 1, 1000000000L);
    depth = (int)parse_long(argv[3], "DEPTH", 0, 10000);
    j.depth = depth;
    j.warmup = j.iters / 10 < 5000 ? j.iters / 10 : 5000;
    watchdog(FDBENCH_WATCHDOG_S);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (j.op == OP_ACCEPT)
        accept_setup(&j);
    chain(depth, &j);
    if (j.op == OP_ACCEPT)
        accept_teardown(&j);
    return 0;
}
