/* One scenario per interposed call: `calls SCENARIO DIR`.

   Each scenario creates fds with the call under test and, before each checkpoint, prints what
   the report must say:
     EXPECT <fd> <kind> <call> <substring of desc>
     GONE <fd>                     (released: neither the kernel nor the report may have it)
   The harness (tests/calls.rs) checks every line against fdguard's report and /proc/PID/fd.

   Built with -O2 -D_FORTIFY_SOURCE=2 so that `open` with a non-constant flags argument becomes a
   call to `__open_2` & co, as in distribution builds. */
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
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <linux/close_range.h>
#include "testlib.h"


static void close_gone(int fd) {
    CHECK(close(fd) == 0);
    gone(fd);
}

/* Keeps the compiler from seeing constant flags, so that fortified `open` calls `__open_2`. */
static volatile int RDONLY = O_RDONLY;

/* ---- files ---- */

static void s_open(void) {
    const char *p = touch("open.txt");
    int fd = open(p, O_RDONLY);
    expect(fd, "file", "open", p);
    checkpoint("created");
    close_gone(fd);
}

static void s_open64(void) {
    const char *p = touch("open64.txt");
    int fd = open64(p, O_RDONLY);
    expect(fd, "file", "open64", p);
    checkpoint("created");
    close_gone(fd);
}

/* openat with a relative path: desc is the path as given, then the kernel's path. */
static void openat_common(int is64) {
    const char *p = touch("openat.txt");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    expect(dfd, "dir", "open", dir);
    int fd = is64 ? openat64(dfd, "openat.txt", O_RDONLY) : openat(dfd, "openat.txt", O_RDONLY);
    char want[4200];
    snprintf(want, sizeof want, "openat.txt (%s)", p);
    expect(fd, "file", is64 ? "openat64" : "openat", want);
    checkpoint("created");
    close_gone(fd);
    close_gone(dfd);
}
static void s_openat(void) { openat_common(0); }
static void s_openat64(void) { openat_common(1); }

static void s_creat(void) {
    const char *p = P("creat.txt");
    int fd = creat(p, 0600);
    expect(fd, "file", "creat", p);
    checkpoint("created");
    close_gone(fd);
}

static void s_creat64(void) {
    const char *p = P("creat64.txt");
    int fd = creat64(p, 0600);
    expect(fd, "file", "creat64", p);
    checkpoint("created");
    close_gone(fd);
}

static void s_open_2(void) {
    const char *p = touch("open_2.txt");
    int fd = open(p, RDONLY);
    expect(fd, "file", "__open_2", p);
    checkpoint("created");
    close_gone(fd);
}

static void s_open64_2(void) {
    const char *p = touch("open64_2.txt");
    int fd = open64(p, RDONLY);
    expect(fd, "file", "__open64_2", p);
    checkpoint("created");
    close_gone(fd);
}

static void s_openat_2(void) {
    const char *p = touch("openat_2.txt");
    int fd = openat(AT_FDCWD, p, RDONLY);
    expect(fd, "file", "__openat_2", p);
    checkpoint("created");
    close_gone(fd);
}

static void s_openat64_2(void) {
    const char *p = touch("openat64_2.txt");
    int fd = openat64(AT_FDCWD, p, RDONLY);
    expect(fd, "file", "__openat64_2", p);
    checkpoint("created");
    close_gone(fd);
}

static void s_fopen(void) {
    const char *p = touch("fopen.txt");
    FILE *f = fopen(p, "r");
    CHECK(f);
    int fd = fileno(f);
    expect(fd, "file", "fopen", p);
    checkpoint("created");
    CHECK(fclose(f) == 0);
    gone(fd);
}

static void s_fopen64(void) {
    const char *p = touch("fopen64.txt");
    FILE *f = fopen64(p, "r");
    CHECK(f);
    int fd = fileno(f);
    expect(fd, "file", "fopen64", p);
    checkpoint("created");
    CHECK(fclose(f) == 0);
    gone(fd);
}

