/* A seeded random workload: `workload SEED ROUNDS DIR`.

   Four worker threads each do a bounded random mix of every fd call fdguard interposes, on their
   own fds. After each round all of them park on a barrier and the main thread stops at a
   checkpoint ("round-N"), where the harness compares fdguard's report with /proc/PID/fd.

   In some rounds one worker forks. The fork is gated (the other workers hold a read lock around
   each call, the forker takes the write lock), so that no other thread is half-way through a
   call when the process is copied: the child's table must then match its fds exactly. The child
   churns on its own, single-threaded (including closefrom), prints "CHILD <pid>" and stops at a
   checkpoint named "child"; the parent waits for it before going on. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <linux/close_range.h>
#include "testlib.h"

#define WORKERS 4
#define SLOTS 48
#define OPS_PER_ROUND 150
#define CHILD_OPS 120
/* Each worker owns 64 high fd numbers for dup2/dup3/close_range. */
#define RANGE_BASE 3000
#define RANGE_SIZE 64

enum kind { FREE, FD, STREAM, DIRP, POPEN };

struct slot {
    enum kind kind;
    int fd;
    void *p;
};

struct worker {
    int id;
    uint64_t rng;
    struct slot s[SLOTS];
    int ops;
};

static int rounds;
static pthread_barrier_t barrier;
static pthread_rwlock_t gate;
static struct worker workers[WORKERS];
static int in_child;
/* Round in which worker `round % WORKERS` forks (one fork in each listed round). */
static int fork_round(int r) { return r % 2 == 1; }

static uint64_t next(struct worker *w) {
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}
static int pick(struct worker *w, int n) { return (int)(next(w) % (uint64_t)n); }

static int free_slots(struct worker *w) {
    int n = 0;
    for (int i = 0; i < SLOTS; i++) n += w->s[i].kind == FREE;
    return n;
}

static void put(struct worker *w, enum kind k, int fd, void *p) {
    CHECK(fd >= 0);
    for (int i = 0; i < SLOTS; i++) {
        if (w->s[i].kind == FREE) {
            w->s[i] = (struct slot){k, fd, p};
            return;
        }
    }
    CHECK(!"no free slot");
}

static int find_fd(struct worker *w, int fd) {
    for (int i = 0; i < SLOTS; i++)
        if (w->s[i].kind != FREE && w->s[i].fd == fd) return i;
    return -1;
}

/* Releases slot i the way its kind requires. */
static void release(struct worker *w, int i) {
    struct slot *s = &w->s[i];
    switch (s->kind) {
    case FD: CHECK(close(s->fd) == 0); break;
    case STREAM: CHECK(fclose(s->p) == 0); break;
    case DIRP: CHECK(closedir(s->p) == 0); break;
    /* In a fork child the popen'd process is not our child: pclose closes the fd but cannot
       wait for it (ECHILD). */
    case POPEN: CHECK(pclose(s->p) != -1 || in_child); break;
    case FREE: break;
    }
    s->kind = FREE;
}

/* Any open plain-fd slot (for dup & co), or -1. */
static int some_fd(struct worker *w) {
    int start = pick(w, SLOTS);
    for (int k = 0; k < SLOTS; k++) {
        int i = (start + k) % SLOTS;
        if (w->s[i].kind == FD) return i;
    }
    return -1;
}

static const char *path(struct worker *w, char *buf, size_t n) {
    snprintf(buf, n, "%s/w%d-%d", dir, w->id, pick(w, 8));
    return buf;
}


static int recv_one(int sock, int use_mmsg) {
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    struct mmsghdr mm;
    memset(&mm, 0, sizeof mm);
    mm.msg_hdr = (struct msghdr){.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                                 .msg_controllen = sizeof u.buf};
    if (use_mmsg) CHECK(recvmmsg(sock, &mm, 1, 0, NULL) == 1);
    else CHECK(recvmsg(sock, &mm.msg_hdr, 0) == 1);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mm.msg_hdr);
    CHECK(c && c->cmsg_type == SCM_RIGHTS);
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

static volatile int RDONLY = O_RDONLY;

/* One random call. `single` is true in a fork child (the only thread): it may close ranges it
   does not own. */
