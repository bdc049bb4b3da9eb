/* A chain of 30 non-inlined calls, built without frame pointers; the innermost one opens a
   file and records glibc's own backtrace() of the same spot for comparison. Also opens fds
   from 4 threads (printing their tids) and from a signal handler. */
#define _GNU_SOURCE
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include "checkpoint.h"

static void *trace[64];
static int traced;
static volatile int sink;

__attribute__((noinline)) static int leaf(void) {
    int fd = open("/dev/null", O_RDONLY);
    traced = backtrace(trace, 64);
    sink += fd;
    return fd;
}

#define LEVEL(n, next)                                        \
    __attribute__((noinline)) static int level##n(void) {     \
        int fd = next();                                      \
        sink++;                                               \
        return fd;                                            \
    }
LEVEL(1, leaf) LEVEL(2, level1) LEVEL(3, level2) LEVEL(4, level3) LEVEL(5, level4)
LEVEL(6, level5) LEVEL(7, level6) LEVEL(8, level7) LEVEL(9, level8) LEVEL(10, level9)
LEVEL(11, level10) LEVEL(12, level11) LEVEL(13, level12) LEVEL(14, level13) LEVEL(15, level14)
LEVEL(16, level15) LEVEL(17, level16) LEVEL(18, level17) LEVEL(19, level18) LEVEL(20, level19)
LEVEL(21, level20) LEVEL(22, level21) LEVEL(23, level22) LEVEL(24, level23) LEVEL(25, level24)
LEVEL(26, level25) LEVEL(27, level26) LEVEL(28, level27) LEVEL(29, level28)

static void *worker(void *arg) {
    (void)arg;
    int fd = open("/dev/zero", O_RDONLY);
    printf("THREAD %d %ld\n", fd, (long)syscall(SYS_gettid));
    return NULL;
}

static volatile sig_atomic_t handler_fd = -1;

static void on_alarm(int sig) {
    (void)sig;
    handler_fd = open("/dev/urandom", O_RDONLY);
}

int main(void) {
    int fd = level29();
    printf("DEEP %d", fd);
    for (int i = 0; i < traced; i++) printf(" %p", trace[i]);
    printf("\n");
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    signal(SIGALRM, on_alarm);
    raise(SIGALRM);
    printf("HANDLER %d\n", (int)handler_fd);
    checkpoint("done");
    return 0;
}