/* freopen releases the stream's fd and opens the new path (glibc reuses the number). */
static void freopen_common(int is64) {
    const char *a = touch("freopen-a.txt");
    const char *b = touch("freopen-b.txt");
    FILE *f = fopen(a, "r");
    CHECK(f);
    int old = fileno(f);
    expect(old, "file", "fopen", a);
    checkpoint("before");
    f = is64 ? freopen64(b, "r", f) : freopen(b, "r", f);
    CHECK(f);
    int fd = fileno(f);
    expect(fd, "file", is64 ? "freopen64" : "freopen", b);
    if (fd != old) gone(old);
    checkpoint("created");
    CHECK(fclose(f) == 0);
    gone(fd);
}
static void s_freopen(void) { freopen_common(0); }
static void s_freopen64(void) { freopen_common(1); }

/* freopen(NULL, mode, f) reopens the same file on the same number. */
static void s_freopen_null(void) {
    const char *a = touch("freopen-null.txt");
    FILE *f = fopen(a, "r");
    CHECK(f);
    int old = fileno(f);
    f = freopen(NULL, "r+", f);
    CHECK(f);
    int fd = fileno(f);
    CHECK(fd == old);
    expect(fd, "file", "freopen", a);
    checkpoint("created");
    CHECK(fclose(f) == 0);
    gone(fd);
}

/* fdopen makes no fd: the fd keeps the call that created it, and fclose releases it. */
static void s_fdopen(void) {
    const char *p = touch("fdopen.txt");
    int fd = open(p, O_RDONLY);
    FILE *f = fdopen(fd, "r");
    CHECK(f && fileno(f) == fd);
    expect(fd, "file", "open", p);
    checkpoint("created");
    CHECK(fclose(f) == 0);
    gone(fd);
}

static void s_opendir(void) {
    DIR *d = opendir(dir);
    CHECK(d);
    int fd = dirfd(d);
    expect(fd, "dir", "opendir", dir);
    checkpoint("created");
    CHECK(closedir(d) == 0);
    gone(fd);
}

static void s_fdopendir(void) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    DIR *d = fdopendir(fd);
    CHECK(d && dirfd(d) == fd);
    expect(fd, "dir", "open", dir);
    checkpoint("created");
    CHECK(closedir(d) == 0);
    gone(fd);
}

static void s_tmpfile(void) {
    FILE *f = tmpfile();
    CHECK(f);
    int fd = fileno(f);
    expect(fd, "file", "tmpfile", "(deleted)");
    checkpoint("created");
    CHECK(fclose(f) == 0);
    gone(fd);
}

static void s_tmpfile64(void) {
    FILE *f = tmpfile64();
    CHECK(f);
    int fd = fileno(f);
    expect(fd, "file", "tmpfile64", "(deleted)");
    checkpoint("created");
    CHECK(fclose(f) == 0);
    gone(fd);
}

/* The mkstemp family: desc is the template as filled in by the call. */
#define MKSTEMP_SCENARIO(fn, name, call_expr, suffix)                                             \
    static void fn(void) {                                                                      \
        char t[4096];                                                                           \
        snprintf(t, sizeof t, "%s/" name "-XXXXXX" suffix, dir);                                \
        int fd = call_expr;                                                                     \
        CHECK(fd >= 0 && strstr(t, "XXXXXX") == NULL);                                          \
        expect(fd, "file", name, t);                                                            \
        checkpoint("created");                                                                  \
        close_gone(fd);                                                                         \
    }
MKSTEMP_SCENARIO(s_mkstemp, "mkstemp", mkstemp(t), "")
MKSTEMP_SCENARIO(s_mkstemp64, "mkstemp64", mkstemp64(t), "")
MKSTEMP_SCENARIO(s_mkostemp, "mkostemp", mkostemp(t, O_CLOEXEC), "")
MKSTEMP_SCENARIO(s_mkostemp64, "mkostemp64", mkostemp64(t, O_CLOEXEC), "")
MKSTEMP_SCENARIO(s_mkstemps, "mkstemps", mkstemps(t, 4), ".txt")
MKSTEMP_SCENARIO(s_mkstemps64, "mkstemps64", mkstemps64(t, 4), ".txt")
MKSTEMP_SCENARIO(s_mkostemps, "mkostemps", mkostemps(t, 4, O_CLOEXEC), ".txt")
MKSTEMP_SCENARIO(s_mkostemps64, "mkostemps64", mkostemps64(t, 4, O_CLOEXEC), ".txt")

