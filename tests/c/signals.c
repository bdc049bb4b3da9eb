/* `signals closefrom FILE`: a daemon-like loop of closefrom(3) / close_range(3, ~0U, 0) and
   a new fd, while the harness asks for reports; fdguard's own fds (the report file, the
   /proc/self/fd listing) are open in the middle of that. The program counts its fds closed or
   written to by someone else; a line on stdin stops it.
   `signals storm DIR`: four threads churn fds (bounded) while the harness sends SIGUSR2 after
   SIGUSR2; a line on stdin stops them, and the program stops at a last checkpoint with only
   its own stable fds open.
   `signals sigwait`: SIGUSR1 is blocked in every thread and main waits for it with sigwait. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include "checkpoint.h"

#define MAX_ITERATIONS 20000000L

static atomic_int stop;
static const char *dir;
static long done[4];

static void *churn(void *arg) {
    long id = (long)arg;
    char path[4096];
    snprintf(path, sizeof path, "%s/churn-%ld", dir, id);
    int keep = open(path, O_RDWR | O_CREAT, 0600);
    CHECK(keep >= 0);
    long i;
    for (i = 0; i < MAX_ITERATIONS && !atomic_load(&stop); i++) {
        int p[2], fd;
        switch (i % 5) {
        case 0: fd = open(path, O_RDONLY); CHECK(fd >= 0); CHECK(close(fd) == 0); break;
        case 1: CHECK(pipe(p) == 0); CHECK(close(p[0]) == 0 && close(p[1]) == 0); break;
        case 2: fd = socket(AF_INET, SOCK_DGRAM, 0); CHECK(fd >= 0); CHECK(close(fd) == 0); break;
        case 3: fd = dup(keep); CHECK(fd >= 0); CHECK(close(fd) == 0); break;
        case 4: {
            FILE *f = fopen(path, "r");
            CHECK(f);
            CHECK(fclose(f) == 0);
            break;
        }
        }
    }
    done[id] = i;
    CHECK(close(keep) == 0);
    return NULL;
}

static int storm(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, churn, (void *)i) == 0);
    printf("CHURNING\n");
    checkpoint("churning"); /* the harness sends its signals here, then lets us go on */
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) CHECK(pthread_join(t[i], NULL) == 0);
    for (int i = 0; i < 4; i++) CHECK(done[i] > 0 && done[i] < MAX_ITERATIONS);
    printf("ITERATIONS %ld\n", done[0] + done[1] + done[2] + done[3]);
    checkpoint("stopped");
    return 0;
}

static void *idle(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000 && !atomic_load(&stop); i++) {
        int fd = open("/dev/null", O_RDONLY);
        CHECK(fd >= 0 && close(fd) == 0);
        usleep(1000);
    }
    return NULL;
}

static int wait_for_usr1(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    /* Blocked before any thread of ours exists: they all inherit the mask. */
    CHECK(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, idle, NULL) == 0);
    /* The harness sends SIGUSR1 now: it must stay pending (no thread takes it) until sigwait. */
    checkpoint("blocked");
    int sig = 0;
    CHECK(sigwait(&set, &sig) == 0);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) CHECK(pthread_join(t[i], NULL) == 0);
    printf("GOT %s\n", sig == SIGUSR1 ? "SIGUSR1" : "something else");
    return 0;
}

static void *stop_on_stdin(void *arg) {
    (void)arg;
    char c;
    while (read(0, &c, 1) == 1 && c != '\n') {
    }
    atomic_store(&stop, 1);
    return NULL;
}

static int closefrom_loop(const char *file) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, stop_on_stdin, NULL) == 0);
    printf("LOOPING\n");
    fflush(stdout);
    long i, closed = 0, written = 0;
    for (i = 0; i < MAX_ITERATIONS && !atomic_load(&stop); i++) {
        if (i % 2) closefrom(3);
        else CHECK(close_range(3, ~0U, 0) == 0);
        int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        CHECK(fd >= 0);
        for (volatile int k = 0; k < 1000; k++) {
        }
        struct stat st;
        if (fcntl(fd, F_GETFD) == -1) closed++;
        else if (fstat(fd, &st) == 0 && st.st_size != 0) written++;
    }
    CHECK(pthread_join(t, NULL) == 0);
    printf("ITERATIONS %ld\nCLOSED BY SOMEONE ELSE %ld\nWRITTEN BY SOMEONE ELSE %ld\n", i, closed,
           written);
    return 0;
}

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    if (!strcmp(argv[1], "storm")) {
        CHECK(argc == 3);
        dir = argv[2];
        return storm();
    }
    if (!strcmp(argv[1], "sigwait")) return wait_for_usr1();
    if (!strcmp(argv[1], "closefrom")) return closefrom_loop(argv[2]);
    return 2;
}
