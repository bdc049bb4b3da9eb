/* A program under a seccomp filter that refuses to make processes (clone, clone3, fork,
   vfork fail with EPERM), as some sandboxes do: fdguard cannot copy the process to write a
   report. It must say so once, lose nothing of the program's, and still write the exit report
   (on stderr, without debug info). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "checkpoint.h"

#define REFUSE(nr) \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

int main(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        REFUSE(__NR_clone),
        REFUSE(__NR_clone3),
        REFUSE(__NR_fork),
        REFUSE(__NR_vfork),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
    CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0);
    int fd = open("/dev/null", O_RDONLY);
    CHECK(fd >= 0);
    checkpoint("sandboxed");
    /* The signals were answered (or not) by now; the fd is still the program's. */
    CHECK(fcntl(fd, F_GETFD) >= 0);
    printf("LEAKED %d\n", fd);
    return 0;
}