static void s_memfd_create(void) {
    int fd = memfd_create("fdguard-memfd", MFD_CLOEXEC);
    expect(fd, "memfd", "memfd_create", "fdguard-memfd (/memfd:fdguard-memfd (deleted))");
    checkpoint("created");
    close_gone(fd);
}

static void s_posix_openpt(void) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY);
    expect(fd, "pty", "posix_openpt", "/dev/");
    checkpoint("created");
    close_gone(fd);
}

static void s_getpt(void) {
    int fd = getpt();
    expect(fd, "pty", "getpt", "/dev/");
    checkpoint("created");
    close_gone(fd);
}

static void s_popen(void) {
    FILE *f = popen("exec cat", "w");
    CHECK(f);
    int fd = fileno(f);
    expect(fd, "pipe", "popen", "write end (popen \"exec cat\")");
    checkpoint("created");
    CHECK(pclose(f) == 0);
    gone(fd);
}

/* ---- sockets ---- */

static void s_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    expect(fd, "socket", "socket", "tcp unconnected (CLOSE)");
    checkpoint("created");
    close_gone(fd);
}

static void s_socketpair(void) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    expect(sv[0], "socket", "socketpair", "unix stream");
    expect(sv[1], "socket", "socketpair", "unix stream");
    checkpoint("created");
    close_gone(sv[0]);
    close_gone(sv[1]);
}

/* A loopback listener, a connected client and the accepted end. */
static void accept_common(int use4) {
    int c, port;
    int l = loopback_listener(4, &c, &port);
    int s = use4 ? accept4(l, NULL, NULL, SOCK_CLOEXEC) : accept(l, NULL, NULL);
    char want[128];
    snprintf(want, sizeof want, "tcp 127.0.0.1:%d LISTEN", port);
    expect(l, "socket", "socket", want);
    snprintf(want, sizeof want, "-> 127.0.0.1:%d ESTABLISHED", port);
    expect(c, "socket", "socket", want);
    snprintf(want, sizeof want, "tcp 127.0.0.1:%d -> 127.0.0.1:", port);
    expect(s, "socket", use4 ? "accept4" : "accept", want);
    checkpoint("created");
    close_gone(s);
    close_gone(c);
    close_gone(l);
}
static void s_accept(void) { accept_common(0); }
static void s_accept4(void) { accept_common(1); }

/* Reads the fds of the message's SCM_RIGHTS data into `out`; returns how many. */
static int fds_of(struct msghdr *m, int *out) {
    int n = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(out + n, CMSG_DATA(c), sizeof(int) * k);
            n += k;
        }
    }
    return n;
}

static void s_recvmsg(void) {
    const char *p = touch("passed.txt");
    int sv[2], pp[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0 && pipe(pp) == 0);
    int f = open(p, O_RDONLY);
    int send[2] = {f, pp[0]};
    send_fds(sv[0], send, 2);
    close(f);
    close(pp[0]);
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    CHECK(recvmsg(sv[1], &m, 0) == 1);
    int got[4];
    CHECK(fds_of(&m, got) == 2);
    expect(got[0], "file", "recvmsg", p);
    expect(got[1], "pipe", "recvmsg", "read end");
    checkpoint("created");
    close_gone(got[0]);
    close_gone(got[1]);
    close(pp[1]);
    close(sv[0]);
    close(sv[1]);
}

