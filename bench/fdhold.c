/* Workload of `fdguard inspect`: a process holding many fds of every common kind.
 *
 *   fdhold NFDS [LINGER_S]
 *
 * Holds about NFDS fds (fewer if RLIMIT_NOFILE is lower), in four equal shares: files
 * (/dev/null), pipes (both ends), accepted loopback TCP connections whose clients have
 * closed (CLOSE_WAIT), and TCP sockets that never connected. Prints
 *   nfds=18000 pid=42 ready
 * and waits until killed or LINGER_S seconds (default 120) have passed. */
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/resource.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage: fdhold NFDS [LINGER_S]");
    long want = parse_long(argv[1], "NFDS", 8, 10000000);
    long linger = argc > 2 ? parse_long(argv[2], "LINGER_S", 1, 3600) : 120;
    watchdog(FDBENCH_WATCHDOG_S);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit");
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur - 64 < want)
        want = (long)rl.rlim_cur - 64;
    long share = want / 4, n = 0;

    for (long i = 0; i < share; i++, n++)
        if (open("/dev/null", O_RDONLY) < 0)
            die("open /dev/null");
    int p[2];
    for (long i = 0; i < share / 2; i++, n += 2)
        if (pipe(p) != 0)
            die("pipe");

    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 128) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) != 0)
        die("loopback listener");
    n++;
    for (long i = 0; i < share; i++, n++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0)
            die("connect");
        if (accept(l, NULL, NULL) < 0)
            die("accept");
        close(c);
    }
    for (long i = 0; i < share; i++, n++)
        if (socket(AF_INET, SOCK_STREAM, 0) < 0)
            die("socket");

    printf("nfds=%ld pid=%d ready\n", n + 3, (int)getpid());
    fflush(stdout);
    sleep((unsigned)linger);
    return 0;
}