static void op(struct worker *w, int single) {
    char buf[4096];
    int nfree = free_slots(w);
    /* Keep the pool from filling up: release more often as it fills. */
    if (nfree < 6 || pick(w, SLOTS) >= nfree + 8) {
        int start = pick(w, SLOTS);
        for (int k = 0; k < SLOTS; k++) {
            int i = (start + k) % SLOTS;
            if (w->s[i].kind != FREE) {
                release(w, i);
                return;
            }
        }
    }
    int fd, i, p[2];
    sigset_t mask;
    switch (pick(w, 34)) {
    case 0: put(w, FD, open(path(w, buf, sizeof buf), O_RDWR | O_CREAT, 0600), 0); break;
    case 1: put(w, FD, open64(path(w, buf, sizeof buf), O_RDWR | O_CREAT, 0600), 0); break;
    case 2: put(w, FD, openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY), 0); break;
    case 3: put(w, FD, creat(path(w, buf, sizeof buf), 0600), 0); break;
    case 4: put(w, FD, open("/dev/null", RDONLY), 0); break; /* __open_2 */
    case 5: {
        FILE *f = pick(w, 2) ? fopen(path(w, buf, sizeof buf), "a+") : fopen64("/dev/null", "r");
        CHECK(f);
        put(w, STREAM, fileno(f), f);
        break;
    }
    case 6: {
        DIR *d = opendir(dir);
        CHECK(d);
        put(w, DIRP, dirfd(d), d);
        break;
    }
    case 7: {
        fd = open(dir, O_RDONLY | O_DIRECTORY);
        DIR *d = fdopendir(fd);
        CHECK(d);
        put(w, DIRP, fd, d);
        break;
    }
    case 8: {
        FILE *f = tmpfile();
        CHECK(f);
        put(w, STREAM, fileno(f), f);
        break;
    }
    case 9:
        snprintf(buf, sizeof buf, "%s/tmp-XXXXXX", dir);
        fd = pick(w, 2) ? mkstemp(buf) : mkostemp(buf, O_CLOEXEC);
        CHECK(fd >= 0 && unlink(buf) == 0);
        put(w, FD, fd, 0);
        break;
    case 10: put(w, FD, memfd_create("workload", MFD_CLOEXEC), 0); break;
    case 11: put(w, FD, posix_openpt(O_RDWR | O_NOCTTY), 0); break;
    case 12: put(w, FD, socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), 0); break;
    case 13:
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, p) == 0);
        put(w, FD, p[0], 0);
        put(w, FD, p[1], 0);
        break;
    case 14: {
        /* A loopback listener, a client, and the accepted connection. */
        int c;
        int l = loopback_listener(2, &c, NULL);
        int s = pick(w, 2) ? accept(l, NULL, NULL) : accept4(l, NULL, NULL, SOCK_CLOEXEC);
        put(w, FD, l, 0);
        put(w, FD, c, 0);
        put(w, FD, s, 0);
        break;
    }
    case 15: CHECK(pipe(p) == 0); put(w, FD, p[0], 0); put(w, FD, p[1], 0); break;
    case 16: CHECK(pipe2(p, O_CLOEXEC) == 0); put(w, FD, p[0], 0); put(w, FD, p[1], 0); break;
    case 17: put(w, FD, pick(w, 2) ? epoll_create1(EPOLL_CLOEXEC) : epoll_create(4), 0); break;
    case 18: put(w, FD, eventfd(0, EFD_CLOEXEC), 0); break;
    case 19: put(w, FD, timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC), 0); break;
    case 20:
        sigemptyset(&mask);
        sigaddset(&mask, SIGUSR1);
        put(w, FD, signalfd(-1, &mask, SFD_CLOEXEC), 0);
        break;
    case 21: put(w, FD, pick(w, 2) ? inotify_init1(IN_CLOEXEC) : inotify_init(), 0); break;
    case 22: put(w, FD, pidfd_open(getpid(), 0), 0); break;
    case 23:
        if ((i = some_fd(w)) >= 0) put(w, FD, dup(w->s[i].fd), 0);
        break;
    case 24:
    case 25:
        /* dup2/dup3 into this worker's own range, replacing an fd of its own there. */
        if ((i = some_fd(w)) >= 0) {
            int target = RANGE_BASE + w->id * RANGE_SIZE + pick(w, RANGE_SIZE);
            int src = w->s[i].fd;
            if (src == target) break;
            int old = find_fd(w, target);
            fd = pick(w, 2) ? dup2(src, target) : dup3(src, target, O_CLOEXEC);
            CHECK(fd == target);
            if (old >= 0) w->s[old].kind = FREE;
            put(w, FD, fd, 0);
        }
        break;
    case 26:
        if ((i = some_fd(w)) >= 0) {
            int cmd = pick(w, 2) ? F_DUPFD : F_DUPFD_CLOEXEC;
            put(w, FD, pick(w, 2) ? fcntl(w->s[i].fd, cmd, 10) : fcntl64(w->s[i].fd, cmd, 10), 0);
        }
        break;
    case 27: {
        int lo = RANGE_BASE + w->id * RANGE_SIZE, hi = lo + RANGE_SIZE - 1;
        if (pick(w, 3) == 0) {
            CHECK(close_range(lo, hi, CLOSE_RANGE_CLOEXEC) == 0);
        } else {
            CHECK(close_range(lo, hi, 0) == 0);
            for (int k = 0; k < SLOTS; k++)
                if (w->s[k].kind == FD && w->s[k].fd >= lo && w->s[k].fd <= hi) w->s[k].kind = FREE;
        }
        break;
    }
    case 28: {
        /* An fd passed over a socketpair and received with recvmsg or recvmmsg. */
        CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, p) == 0);
        int e = eventfd(0, 0);
        send_fds(p[0], &e, 1);
        CHECK(close(e) == 0);
        fd = recv_one(p[1], pick(w, 2));
        CHECK(close(p[0]) == 0 && close(p[1]) == 0);
        put(w, FD, fd, 0);
        break;
    }
    case 29:
        if (pick(w, 4) == 0) { /* popen forks a process: less often */
            FILE *f = popen("exec cat >/dev/null", "w");
            CHECK(f);
            put(w, POPEN, fileno(f), f);
        }
        break;
    case 30:
        /* fdopen on an fd of our own: the slot becomes a stream. */
        if ((i = some_fd(w)) >= 0 && w->s[i].fd < RANGE_BASE) {
            int flags = fcntl(w->s[i].fd, F_GETFL);
            if ((flags & O_ACCMODE) == O_RDWR) {
                FILE *f = fdopen(w->s[i].fd, "r+");
                CHECK(f);
                w->s[i].kind = STREAM;
                w->s[i].p = f;
            }
        }
        break;
    case 31:
        /* freopen on one of our streams (the number may change). */
        for (i = 0; i < SLOTS; i++) {
            if (w->s[i].kind == STREAM) {
                FILE *f = freopen(pick(w, 2) ? "/dev/null" : path(w, buf, sizeof buf), "r", w->s[i].p);
                CHECK(f);
                w->s[i].fd = fileno(f);
                w->s[i].p = f;
                break;
            }
        }
        break;
    case 32:
        if (single) closefrom(RANGE_BASE); /* other workers' ranges too: only in a fork child */
        else if (pick(w, 8) == 0) fcloseall(); /* glibc: flushes, closes nothing */
        break;
    default:
        if ((i = some_fd(w)) >= 0) {
            /* dup2 onto one of our own open fds: a replacement, not a missed close. */
            int j = some_fd(w);
            if (j >= 0 && j != i && w->s[j].fd != w->s[i].fd) CHECK(dup2(w->s[i].fd, w->s[j].fd) == w->s[j].fd);
        }
        break;
    }
    if (single && RANGE_BASE > 0) {
        /* closefrom above may have taken fds of ours: forget those slots. */
        for (int k = 0; k < SLOTS; k++)
            if (w->s[k].kind == FD && w->s[k].fd >= RANGE_BASE && fcntl(w->s[k].fd, F_GETFD) == -1)
                w->s[k].kind = FREE;
    }
}

