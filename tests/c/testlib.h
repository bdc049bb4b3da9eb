/* Helpers shared by the C test programs: paths in the test's scratch directory, files to open,
   the EXPECT/GONE lines the harness checks against fdguard's report, and passing fds over a
   socket. Everything is static: each program uses what it needs. */
#ifndef FDGUARD_TESTLIB_H
#define FDGUARD_TESTLIB_H
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include "checkpoint.h"

#define UNUSED __attribute__((unused))

/* A loopback TCP listener on a port the kernel picks, with one client connected and not yet
   accepted. Returns the listener; the client goes to *client, the port to *port (if given). */
UNUSED static int loopback_listener(int backlog, int *client, int *port) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, backlog) == 0);
    CHECK(getsockname(l, (struct sockaddr *)&a, &len) == 0);
    *client = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(*client, (struct sockaddr *)&a, sizeof a) == 0);
    if (port) *port = ntohs(a.sin_port);
    return l;
}

/* The scratch directory, from the command line. */
static const char *dir;

/* An absolute path in the scratch directory (a few live at once: rotating buffers, not for
   threads that open at the same time). */
UNUSED static const char *P(const char *name) {
    static char bufs[8][4096];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

/* Creates (or truncates) a file with `content`, so that there is something to open. */
UNUSED static const char *touch_with(const char *name, const char *content) {
    const char *p = P(name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, content, strlen(content)) == (ssize_t)strlen(content));
    CHECK(close(fd) == 0);
    return p;
}

UNUSED static const char *touch(const char *name) { return touch_with(name, "data\n"); }

/* What the report must say about `fd` at the next checkpoint. */
UNUSED static void expect(int fd, const char *kind, const char *call, const char *desc) {
    CHECK(fd >= 0);
    printf("EXPECT %d %s %s %s\n", fd, kind, call, desc);
}

/* `fd` is released: neither the kernel nor the report may have it. */
UNUSED static void gone(int fd) {
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);
    printf("GONE %d\n", fd);
}

/* Sends `n` (at most 4) fds in one SCM_RIGHTS message, with one byte of data. */
UNUSED static void send_fds(int sock, const int *fds, int n) {
    char byte = 'x';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    CHECK(sendmsg(sock, &m, 0) == 1);
}
#endif
