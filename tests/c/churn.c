/* Four threads creating and closing fds as fast as they can (open, pipe, socket, fopen, dup),
   checking every result, while fdguard is attached to the process from outside. The main
   thread stops them at "quiet" checkpoints, where nothing changes, so that the harness can
   compare fdguard's report with /proc/PID/fd.
     churn DIR     checkpoints: "churning" (threads running), then "quiet" twice
   Prints "ok OPS" and exits 0 if every operation gave the expected result. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include "testlib.h"

enum { THREADS = 4, MAX_ROUNDS = 2000000 };

static atomic_int pause_wanted, stop_wanted, paused;
static atomic_long ops, failures;
static const char *data;

static void fail(const char *what) {
    fprintf(stderr, "churn: %s failed (errno %d)\n", what, errno);
    atomic_fetch_add(&failures, 1);
}

/* One round: every kind of creation and release, each result checked. */
static void round_of_calls(void) {
    char b[8];
    int fd = open(data, O_RDONLY);
    if (fd < 0 || read(fd, b, 4) != 4 || memcmp(b, "data", 4) != 0) fail("open/read");
    int copy = dup(fd);
    if (copy < 0 || close(copy) != 0) fail("dup/close");
    if (fd >= 0 && close(fd) != 0) fail("close");
    int p[2];
    if (pipe(p) != 0 || write(p[1], "x", 1) != 1 || read(p[0], b, 1) != 1 || b[0] != 'x') fail("pipe");
    else if (close(p[0]) != 0 || close(p[1]) != 0) fail("pipe close");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || close(s) != 0) fail("socket");
    FILE *f = fopen(data, "r");
    if (!f || fgetc(f) != 'd' || fclose(f) != 0) fail("fopen");
    if (close(-1) != -1 || errno != EBADF) fail("close(-1)");
    atomic_fetch_add(&ops, 7);
}

static void *churn(void *arg) {
    (void)arg;
    for (long i = 0; i < MAX_ROUNDS && !atomic_load(&stop_wanted); i++) {
        if (atomic_load(&pause_wanted)) {
            atomic_fetch_add(&paused, 1);
            while (atomic_load(&pause_wanted) && !atomic_load(&stop_wanted)) usleep(1000);
            atomic_fetch_sub(&paused, 1);
        }
        round_of_calls();
    }
    return NULL;
}

static void quiet(void) {
    atomic_store(&pause_wanted, 1);
    while (atomic_load(&paused) < THREADS) usleep(1000);
    checkpoint("quiet");
    atomic_store(&pause_wanted, 0);
    usleep(200 * 1000); /* churn on, attached */
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    dir = argv[1];
    data = touch("data");
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) CHECK(pthread_create(&t[i], NULL, churn, NULL) == 0);
    usleep(100 * 1000);
    checkpoint("churning");
    usleep(200 * 1000);
    quiet();
    quiet();
    atomic_store(&stop_wanted, 1);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(t[i], NULL) == 0);
    if (atomic_load(&failures) != 0) return 1;
    printf("ok %ld\n", atomic_load(&ops));
    return 0;
}
