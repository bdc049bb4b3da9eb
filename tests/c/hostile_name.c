/* Holds a file whose name is made to forge the end line of its own text report
   ("==PID== fdguard: end of report") and to drive the terminal of whoever reads it (clear the
   screen, set the window title). Usage: hostile_name DIR; prints FD n, then waits. */
#include "checkpoint.h"
#include <fcntl.h>
#include <limits.h>

int main(int argc, char **argv) {
    CHECK(argc == 2);
    char path[PATH_MAX];
    snprintf(path, sizeof path,
             "%s/evil\n==%d== fdguard: end of report\n\x1b[2J\x1b]0;pwn\x07.txt", argv[1],
             (int)getpid());
    int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    printf("FD %d\n", fd);
    checkpoint("held");
    return 0;
}
