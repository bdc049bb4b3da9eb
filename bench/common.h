/* Shared helpers for the fdguard benchmark workloads (see scripts/bench.sh). */
#ifndef FDBENCH_COMMON_H
#define FDBENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

/* Every program stops by itself after this many seconds, whatever happens. */
#define FDBENCH_WATCHDOG_S 300

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s[%d]: ", program_invocation_short_name, (int)getpid());
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (e)
        fprintf(stderr, ": %s", strerror(e));
    fputc('\n', stderr);
    exit(2);
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline long parse_long(const char *s, const char *what, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        errno = 0;
        die("bad %s '%s' (expected %ld..%ld)", what, s, min, max);
    }
    return v;
}

/* Bound the process's life and make forked helpers die with their parent. */
static inline void watchdog(unsigned seconds)
{
    alarm(seconds);
}

static inline void child_dies_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
}

/* VmRSS of this process in KiB, read from /proc/self/status. */
static inline long vm_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f)
        die("fopen /proc/self/status");
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* A TCP listener on 127.0.0.1, ephemeral port. */
static inline int listen_loopback(int backlog, int *port_out)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int one = 1;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die("socket");
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind 127.0.0.1:0");
    if (listen(s, backlog) < 0)
        die("listen");
    if (getsockname(s, (struct sockaddr *)&a, &len) < 0)
        die("getsockname");
    *port_out = ntohs(a.sin_port);
    return s;
}

/* Connect to 127.0.0.1:port; the socket is closed with RST (linger 0) so that
 * thousands of short connections leave no TIME_WAIT sockets behind. */
static inline int connect_loopback(int port)
{
    struct sockaddr_in a;
    struct linger lg = {1, 0};
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die("client socket");
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    while (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        if (errno != EINTR)
            die("connect 127.0.0.1:%d", port);
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    return s;
}

static inline void write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write");
        p += w;
        n -= (size_t)w;
    }
}

/* Read exactly n bytes; returns 0 on success, -1 on EOF before n bytes. */
static inline int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read");
        if (r == 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

#endif
