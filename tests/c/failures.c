/* Failing calls: prints one line per case with the return value and errno, so that a run
   under fdguard can be compared line by line with a run without it (tests/failures.rs).

   Successful calls print their fd number too: fdguard must not shift fd numbers either.
   The last section lowers RLIMIT_NOFILE, fills the table and tries every creating call at
   EMFILE. `failures DIR` */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <linux/close_range.h>
#include "testlib.h"


/* One result line: the value returned and errno (reset before each call). */
#define R(name, expr)                                                                             \
    do {                                                                                        \
        errno = 0;                                                                              \
        long r_ = (long)(expr);                                                                 \
        int e_ = errno;                                                                         \
        printf("%-28s ret=%ld errno=%s\n", name, r_, r_ < 0 ? strerrorname_np(e_) : "-");      \
    } while (0)

/* Same for calls returning a pointer (NULL on failure); prints the fd behind it. */
#define RP(name, expr, fdof)                                                                      \
    do {                                                                                        \
        errno = 0;                                                                              \
        void *p_ = (void *)(expr);                                                              \
        int e_ = errno;                                                                         \
        if (p_) printf("%-28s fd=%d\n", name, fdof(p_));                                         \
        else printf("%-28s NULL errno=%s\n", name, strerrorname_np(e_));                         \
    } while (0)

static int fileno_of(void *f) { return fileno((FILE *)f); }
static int dirfd_of(void *d) { return dirfd((DIR *)d); }

static void ordinary_failures(void) {
    const char *file = strdup(P("exists.txt"));
    int keep = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    R("open existing", keep);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    int p[2];
    char tmpl[4096];

    R("open ENOENT", open(P("missing/x"), O_RDONLY));
    R("open EEXIST", open(file, O_CREAT | O_EXCL | O_WRONLY, 0600));
    R("open O_TMPFILE rdonly", open(dir, O_TMPFILE | O_RDONLY, 0600));
    R("open ENOTDIR", open(file, O_RDONLY | O_DIRECTORY));
    R("open64 ENOENT", open64(P("missing/x"), O_RDONLY));
    R("openat EBADF", openat(987, "x", O_RDONLY));
    R("openat ENOTDIR", openat(keep, "x", O_RDONLY));
    R("openat64 ENOENT", openat64(AT_FDCWD, P("missing/x"), O_RDONLY));
    R("creat ENOENT", creat(P("missing/x"), 0600));
    R("creat64 EISDIR", creat64(dir, 0600));
    RP("fopen ENOENT", fopen(P("missing.txt"), "r"), fileno_of);
    RP("fopen EINVAL mode", fopen(file, "z"), fileno_of);
    RP("fopen64 ENOENT", fopen64(P("missing.txt"), "r"), fileno_of);
    FILE *f = fopen(file, "r");
    int old = fileno(f);
    RP("freopen ENOENT", freopen(P("missing.txt"), "r", f), fileno_of);
    R("old fd after failed freopen", fcntl(old, F_GETFD));
    RP("fdopen EBADF", fdopen(987, "r"), fileno_of);
    RP("opendir ENOTDIR", opendir(file), dirfd_of);
    RP("opendir ENOENT", opendir(P("missing")), dirfd_of);
    RP("fdopendir ENOTDIR", fdopendir(keep), dirfd_of);
    RP("fdopendir EBADF", fdopendir(987), dirfd_of);
    RP("popen EINVAL", popen("true", "x"), fileno_of);

    R("close(-1)", close(-1));
    R("close never opened", close(987));
    int once = open(file, O_RDONLY);
    R("close once", close(once));
    R("close twice", close(once));
    R("dup EBADF", dup(987));
    R("dup2 bad oldfd", dup2(987, 50));
    R("dup2 bad oldfd, open newfd", dup2(987, keep));
    R("fd still open after that", fcntl(keep, F_GETFD));
    R("dup2 negative newfd", dup2(keep, -1));
    R("dup3 same fd", dup3(keep, keep, 0));
    R("dup3 bad flags", dup3(keep, 50, 12345));
    R("fcntl F_DUPFD negative", fcntl(keep, F_DUPFD, -1));
    R("fcntl F_DUPFD EBADF", fcntl(987, F_DUPFD, 0));
    R("fcntl64 F_DUPFD_CLOEXEC EBADF", fcntl64(987, F_DUPFD_CLOEXEC, 0));
    R("fcntl F_GETFD EBADF", fcntl(987, F_GETFD));

    R("accept non-socket", accept(keep, NULL, NULL));
    R("accept EBADF", accept(987, NULL, NULL));
    int s = socket(AF_INET, SOCK_STREAM, 0);
    R("socket", s);
    R("accept not listening", accept(s, NULL, NULL));
    R("accept4 bad flags", accept4(s, NULL, NULL, 12345));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 1) == 0);
    CHECK(fcntl(s, F_SETFL, O_NONBLOCK) == 0);
    R("accept EAGAIN", accept(s, NULL, NULL));
    R("socket EAFNOSUPPORT", socket(12345, SOCK_STREAM, 0));
    R("socket EINVAL type", socket(AF_INET, 12345, 0));
    R("socketpair EOPNOTSUPP", socketpair(AF_INET, SOCK_STREAM, 0, p));
    struct msghdr m = {0};
    R("recvmsg EBADF", recvmsg(987, &m, 0));
    R("recvmsg ENOTSOCK", recvmsg(keep, &m, 0));
    struct mmsghdr mm = {0};
    R("recvmmsg EBADF", recvmmsg(987, &mm, 1, 0, NULL));

    R("pipe2 EINVAL", pipe2(p, 12345));
    R("epoll_create EINVAL", epoll_create(0));
    R("epoll_create1 EINVAL", epoll_create1(12345));
    R("eventfd EINVAL", eventfd(0, 12345));
    R("timerfd_create EINVAL", timerfd_create(12345, 0));
    R("signalfd on a file", signalfd(keep, &mask, 0));
    R("signalfd EBADF", signalfd(987, &mask, 0));
    R("signalfd bad flags", signalfd(-1, &mask, 12345));
    R("inotify_init1 EINVAL", inotify_init1(12345));
    R("memfd_create EINVAL", memfd_create("x", 12345));
    R("pidfd_open ESRCH", pidfd_open(0x3fffffff, 0));
    R("pidfd_open EINVAL", pidfd_open(-1, 0));
    snprintf(tmpl, sizeof tmpl, "%s/bad-template", dir);
    R("mkstemp EINVAL", mkstemp(tmpl));
    snprintf(tmpl, sizeof tmpl, "%s/XXXXXX.x", dir);
    R("mkstemps EINVAL suffix", mkstemps(tmpl, 10));
    snprintf(tmpl, sizeof tmpl, "%s/missing/XXXXXX", dir);
    R("mkostemp ENOENT", mkostemp(tmpl, O_CLOEXEC));
    R("close_range EINVAL order", close_range(50, 40, 0));
    R("close_range EINVAL flags", close_range(50, 60, 12345));

    /* Successes in between must keep returning the lowest free numbers. */
    R("pipe", pipe(p));
    printf("pipe fds %d %d\n", p[0], p[1]);
    R("open after failures", open(file, O_RDONLY));
    R("dup after failures", dup(keep));
    /* Release everything above stdio: the EMFILE section starts from a known table. */
    closefrom(3);
}

