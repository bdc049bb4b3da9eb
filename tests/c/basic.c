/* A few fds of different kinds, then released: the smallest end-to-end check. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include "checkpoint.h"

int main(void) {
    FILE *f = fopen("/etc/hosts", "r");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int p[2];
    CHECK(f && s >= 0 && pipe(p) == 0);
    printf("FDS %d %d %d %d\n", fileno(f), s, p[0], p[1]);
    checkpoint("open");
    fclose(f);
    close(s);
    close(p[0]);
    close(p[1]);
    checkpoint("closed");
    return 0;
}
