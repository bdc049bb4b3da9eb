/* Threads that write lines of their own to stderr while fdguard writes its reports there, as
   a server logs while someone asks it for reports. Each line is "chatter T N " and 100 times
   the letter of thread T ('a' + T), written with one write(2); the fds held by three call
   sites make reports longer than a pipe keeps whole (PIPE_BUF).
     chatter [ANY...]   the arguments are ignored (a long one makes a long command line)
   Checkpoint "chatting" with the threads writing; going on stops them, and it exits 0. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "checkpoint.h"

enum { THREADS = 3, MAX_LINES = 200000, HELD = 40, FILLER = 100 };

static atomic_int stop;

static void *chatter(void *arg) {
    long t = (long)arg;
    char line[160];
    for (long n = 0; n < MAX_LINES && !atomic_load(&stop); n++) {
        int len = snprintf(line, sizeof line, "chatter %ld %ld ", t, n);
        memset(line + len, 'a' + (int)t, FILLER);
        len += FILLER;
        line[len++] = '\n';
        CHECK(write(2, line, len) == len);
        usleep(200);
    }
    return NULL;
}

/* Three creation stacks of HELD fds each. */
__attribute__((noinline)) static void hold_config(void) {
    for (int i = 0; i < HELD; i++) CHECK(open("/dev/null", O_RDONLY) >= 0);
}
__attribute__((noinline)) static void hold_cache(void) {
    for (int i = 0; i < HELD; i++) CHECK(open("/etc/hosts", O_RDONLY) >= 0);
}
__attribute__((noinline)) static void hold_logs(void) {
    for (int i = 0; i < HELD; i++) CHECK(open("/dev/zero", O_RDONLY) >= 0);
}

int main(void) {
    hold_config();
    hold_cache();
    hold_logs();
    pthread_t threads[THREADS];
    for (long t = 0; t < THREADS; t++) CHECK(pthread_create(&threads[t], NULL, chatter, (void *)t) == 0);
    checkpoint("chatting");
    atomic_store(&stop, 1);
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    return 0;
}
