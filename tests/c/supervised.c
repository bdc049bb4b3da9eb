/* A program for supervisord to run (tests/suite/cli_limits.rs): it ends with supervisord,
   which puts its programs in process groups of their own that the test's kill of
   supervisord's group does not reach: by PR_SET_PDEATHSIG when supervisord dies, or when its
   stdin (supervisord's pipe) closes, and after 60 s at most.
     supervised    prints nothing, waits */
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(void) {
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) {
        return 1;
    }
    alarm(60);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}