/* Two messages, one fd each, received by one recvmmsg. */
static void s_recvmmsg(void) {
    const char *p = touch("passed-mm.txt");
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
    int f = open(p, O_RDONLY);
    int e = eventfd(0, 0);
    send_fds(sv[0], &f, 1);
    send_fds(sv[0], &e, 1);
    close(f);
    close(e);
    char bytes[2];
    struct iovec iov[2] = {{.iov_base = &bytes[0], .iov_len = 1}, {.iov_base = &bytes[1], .iov_len = 1}};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u[2];
    struct mmsghdr mm[2];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 2; i++) {
        mm[i].msg_hdr.msg_iov = &iov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
        mm[i].msg_hdr.msg_control = u[i].buf;
        mm[i].msg_hdr.msg_controllen = sizeof u[i].buf;
    }
    CHECK(recvmmsg(sv[1], mm, 2, 0, NULL) == 2);
    int got[4];
    CHECK(fds_of(&mm[0].msg_hdr, got) == 1 && fds_of(&mm[1].msg_hdr, got + 1) == 1);
    expect(got[0], "file", "recvmmsg", p);
    expect(got[1], "eventfd", "recvmmsg", "anon_inode:[eventfd]");
    checkpoint("created");
    close_gone(got[0]);
    close_gone(got[1]);
    close(sv[0]);
    close(sv[1]);
}

/* ---- kernel objects ---- */

static void s_pipe(void) {
    int p[2];
    CHECK(pipe(p) == 0);
    expect(p[0], "pipe", "pipe", "read end");
    expect(p[1], "pipe", "pipe", "write end");
    checkpoint("created");
    close_gone(p[0]);
    close_gone(p[1]);
}

static void s_pipe2(void) {
    int p[2];
    CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    expect(p[0], "pipe", "pipe2", "read end");
    expect(p[1], "pipe", "pipe2", "write end");
    checkpoint("created");
    close_gone(p[0]);
    close_gone(p[1]);
}

static void s_epoll_create(void) {
    int fd = epoll_create(8);
    expect(fd, "epoll", "epoll_create", "anon_inode:[eventpoll]");
    checkpoint("created");
    close_gone(fd);
}

static void s_epoll_create1(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    expect(fd, "epoll", "epoll_create1", "anon_inode:[eventpoll]");
    checkpoint("created");
    close_gone(fd);
}

static void s_eventfd(void) {
    int fd = eventfd(0, EFD_CLOEXEC);
    expect(fd, "eventfd", "eventfd", "anon_inode:[eventfd]");
    checkpoint("created");
    close_gone(fd);
}

static void s_timerfd_create(void) {
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    expect(fd, "timerfd", "timerfd_create", "anon_inode:[timerfd]");
    checkpoint("created");
    close_gone(fd);
}

/* signalfd(-1, ...) creates an fd; signalfd(existing, ...) only changes its mask, so the
   existing fd (here made by dup) must keep its own call. */
static void s_signalfd(void) {
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    int s = signalfd(-1, &m, SFD_CLOEXEC);
    int d = dup(s);
    sigaddset(&m, SIGWINCH);
    CHECK(signalfd(d, &m, 0) == d);
    expect(s, "signalfd", "signalfd", "anon_inode:[signalfd]");
    expect(d, "signalfd", "dup", "anon_inode:[signalfd]");
    checkpoint("created");
    close_gone(d);
    close_gone(s);
}

static void s_inotify_init(void) {
    int fd = inotify_init();
    expect(fd, "inotify", "inotify_init", "anon_inode:inotify");
    checkpoint("created");
    close_gone(fd);
}

static void s_inotify_init1(void) {
    int fd = inotify_init1(IN_CLOEXEC);
    expect(fd, "inotify", "inotify_init1", "anon_inode:inotify");
    checkpoint("created");
    close_gone(fd);
}

static void s_fanotify_init(void) {
    int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC, O_RDONLY);
    if (fd < 0 && (errno == EPERM || errno == ENOSYS)) {
        printf("SKIP fanotify_init: %s\n", strerror(errno));
        return;
    }
    expect(fd, "fanotify", "fanotify_init", "anon_inode:[fanotify]");
    checkpoint("created");
    close_gone(fd);
}