/* Fills the table up to a low limit, then tries every creating call. */
static void emfile(void) {
    const char *file = strdup(P("exists.txt"));
    /* A listener with a connection waiting, so that accept gets as far as needing an fd. */
    int c;
    int l = loopback_listener(4, &c, NULL);
    /* A socketpair with an fd in flight, for recvmsg at the limit. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    send_fds(sv[0], &l, 1);
    int keep = open(file, O_RDONLY);
    FILE *stream = fopen(file, "r");

    struct rlimit rl = {64, 64};
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    int n = 0, fd;
    while ((fd = open("/dev/null", O_RDONLY)) >= 0) n++;
    printf("filled with %d more fds; last errno=%s\n", n, strerrorname_np(errno));

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    int p[2];
    char tmpl[4096];
    R("open EMFILE", open(file, O_RDONLY));
    R("open64 EMFILE", open64(file, O_RDONLY));
    R("openat EMFILE", openat(AT_FDCWD, file, O_RDONLY));
    R("creat EMFILE", creat(P("new.txt"), 0600));
    RP("fopen EMFILE", fopen(file, "r"), fileno_of);
    RP("opendir EMFILE", opendir(dir), dirfd_of);
    RP("tmpfile EMFILE", tmpfile(), fileno_of);
    RP("popen EMFILE", popen("true", "r"), fileno_of);
    snprintf(tmpl, sizeof tmpl, "%s/XXXXXX", dir);
    R("mkstemp EMFILE", mkstemp(tmpl));
    R("memfd_create EMFILE", memfd_create("x", 0));
    R("posix_openpt EMFILE", posix_openpt(O_RDWR | O_NOCTTY));
    R("socket EMFILE", socket(AF_INET, SOCK_STREAM, 0));
    R("socketpair EMFILE", socketpair(AF_UNIX, SOCK_STREAM, 0, p));
    R("accept EMFILE", accept(l, NULL, NULL));
    R("accept4 EMFILE", accept4(l, NULL, NULL, SOCK_CLOEXEC));
    R("pipe EMFILE", pipe(p));
    R("pipe2 EMFILE", pipe2(p, O_CLOEXEC));
    R("epoll_create1 EMFILE", epoll_create1(0));
    R("eventfd EMFILE", eventfd(0, 0));
    R("timerfd_create EMFILE", timerfd_create(CLOCK_MONOTONIC, 0));
    R("signalfd EMFILE", signalfd(-1, &mask, 0));
    R("inotify_init1 EMFILE", inotify_init1(0));
    R("pidfd_open EMFILE", pidfd_open(getpid(), 0));
    R("dup EMFILE", dup(keep));
    R("fcntl F_DUPFD EMFILE", fcntl(keep, F_DUPFD, 0));
    R("fcntl F_DUPFD >= limit", fcntl(keep, F_DUPFD, 64));
    R("dup2 newfd >= limit", dup2(keep, 64));
    R("dup2 onto an open fd", dup2(keep, 63));
    {
        char byte;
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                           .msg_controllen = sizeof u.buf};
        R("recvmsg SCM_RIGHTS EMFILE", recvmsg(sv[1], &m, 0));
        printf("recvmsg flags MSG_CTRUNC=%d\n", !!(m.msg_flags & MSG_CTRUNC));
    }
    /* fdopen needs no new fd; freopen releases one first. */
    RP("fdopen at EMFILE", fdopen(dup2(keep, 63), "r"), fileno_of);
    RP("freopen at EMFILE", freopen(file, "r", stream), fileno_of);
    closefrom(3);
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    dir = argv[1];
    ordinary_failures();
    emfile();
    return 0;
}
