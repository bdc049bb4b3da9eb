/* Process-level scenarios: `process SCENARIO DIR`. Same EXPECT/GONE protocol as calls.c.

   vfork, vfork_exit  a vfork child closes and dup2s fds, then execs /bin/true (or _exits): the
                      parent's fds and report are unchanged
   posix_spawn        a child spawned with file actions (open, dup2, close) feeding a pipe
   exec               exec of this program: the new image has its own fdguard, and its report
                      lists the fds that survived exec as inherited
   daemon_loop        close(fd) for every fd from 3 to the limit, then new fds
   daemon_closefrom   closefrom(3), then new fds
   daemon_close_range close_range(3, ~0U, 0), then new fds
   limit              RLIMIT_NOFILE 256: dup2 onto 255, then open until EMFILE */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <linux/close_range.h>
#include "testlib.h"

extern char **environ;
static const char *self;

/* A vfork child that rearranges its fds: none of it may reach the parent's table (the child
   runs on the parent's memory). */
static void vfork_common(int do_exec) {
    const char *a = touch_with("vfork-a.txt", "a");
    int fa = open(a, O_RDONLY);
    int p[2];
    CHECK(pipe(p) == 0);
    expect(fa, "file", "open", a);
    expect(p[0], "pipe", "pipe", "read end");
    expect(p[1], "pipe", "pipe", "write end");
    checkpoint("before");
    pid_t pid = vfork();
    if (pid == 0) {
        close(fa);
        dup2(p[1], p[0]);
        dup2(p[1], 1);
        int x = open("/dev/null", O_RDONLY);
        dup2(x, 40);
        close(p[1]);
        if (do_exec) execl("/bin/true", "true", (char *)NULL);
        _exit(0);
    }
    CHECK(pid > 0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    expect(fa, "file", "open", a);
    expect(p[0], "pipe", "pipe", "read end");
    expect(p[1], "pipe", "pipe", "write end");
    gone(40);
    /* The parent goes on tracking after the vfork. */
    int after = open(a, O_RDONLY);
    expect(after, "file", "open", a);
    checkpoint("after-vfork");
    close(after);
    close(fa);
    close(p[0]);
    close(p[1]);
    gone(after);
    gone(fa);
}
static void s_vfork(void) { vfork_common(1); }
static void s_vfork_exit(void) { vfork_common(0); }

static void s_posix_spawn(void) {
    const char *in = touch_with("spawn-in.txt", "spawned child output\n");
    const char *other = touch_with("spawn-other.txt", "x");
    int keep = open(other, O_RDONLY);
    int p[2];
    CHECK(pipe(p) == 0);
    posix_spawn_file_actions_t fa;
    CHECK(posix_spawn_file_actions_init(&fa) == 0);
    CHECK(posix_spawn_file_actions_addopen(&fa, 0, in, O_RDONLY, 0) == 0);
    CHECK(posix_spawn_file_actions_adddup2(&fa, p[1], 1) == 0);
    CHECK(posix_spawn_file_actions_addclose(&fa, p[0]) == 0);
    CHECK(posix_spawn_file_actions_addclose(&fa, p[1]) == 0);
    CHECK(posix_spawn_file_actions_addclose(&fa, keep) == 0);
    CHECK(posix_spawn_file_actions_adddup2(&fa, 2, 50) == 0);
    pid_t pid;
    char *argv[] = {"cat", NULL};
    CHECK(posix_spawn(&pid, "/bin/cat", &fa, NULL, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    CHECK(close(p[1]) == 0);
    char buf[256];
    ssize_t n, total = 0;
    while ((n = read(p[0], buf + total, sizeof buf - 1 - total)) > 0) total += n;
    buf[total] = 0;
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strcmp(buf, "spawned child output\n") == 0);
    expect(keep, "file", "open", other);
    expect(p[0], "pipe", "pipe", "read end");
    gone(p[1]);
    gone(50);
    checkpoint("spawned");
    close(keep);
    close(p[0]);
    gone(keep);
}

/* Exec of this program: fds without close-on-exec survive and are inherited by the new image. */
static void s_exec(void) {
    const char *kept = touch_with("exec-kept.txt", "k");
    const char *cloexec = touch_with("exec-cloexec.txt", "c");
    int k = open(kept, O_RDONLY);
    int c = open(cloexec, O_RDONLY | O_CLOEXEC);
    CHECK(dup2(k, 60) == 60);
    expect(k, "file", "open", kept);
    expect(c, "file", "open", cloexec);
    checkpoint("before-exec");
    char fds[32];
    snprintf(fds, sizeof fds, "%d,%d", k, c);
    fflush(stdout);
    execl(self, self, "exec-image", dir, fds, (char *)NULL);
    CHECK(!"exec failed");
}

static void exec_image(const char *fds) {
    int k, c;
    CHECK(sscanf(fds, "%d,%d", &k, &c) == 2);
    const char *kept = P("exec-kept.txt");
    expect(k, "file", "inherited", kept);
    expect(60, "file", "inherited", kept);
    /* The close-on-exec fd is gone (its number is reused just below). */
    CHECK(fcntl(c, F_GETFD) == -1 && errno == EBADF);
    /* The new image tracks its own calls. */
    int n = open(kept, O_RDONLY);
    expect(n, "file", "open", kept);
    checkpoint("new-image");
    close(n);
    close(k);
    close(60);
    gone(n);
    gone(k);
    gone(60);
}

/* fds of several kinds, as a daemon would hold before detaching. */
static void some_fds(int *fds) {
    const char *f = touch_with("daemon.txt", "d");
    fds[0] = open(f, O_RDONLY);
    fds[1] = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(pipe(fds + 2) == 0);
    fds[4] = dup2(fds[0], 700);
    expect(fds[0], "file", "open", f);
    expect(fds[1], "socket", "socket", "tcp");
    expect(fds[2], "pipe", "pipe", "read end");
    expect(fds[3], "pipe", "pipe", "write end");
    expect(700, "file", "dup2", f);
}

static void after_daemon_close(const int *fds) {
    for (int i = 0; i < 5; i++) gone(fds[i]);
    checkpoint("closed-all");
    const char *f = P("daemon.txt");
    int a = open(f, O_RDONLY);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int d = dup2(a, 701);
    expect(a, "file", "open", f);
    expect(s, "socket", "socket", "udp");
    expect(d, "file", "dup2", f);
}

static void s_daemon_loop(void) {
    int fds[5];
    some_fds(fds);
    checkpoint("before");
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    for (int fd = 3; fd < (int)rl.rlim_cur; fd++) close(fd);
    after_daemon_close(fds);
}

static void s_daemon_closefrom(void) {
    int fds[5];
    some_fds(fds);
    checkpoint("before");
    closefrom(3);
    after_daemon_close(fds);
}

static void s_daemon_close_range(void) {
    int fds[5];
    some_fds(fds);
    checkpoint("before");
    CHECK(close_range(3, ~0U, 0) == 0);
    after_daemon_close(fds);
}

/* The highest fd number the limit allows, then every number up to EMFILE. */
static void s_limit(void) {
    struct rlimit rl = {256, 256};
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    const char *f = touch_with("limit.txt", "l");
    int fd = open(f, O_RDONLY);
    CHECK(dup2(fd, 255) == 255);
    errno = 0;
    CHECK(dup2(fd, 256) == -1 && errno == EBADF);
    expect(255, "file", "dup2", f);
    checkpoint("top");
    int n = 0, last = -1, x;
    while ((x = open(f, O_RDONLY)) >= 0) {
        last = x;
        n++;
    }
    printf("OPENED %d up to fd %d, then errno=%s\n", n, last, strerrorname_np(errno));
    expect(last, "file", "open", f);
    checkpoint("full");
    closefrom(3);
    gone(255);
    gone(last);
}

int main(int argc, char **argv) {
    CHECK(argc >= 3);
    self = argv[0];
    dir = argv[2];
    const char *s = argv[1];
    if (!strcmp(s, "vfork")) s_vfork();
    else if (!strcmp(s, "vfork_exit")) s_vfork_exit();
    else if (!strcmp(s, "posix_spawn")) s_posix_spawn();
    else if (!strcmp(s, "exec")) s_exec();
    else if (!strcmp(s, "exec-image")) exec_image(argv[3]);
    else if (!strcmp(s, "daemon_loop")) s_daemon_loop();
    else if (!strcmp(s, "daemon_closefrom")) s_daemon_closefrom();
    else if (!strcmp(s, "daemon_close_range")) s_daemon_close_range();
    else if (!strcmp(s, "limit")) s_limit();
    else {
        fprintf(stderr, "unknown scenario %s\n", s);
        return 2;
    }
    checkpoint("released");
    return 0;
}
