/* Test programs stop at checkpoints so the harness can compare fdguard's report with the
   kernel's /proc/PID/fd while nothing changes. */
#ifndef FDGUARD_CHECKPOINT_H
#define FDGUARD_CHECKPOINT_H
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The fd checkpoints read their "go on" line from (a program that replaces fd 0 sets it). */
static int checkpoint_fd = 0;

static void checkpoint(const char *name) {
    char line[64];
    printf("CHECKPOINT %s\n", name);
    fflush(stdout);
    /* read(2), not stdio: keeps fd 0 free of buffering surprises across fork. */
    size_t n = 0;
    while (n < sizeof line - 1 && read(checkpoint_fd, line + n, 1) == 1 && line[n] != '\n') n++;
}

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); _exit(99); } } while (0)
#endif