static void s_pidfd_open(void) {
    int fd = pidfd_open(getpid(), 0);
    char want[64];
    snprintf(want, sizeof want, "(pid %d)", getpid());
    expect(fd, "pidfd", "pidfd_open", want);
    checkpoint("created");
    close_gone(fd);
}

/* ---- duplication ---- */

static void s_dup(void) {
    const char *p = touch("dup.txt");
    int fd = open(p, O_RDONLY);
    int d = dup(fd);
    expect(fd, "file", "open", p);
    expect(d, "file", "dup", p);
    checkpoint("created");
    close_gone(d);
    close_gone(fd);
}

/* dup2 onto a free number, and dup2(fd, fd), which changes nothing. */
static void s_dup2(void) {
    const char *p = touch("dup2.txt");
    int fd = open(p, O_RDONLY);
    CHECK(dup2(fd, 50) == 50);
    CHECK(dup2(fd, fd) == fd);
    expect(fd, "file", "open", p);
    expect(50, "file", "dup2", p);
    checkpoint("created");
    close_gone(50);
    close_gone(fd);
}

/* dup2/dup3 onto an open fd silently close it: the report must show the new file there. */
static void onto_open(int use3) {
    const char *a = touch("onto-a.txt");
    const char *b = touch("onto-b.txt");
    int fa = open(a, O_RDONLY);
    int fb = open(b, O_RDONLY);
    expect(fb, "file", "open", b);
    checkpoint("before");
    CHECK((use3 ? dup3(fa, fb, O_CLOEXEC) : dup2(fa, fb)) == fb);
    expect(fa, "file", "open", a);
    expect(fb, "file", use3 ? "dup3" : "dup2", a);
    checkpoint("created");
    close_gone(fb);
    close_gone(fa);
}
static void s_dup2_onto_open(void) { onto_open(0); }
static void s_dup3_onto_open(void) { onto_open(1); }

/* A pipe onto stdin: replacing an inherited fd (the checkpoints read a saved copy of stdin). */
static void s_dup2_onto_stdin(void) {
    int saved = dup(0);
    int p[2];
    CHECK(saved >= 0 && pipe(p) == 0);
    CHECK(dup2(p[0], 0) == 0);
    checkpoint_fd = saved;
    expect(saved, "pipe", "dup", "pipe:[");
    expect(0, "pipe", "dup2", "read end");
    checkpoint("created");
    close_gone(p[0]);
    close_gone(p[1]);
    CHECK(dup2(saved, 0) == 0);
    checkpoint_fd = 0;
    close_gone(saved);
    expect(0, "pipe", "dup2", "pipe:[");
}

static void fcntl_common(int is64) {
    const char *p = touch("fcntl.txt");
    int fd = open(p, O_RDONLY);
    int a = is64 ? fcntl64(fd, F_DUPFD, 40) : fcntl(fd, F_DUPFD, 40);
    int b = is64 ? fcntl64(fd, F_DUPFD_CLOEXEC, 60) : fcntl(fd, F_DUPFD_CLOEXEC, 60);
    CHECK(a == 40 && b == 60);
    /* Other commands create nothing. */
    CHECK((is64 ? fcntl64(a, F_SETFD, FD_CLOEXEC) : fcntl(a, F_SETFD, FD_CLOEXEC)) == 0);
    expect(a, "file", is64 ? "fcntl64" : "fcntl", p);
    expect(b, "file", is64 ? "fcntl64" : "fcntl", p);
    checkpoint("created");
    close_gone(a);
    close_gone(b);
    close_gone(fd);
}
static void s_fcntl(void) { fcntl_common(0); }
static void s_fcntl64(void) { fcntl_common(1); }

/* ---- ranges and streams ---- */

/* fds 100..103 (dup2 of one file). */
static const char *four_high_fds(void) {
    const char *p = touch("range.txt");
    int fd = open(p, O_RDONLY);
    for (int i = 100; i < 104; i++) CHECK(dup2(fd, i) == i);
    close(fd);
    for (int i = 100; i < 104; i++) expect(i, "file", "dup2", p);
    return p;
}

