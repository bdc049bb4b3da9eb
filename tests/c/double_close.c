/* The double-close bug: first_close() releases an fd, cleanup_twice() closes it again. */
#include <errno.h>
#include <fcntl.h>
#include "checkpoint.h"

__attribute__((noinline)) static int first_close(int fd) {
    int r = close(fd);
    return r == 0 ? 0 : -errno;
}

__attribute__((noinline)) static int cleanup_twice(int fd) {
    int r = close(fd);
    return r == 0 ? 0 : -errno;
}

int main(void) {
    int fd = open("/dev/null", O_RDONLY);
    CHECK(fd >= 0);
    CHECK(first_close(fd) == 0);
    CHECK(cleanup_twice(fd) == -EBADF);
    printf("fd %d\n", fd);
    checkpoint("done");
    return 0;
}
