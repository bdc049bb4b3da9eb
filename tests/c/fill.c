/* A process with exactly N fds open (whatever it inherited, a unix socketpair, and /dev/null
   for the rest), for `fdguard top` and `fdguard metrics` to rank against its limit.
     fill N    checkpoint: "full" */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include "checkpoint.h"

/* Open fds, as the kernel lists them (not counting the directory's own). */
static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
    CHECK(closedir(d) == 0);
    return n - 1;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    int want = atoi(argv[1]);
    int pair[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    for (int n = open_fds(); n < want; n++) CHECK(open("/dev/null", O_RDONLY) >= 0);
    CHECK(open_fds() == want);
    checkpoint("full");
    return 0;
}
