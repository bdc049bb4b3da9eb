/* Macro workload, load generator: a bounded client for fdserve.
 *
 *   fdload PORT NCONN PAR
 *
 * Starts PAR worker processes that together make exactly NCONN requests to
 * 127.0.0.1:PORT, each on its own connection (connect, write a 16-byte
 * request, read the 64-byte response, close with SO_LINGER 0 so no TIME_WAIT
 * sockets pile up).  Times from the moment all workers are released to the
 * moment the last one is done and prints:
 *   conns=20000 par=2 seconds=1.234 conns_per_s=16207.4 */
#include "common.h"

#include <sys/wait.h>

#define REQ_LEN 16
#define RESP_LEN 64

static void worker(int port, long n, int start_fd)
{
    char req[REQ_LEN], resp[RESP_LEN], c;
    memset(req, 'q', sizeof req);
    req[REQ_LEN - 1] = '\n';
    if (read(start_fd, &c, 1) < 0) /* EOF = go */
        _exit(3);
    for (long i = 0; i < n; i++) {
        int s = connect_loopback(port);
        write_all(s, req, sizeof req);
        if (read_full(s, resp, sizeof resp) != 0) {
            errno = 0;
            die("short response");
        }
        close(s);
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    int port, par, start[2], failed = 0;
    long n;
    pid_t self = getpid(), pids[64];
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT NCONN PAR\n", argv[0]);
        return 2;
    }
    port = (int)parse_long(argv[1], "PORT", 1, 65535);
    n = parse_long(argv[2], "NCONN", 1, 100000000L);
    par = (int)parse_long(argv[3], "PAR", 1, 64);
    watchdog(FDBENCH_WATCHDOG_S);
    if (pipe(start) != 0)
        die("pipe");
    for (int w = 0; w < par; w++) {
        long share = n / par + (w < n % par ? 1 : 0);
        pids[w] = fork();
        if (pids[w] < 0)
            die("fork");
        if (pids[w] == 0) {
            child_dies_with_parent(self);
            close(start[1]);
            worker(port, share, start[0]);
        }
    }
    close(start[0]);
    uint64_t t0 = now_ns();
    close(start[1]);
    for (int w = 0; w < par; w++) {
        int st;
        if (waitpid(pids[w], &st, 0) < 0)
            die("waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed = 1;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    if (failed) {
        fprintf(stderr, "fdload: a worker failed\n");
        return 2;
    }
    printf("conns=%ld par=%d seconds=%.4f conns_per_s=%.1f\n", n, par, secs, (double)n / secs);
    return 0;
}
