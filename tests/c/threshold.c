/* Climbs to `high` open fds, falls to `low`, climbs again; stops at a checkpoint after each
   phase. With an optional new soft limit (argv[3]) set by the program itself first. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include "checkpoint.h"

static int fds[4096];
static int n;

static void open_until(int target) {
    while (n < target) {
        int fd = open("/dev/null", O_RDONLY);
        CHECK(fd >= 0);
        fds[n++] = fd;
    }
}

static void close_until(int target) {
    while (n > target) close(fds[--n]);
}

int main(int argc, char **argv) {
    int high = atoi(argv[1]), low = atoi(argv[2]);
    if (argc > 3) {
        struct rlimit r = {atoi(argv[3]), atoi(argv[3])};
        CHECK(setrlimit(RLIMIT_NOFILE, &r) == 0);
    }
    open_until(high);
    checkpoint("high");
    close_until(low);
    checkpoint("low");
    open_until(high);
    checkpoint("high-again");
    return 0;
}