static void s_close_range(void) {
    four_high_fds();
    checkpoint("created");
    CHECK(close_range(100, 103, 0) == 0);
    for (int i = 100; i < 104; i++) gone(i);
}

/* CLOSE_RANGE_CLOEXEC closes nothing: every fd stays, marked close-on-exec. */
static void s_close_range_cloexec(void) {
    const char *p = four_high_fds();
    CHECK(close_range(100, 103, CLOSE_RANGE_CLOEXEC) == 0);
    for (int i = 100; i < 104; i++) {
        CHECK(fcntl(i, F_GETFD) == FD_CLOEXEC);
        expect(i, "file", "dup2", p);
    }
    checkpoint("created");
    CHECK(close_range(101, ~0U, 0) == 0);
    expect(100, "file", "dup2", p);
    for (int i = 101; i < 104; i++) gone(i);
    checkpoint("partly");
    close_gone(100);
}

static void s_closefrom(void) {
    four_high_fds();
    checkpoint("created");
    closefrom(100);
    for (int i = 100; i < 104; i++) gone(i);
}

/* glibc's fcloseall flushes streams without closing their fds (other libcs close them): the
   report must follow the kernel either way. */
static void s_fcloseall(void) {
    const char *a = touch("fcloseall-a.txt");
    const char *b = touch("fcloseall-b.txt");
    FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
    CHECK(fa && fb);
    int fds[2] = {fileno(fa), fileno(fb)};
    const char *paths[2] = {a, b};
    expect(fds[0], "file", "fopen", a);
    expect(fds[1], "file", "fopen", b);
    checkpoint("created");
    fflush(stdout);
    CHECK(fcloseall() == 0);
    for (int i = 0; i < 2; i++) {
        if (fcntl(fds[i], F_GETFD) != -1) expect(fds[i], "file", "fopen", paths[i]);
        else gone(fds[i]);
    }
    checkpoint("fcloseall");
    for (int i = 0; i < 2; i++) {
        if (fcntl(fds[i], F_GETFD) != -1) close(fds[i]);
        gone(fds[i]);
    }
}

struct scenario {
    const char *name;
    void (*run)(void);
};

#define S(x) {#x, s_##x}
static const struct scenario SCENARIOS[] = {
    S(open), S(open64), S(openat), S(openat64), S(creat), S(creat64), S(open_2), S(open64_2),
    S(openat_2), S(openat64_2), S(fopen), S(fopen64), S(freopen), S(freopen64), S(freopen_null),
    S(fdopen), S(opendir), S(fdopendir), S(tmpfile), S(tmpfile64), S(mkstemp), S(mkstemp64),
    S(mkostemp), S(mkostemp64), S(mkstemps), S(mkstemps64), S(mkostemps), S(mkostemps64),
    S(memfd_create), S(posix_openpt), S(getpt), S(popen), S(socket), S(socketpair), S(accept),
    S(accept4), S(recvmsg), S(recvmmsg), S(pipe), S(pipe2), S(epoll_create), S(epoll_create1),
    S(eventfd), S(timerfd_create), S(signalfd), S(inotify_init), S(inotify_init1),
    S(fanotify_init), S(pidfd_open), S(dup), S(dup2), S(dup2_onto_open), S(dup3_onto_open),
    S(dup2_onto_stdin), S(fcntl), S(fcntl64), S(close_range), S(close_range_cloexec),
    S(closefrom), S(fcloseall),
};

int main(int argc, char **argv) {
    CHECK(argc == 3);
    dir = argv[2];
    for (size_t i = 0; i < sizeof SCENARIOS / sizeof SCENARIOS[0]; i++) {
        if (strcmp(SCENARIOS[i].name, argv[1]) == 0) {
            SCENARIOS[i].run();
            checkpoint("released");
            return 0;
        }
    }
    if (strcmp(argv[1], "list") == 0) {
        for (size_t i = 0; i < sizeof SCENARIOS / sizeof SCENARIOS[0]; i++)
            printf("%s\n", SCENARIOS[i].name);
        return 0;
    }
    fprintf(stderr, "unknown scenario %s\n", argv[1]);
    return 2;
}
