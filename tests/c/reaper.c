/* A parent that watches its children: counts SIGCHLD and, after fdguard has written reports,
   asks the kernel whether it has any child at all (live or zombie, of any kind: __WALL).
   fdguard's report processes must be neither. With "subreaper", the program first makes
   itself a subreaper (as init-like programs do): orphans of its children then come to it, and
   only ordinary children may be visible to it (no __WALL), still without a SIGCHLD. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "checkpoint.h"

static volatile sig_atomic_t sigchld;

static void on_sigchld(int sig) {
    (void)sig;
    sigchld++;
}

int main(int argc, char **argv) {
    int subreaper = argc > 1 && strcmp(argv[1], "subreaper") == 0;
    if (subreaper) CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    struct sigaction sa = {0};
    sa.sa_handler = on_sigchld;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGCHLD, &sa, NULL) == 0);
    CHECK(open("/dev/null", O_RDONLY) >= 0);
    checkpoint("reporting");
    /* The reports were written; give a straggler time to show up as a child or a signal. */
    usleep(200 * 1000);
    int status;
    pid_t r = waitpid(-1, &status, WNOHANG | (subreaper ? 0 : __WALL));
    printf("SIGCHLD %d\n", (int)sigchld);
    printf("WAITPID %d %s\n", (int)r, r < 0 && errno == ECHILD ? "ECHILD" : "child");
    return 0;
}
