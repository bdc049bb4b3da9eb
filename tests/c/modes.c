/* The optional mode argument of open & co reaches the kernel intact: `modes DIR UMASK` sets the
   umask (octal), creates one file per call with mode 0640, and prints each file's mode.
   O_TMPFILE (with linkat to give the file a name) prints "SKIP" if the filesystem lacks it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include "testlib.h"


static void show(const char *what, const char *name, int fd) {
    struct stat st;
    CHECK(fd >= 0);
    CHECK(fstat(fd, &st) == 0);
    struct stat by_path;
    CHECK(stat(P(name), &by_path) == 0 && by_path.st_ino == st.st_ino);
    printf("%s %04o\n", what, (unsigned)(st.st_mode & 07777));
    CHECK(close(fd) == 0);
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    dir = argv[1];
    umask((mode_t)strtol(argv[2], NULL, 8));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    CHECK(dfd >= 0);

    show("open", "open", open(P("open"), O_CREAT | O_WRONLY | O_EXCL, 0640));
    show("open64", "open64", open64(P("open64"), O_CREAT | O_WRONLY | O_EXCL, 0640));
    show("openat", "openat", openat(dfd, "openat", O_CREAT | O_RDWR | O_EXCL, 0640));
    show("openat64", "openat64", openat64(dfd, "openat64", O_CREAT | O_RDWR | O_EXCL, 0640));
    show("creat", "creat", creat(P("creat"), 0640));
    show("creat64", "creat64", creat64(P("creat64"), 0640));
    /* Flags the compiler cannot see, as in a program that computes them. */
    volatile int flags = O_CREAT | O_WRONLY | O_EXCL;
    show("open computed flags", "open-computed", open(P("open-computed"), flags, 0640));
    /* A mode with the setgid and sticky bits and every permission: passed as given. */
    int fd = open(P("open-7777"), O_CREAT | O_WRONLY | O_EXCL, 07777);
    show("open 07777", "open-7777", fd);

    int t = open(dir, O_TMPFILE | O_WRONLY, 0640);
    if (t < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == ENOENT)) {
        printf("SKIP O_TMPFILE: %s\n", strerror(errno));
    } else {
        CHECK(t >= 0);
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", t);
        CHECK(linkat(AT_FDCWD, proc, AT_FDCWD, P("tmpfile"), AT_SYMLINK_FOLLOW) == 0);
        show("O_TMPFILE", "tmpfile", t);
    }
    close(dfd);
    return 0;
}
