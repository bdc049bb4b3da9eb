/* A parent that lowers its own RLIMIT_NOFILE (soft 100, hard 200), then forks a child that
   inherits it: `fdguard limits CHILD` must name the parent as where the limit was set.
     lowered_limit    prints "child PID", then both wait until stdin closes */
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void wait_for_eof(void) {
    char c;
    while (read(0, &c, 1) > 0) {
    }
}

int main(void) {
    struct rlimit r = {.rlim_cur = 100, .rlim_max = 200};
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) {
        perror("setrlimit");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        wait_for_eof();
        _exit(0);
    }
    printf("child %d\n", (int)child);
    fflush(stdout);
    wait_for_eof();
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return 0;
}
