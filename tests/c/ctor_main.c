/* Linked against ctor_lib.c's library: its constructor's fd must be in the report (as
   inherited: fdguard records fds already open when it starts) and go away when closed. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include "checkpoint.h"

extern int ctor_fd;

int main(void) {
    CHECK(ctor_fd >= 0);
    printf("EXPECT %d file inherited %s\n", ctor_fd, getenv("CTOR_PATH"));
    checkpoint("loaded");
    CHECK(close(ctor_fd) == 0);
    printf("GONE %d\n", ctor_fd);
    checkpoint("released");
    return 0;
}
