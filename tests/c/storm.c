/* Reports taken while fds change under them.
     storm DIR SECONDS        eight threads create fds of every kind as fast as they can
                              (open, fopen, socket, connect+accept, pipe2, eventfd, socketpair,
                              epoll_create1, timerfd_create, dup, F_DUPFD) and close them, some
                              on another thread than the one that made them; each thread opens
                              files of its own names (S<thread>_<n>), so that a row carrying
                              another fd's path would show. Prints READY, runs SECONDS, prints
                              "done OPS" and exits 0.
     storm DIR SECONDS fork   the same, and the main thread forks and reaps a child that exits
                              at once, over and over: prints "forks N failed M".
     storm DIR 0 reuse        socket(), then a raw close and a raw openat of /etc/group, which
                              reuses its number behind fdguard's back: prints "FD n", stops at
                              checkpoint "reused". */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "testlib.h"

enum { THREADS = 8, HELD = 16, NAMES = 8 };

static atomic_int stop;
static atomic_long ops;
static atomic_int inbox[THREADS];
static struct sockaddr_in server;
static int listener;

/* An fd a thread holds: its stream when fopen made it. */
struct held {
    int fd;
    FILE *f;
};

static void release(struct held *h) {
    if (h->f) fclose(h->f);
    else if (h->fd >= 0) close(h->fd);
    h->fd = -1;
    h->f = NULL;
}

static void *accepter(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        int c = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (c >= 0) close(c);
        else usleep(100);
    }
    return NULL;
}

static void *churn(void *arg) {
    int me = (int)(long)arg;
    struct held held[HELD];
    for (int i = 0; i < HELD; i++) held[i] = (struct held){-1, NULL};
    unsigned seed = 12345u + (unsigned)me;
    /* The path on this thread's own stack (testlib's P() rotates static buffers that other
       threads would overwrite while this one opens). */
    char name[4096];
    for (int next = 0; !atomic_load(&stop); next = (next + 1) % HELD) {
        int handed = atomic_exchange(&inbox[me], -1);
        if (handed >= 0) close(handed);
        release(&held[next]);
        struct held h = {-1, NULL};
        int p[2];
        switch (rand_r(&seed) % 12) {
        case 0:
            snprintf(name, sizeof name, "%s/S%d_%u", dir, me, rand_r(&seed) % NAMES);
            h.fd = open(name, O_RDONLY);
            break;
        case 1:
            snprintf(name, sizeof name, "%s/S%d_%u", dir, me, rand_r(&seed) % NAMES);
            h.f = fopen(name, "r");
            h.fd = h.f ? fileno(h.f) : -1;
            break;
        case 2: h.fd = socket(rand_r(&seed) % 2 ? AF_INET : AF_UNIX, SOCK_STREAM, 0); break;
        case 3:
            h.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (h.fd >= 0) connect(h.fd, (struct sockaddr *)&server, sizeof server);
            break;
        case 4:
            if (pipe2(p, 0) == 0) {
                close(p[1]);
                h.fd = p[0];
            }
            break;
        case 5: h.fd = eventfd(0, 0); break;
        case 6:
            if (socketpair(AF_UNIX, SOCK_STREAM, 0, p) == 0) {
                close(p[0]);
                h.fd = p[1];
            }
            break;
        case 7: h.fd = epoll_create1(0); break;
        case 8: h.fd = timerfd_create(CLOCK_MONOTONIC, 0); break;
        case 9: {
            struct held *src = &held[rand_r(&seed) % HELD];
            if (src->fd >= 0) h.fd = dup(src->fd);
            break;
        }
        case 10: {
            struct held *src = &held[rand_r(&seed) % HELD];
            if (src->fd >= 0) h.fd = fcntl(src->fd, F_DUPFD_CLOEXEC, 0);
            break;
        }
        default: {
            /* Handed to the next thread, which closes it. */
            int fd = eventfd(0, 0);
            int empty = -1;
            if (fd >= 0 && !atomic_compare_exchange_strong(&inbox[(me + 1) % THREADS], &empty, fd))
                close(fd);
            break;
        }
        }
        held[next] = h;
        atomic_fetch_add(&ops, 1);
    }
    for (int i = 0; i < HELD; i++) release(&held[i]);
    return NULL;
}

static void reuse(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    CHECK(syscall(SYS_close, s) == 0);
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/etc/group", O_RDONLY);
    CHECK(fd == s);
    printf("FD %d\n", fd);
    checkpoint("reused");
}

int main(int argc, char **argv) {
    CHECK(argc >= 3);
    dir = argv[1];
    int seconds = atoi(argv[2]);
    int forking = argc > 3 && strcmp(argv[3], "fork") == 0;
    if (argc > 3 && strcmp(argv[3], "reuse") == 0) {
        reuse();
        return 0;
    }
    char name[64];
    for (int t = 0; t < THREADS; t++)
        for (int n = 0; n < NAMES; n++) {
            snprintf(name, sizeof name, "S%d_%d", t, n);
            touch(name);
        }
    int client;
    listener = loopback_listener(1024, &client, NULL);
    close(client);
    /* Non-blocking: once the churners stop connecting, the accepter must see `stop`. */
    CHECK(fcntl(listener, F_SETFL, O_NONBLOCK) == 0);
    socklen_t len = sizeof server;
    CHECK(getsockname(listener, (struct sockaddr *)&server, &len) == 0);
    for (int t = 0; t < THREADS; t++) atomic_store(&inbox[t], -1);
    pthread_t threads[THREADS], acc;
    CHECK(pthread_create(&acc, NULL, accepter, NULL) == 0);
    for (long t = 0; t < THREADS; t++) CHECK(pthread_create(&threads[t], NULL, churn, (void *)t) == 0);
    printf("READY\n");
    fflush(stdout);
    long forks = 0, failed = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        if (forking) {
            pid_t c = fork();
            if (c == 0) _exit(0);
            if (c < 0) failed++;
            else {
                forks++;
                waitpid(c, NULL, 0);
            }
            usleep(2000);
        } else {
            usleep(20000);
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - start.tv_sec < seconds);
    atomic_store(&stop, 1);
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    pthread_join(acc, NULL);
    for (int t = 0; t < THREADS; t++) {
        int fd = atomic_exchange(&inbox[t], -1);
        if (fd >= 0) close(fd);
    }
    if (forking) printf("forks %ld failed %ld\n", forks, failed);
    printf("done %ld\n", atomic_load(&ops));
    return 0;
}
