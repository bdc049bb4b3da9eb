/* Issue 24's deadlock: a SIGUSR1 handler that sleeps 200 ms, interrupting a main thread that
   loops on malloc/free, so that the thread is often in nanosleep *inside a handler that
   interrupted malloc* (holding the arena's lock). A thread that fdguard attach made call
   dlopen there would wait for that lock forever. With "reader", a second thread waits in read
   on a pipe, every signal blocked: a thread that is safe to call in. A SIGSEGV handler is
   installed and never called.
     handler_sleeps SECONDS [reader]
   Prints "ready", then, after SECONDS of the loop, "done N" (N handlers run) and exits 0. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t handled;

static void on_usr1(int sig) {
    (void)sig;
    struct timespec t = {0, 200 * 1000 * 1000};
    nanosleep(&t, NULL);
    handled++;
}

static void on_segv(int sig) {
    (void)sig;
    _exit(3);
}

/* Blocks every signal, as worker threads often do: SIGSEGV too. */
static void *reader(void *arg) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    int fd = *(int *)arg;
    char c;
    while (read(fd, &c, 1) > 0) {
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: handler_sleeps SECONDS [reader]\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    /* A crash handler, never called: it must still be there after every attach. */
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    int p[2];
    pthread_t t;
    if (pipe(p) != 0) return 1;
    if (argc > 2 && strcmp(argv[2], "reader") == 0 && pthread_create(&t, NULL, reader, &p[0]) != 0)
        return 1;
    printf("ready\n");
    fflush(stdout);
    time_t end = time(NULL) + atoi(argv[1]);
    volatile char *keep;
    while (time(NULL) < end) {
        for (int i = 0; i < 1000; i++) {
            keep = malloc(4096 + i); /* above the tcache: each call takes the arena lock */
            keep[0] = 1;
            free((void *)keep);
        }
    }
    printf("done %d\n", (int)handled);
    return 0;
}
