/* Macro workload, server side: a loopback server doing one short connection
 * per request.
 *
 *   fdserve NCONN
 *
 * Listens on 127.0.0.1 with an ephemeral port, prints "port=N" on stdout, then
 * serves exactly NCONN connections one after another (accept, read the
 * REQ_LEN-byte request, write the RESP_LEN-byte response, close) and exits 0.
 * On exit it prints "served=N cpu_ns_per_conn=X": its own CPU time (user +
 * sys, getrusage) per connection, the server-side cost without the clients'.
 * A watchdog ends it after FDBENCH_WATCHDOG_S seconds whatever happens.
 * The load generator is fdload, run in another process. */
#include "common.h"

#include <sys/resource.h>

#define REQ_LEN 16
#define RESP_LEN 64

static char resp[RESP_LEN];

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        die("getrusage");
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

static void serve_one(int lfd)
{
    char req[REQ_LEN];
    int fd;
    while ((fd = accept(lfd, NULL, NULL)) < 0)
        if (errno != EINTR)
            die("accept");
    if (read_full(fd, req, sizeof req) != 0) {
        errno = 0;
        die("short request");
    }
    write_all(fd, resp, sizeof resp);
    if (close(fd) != 0)
        die("close");
}

int main(int argc, char **argv)
{
    int port, lfd;
    long n;
    if (argc != 2) {
        fprintf(stderr, "usage: %s NCONN\n", argv[0]);
        return 2;
    }
    n = parse_long(argv[1], "NCONN", 1, 100000000L);
    watchdog(FDBENCH_WATCHDOG_S);
    signal(SIGPIPE, SIG_IGN);
    memset(resp, 'x', sizeof resp);
    resp[RESP_LEN - 1] = '\n';
    lfd = listen_loopback(1024, &port);
    printf("port=%d\n", port);
    fflush(stdout);
    uint64_t c0 = cpu_ns();
    for (long i = 0; i < n; i++)
        serve_one(lfd);
    uint64_t c1 = cpu_ns();
    close(lfd);
    printf("served=%ld cpu_ns_per_conn=%.1f\n", n, (double)(c1 - c0) / (double)n);
    return 0;
}
