/* Opens /dev/null until open() fails with EMFILE, then keeps hitting EMFILE `retries` times
   (the accept-loop pattern), and stops at a checkpoint with every fd still open; then hits
   EMFILE `retries` times more and stops again. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include "checkpoint.h"

__attribute__((noinline)) static int open_one(void) {
    int fd = open("/dev/null", O_RDONLY);
    return fd < 0 ? -errno : fd;
}

int main(int argc, char **argv) {
    int retries = argc > 1 ? atoi(argv[1]) : 100;
    int opened = 0, r;
    while ((r = open_one()) >= 0) opened++;
    CHECK(r == -EMFILE);
    for (int i = 0; i < retries; i++) CHECK(open_one() == -EMFILE);
    printf("opened %d\n", opened);
    checkpoint("exhausted");
    for (int i = 0; i < retries; i++) CHECK(open_one() == -EMFILE);
    checkpoint("again");
    return 0;
}