static void gated_op(struct worker *w) {
    CHECK(pthread_rwlock_rdlock(&gate) == 0);
    op(w, 0);
    CHECK(pthread_rwlock_unlock(&gate) == 0);
}

/* Forks while every other worker waits outside its calls; the child churns and stops. */
static void gated_fork(struct worker *w) {
    CHECK(pthread_rwlock_wrlock(&gate) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        in_child = 1;
        w->rng ^= 0x9e3779b97f4a7c15ull;
        for (int k = 0; k < CHILD_OPS; k++) op(w, 1);
        printf("CHILD %d\n", getpid());
        checkpoint("child");
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(pthread_rwlock_unlock(&gate) == 0);
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    for (int r = 0; r < rounds; r++) {
        int fork_at = (fork_round(r) && r % WORKERS == w->id) ? pick(w, OPS_PER_ROUND) : -1;
        for (int k = 0; k < OPS_PER_ROUND; k++) {
            if (k == fork_at) gated_fork(w);
            gated_op(w);
            w->ops++;
        }
        pthread_barrier_wait(&barrier); /* parked: the main thread checks */
        pthread_barrier_wait(&barrier); /* released */
    }
    for (int i = 0; i < SLOTS; i++) release(w, i);
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 4);
    uint64_t seed = strtoull(argv[1], NULL, 10);
    rounds = atoi(argv[2]);
    dir = argv[3];
    printf("SEED %llu\n", (unsigned long long)seed);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    CHECK(pthread_rwlock_init(&gate, &ra) == 0);
    CHECK(pthread_barrier_init(&barrier, NULL, WORKERS + 1) == 0);
    /* Files that freopen (and others) can always open. */
    for (int w = 0; w < WORKERS; w++)
        for (int k = 0; k < 8; k++) {
            char b[4096];
            snprintf(b, sizeof b, "%s/w%d-%d", dir, w, k);
            int fd = creat(b, 0600);
            CHECK(fd >= 0 && close(fd) == 0);
        }
    pthread_t t[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        workers[i].id = i;
        workers[i].rng = seed * 2654435761u + (uint64_t)i * 0x632be59bd9b4e019ull + 1;
        CHECK(pthread_create(&t[i], NULL, worker_main, &workers[i]) == 0);
    }
    for (int r = 0; r < rounds; r++) {
        pthread_barrier_wait(&barrier);
        char name[32];
        snprintf(name, sizeof name, "round-%d", r);
        checkpoint(name);
        pthread_barrier_wait(&barrier);
    }
    for (int i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);
    int ops = 0;
    for (int i = 0; i < WORKERS; i++) ops += workers[i].ops;
    printf("OPS %d\n", ops);
    checkpoint("done");
    return 0;
}
