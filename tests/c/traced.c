/* A program for fdguard's tracer (tests/suite/trace.rs), built -static: run by `fdguard run`, it
   goes through the tracer, not the library. Modes:
     leaks        makes and releases fds in every way the tracer follows (close-on-exec fds
                  across an exec of itself from a thread, threads, one with a table of its
                  own, a fork child that execs, SCM_RIGHTS, close_range), prints `EXPECT fd
                  call` for each fd it leaks and `START` / `PROCFD` lines listing
                  /proc/self/fd at its start and just before it exits;
     exit N       exits with status N;
     signals      counts SIGUSR1 in a handler; prints `READY pid`, then for each line on stdin
                  `USR1 n`, until stdin ends. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static void expect(int fd, const char *call) {
    CHECK(fd >= 0);
    printf("EXPECT %d %s\n", fd, call);
}

/* `label` and the fds /proc/self/fd lists, on one line. */
static void list_fds(const char *label) {
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    printf("%s", label);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d)) continue;
        printf(" %s", e->d_name);
    }
    printf("\n");
    closedir(d);
    fflush(stdout);
}

static int open_host(int flags) { return open("/etc/hostname", O_RDONLY | flags); }

static void *thread_leaks(void *arg) {
    (void)arg;
    expect(open_host(0), "openat");
    CHECK(close(open_host(0)) == 0);
    return NULL;
}

/* A thread with a table of its own: what it closes and opens there is not the process's. */
static void *thread_unshares(void *arg) {
    CHECK(unshare(CLONE_FILES) == 0);
    CHECK(open_host(0) >= 0);
    CHECK(close(*(int *)arg) == 0);
    return NULL;
}

static void send_fd(int sock, int fd) {
    char byte = 'x';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    CHECK(sendmsg(sock, &m, 0) == 1);
}

static int receive_fd(int sock) {
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    CHECK(recvmsg(sock, &m, 0) == 1);
    int fd;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
    return fd;
}

/* After the exec: every other way of making and releasing fds. */
static void after_exec(int kept, const char *self) {
    expect(kept, "openat");
    FILE *f = fopen("/etc/hostname", "r");
    expect(fileno(f), "openat");
    CHECK(fclose(fopen("/etc/hostname", "r")) == 0);
    int p[2];
    CHECK(pipe(p) == 0);
    expect(p[0], "pipe2");
    expect(p[1], "pipe2");
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    expect(sv[0], "socketpair");
    expect(sv[1], "socketpair");
    int sent = open_host(0);
    send_fd(sv[0], sent);
    CHECK(close(sent) == 0);
    expect(receive_fd(sv[1]), "recvmsg");

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    CHECK(bind(listener, (struct sockaddr *)&a, sizeof a) == 0 && listen(listener, 4) == 0);
    CHECK(getsockname(listener, (struct sockaddr *)&a, &len) == 0);
    expect(listener, "socket");
    int client = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(client, (struct sockaddr *)&a, sizeof a) == 0);
    expect(client, "socket");
    int accepted = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    expect(accepted, "accept4");
    expect(dup(accepted), "dup");
    expect(fcntl(accepted, F_DUPFD, 100), "fcntl");
    int replaced = open_host(0);
    CHECK(dup2(p[0], replaced) == replaced);
    expect(replaced, "dup2");
    for (int fd = 200; fd <= 202; fd++) CHECK(dup2(kept, fd) == fd);
    CHECK(close_range(200, 202, 0) == 0);
    CHECK(dup2(kept, 210) == 210);
    CHECK(close_range(210, 210, CLOSE_RANGE_CLOEXEC) == 0);
    expect(210, "dup2");
    expect(eventfd(0, 0), "eventfd");
    expect(epoll_create1(0), "epoll_create1");

    pthread_t t;
    CHECK(pthread_create(&t, NULL, thread_leaks, NULL) == 0 && pthread_join(t, NULL) == 0);
    CHECK(pthread_create(&t, NULL, thread_unshares, &kept) == 0 && pthread_join(t, NULL) == 0);

    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        open_host(0); /* the child's own leak: not the first process's */
        execl(self, self, "exit", "0", (char *)NULL);
        _exit(98);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    list_fds("PROCFD");
}

static volatile sig_atomic_t usr1;

static void on_usr1(int sig) {
    (void)sig;
    usr1++;
}

static int signals(void) {
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    printf("READY %d\n", getpid());
    fflush(stdout);
    char c;
    while (read(0, &c, 1) == 1) {
        if (c != '\n') continue;
        printf("USR1 %d\n", (int)usr1);
        fflush(stdout);
    }
    return 0;
}

static const char *self_argv0;

static void *exec_after(void *kept) {
    execl("/proc/self/exe", self_argv0, "after-exec", (char *)kept, (char *)NULL);
    _exit(97);
}

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    if (strcmp(argv[1], "exit") == 0) return atoi(argv[2]);
    if (strcmp(argv[1], "signals") == 0) return signals();
    if (strcmp(argv[1], "after-exec") == 0) {
        after_exec(atoi(argv[2]), argv[0]);
        return 0;
    }
    CHECK(strcmp(argv[1], "leaks") == 0);
    list_fds("START");
    /* Across the exec: one close-on-exec fd made inheritable again, one made close-on-exec,
       one opened so. */
    int kept = open_host(O_CLOEXEC);
    CHECK(fcntl(kept, F_SETFD, 0) == 0);
    CHECK(fcntl(open_host(0), F_SETFD, FD_CLOEXEC) == 0);
    open_host(O_CLOEXEC);
    static char arg[16];
    snprintf(arg, sizeof arg, "%d", kept);
    fflush(stdout);
    /* From a thread: the process then goes on with the leader's pid (the kernel's de_thread). */
    self_argv0 = argv[0];
    pthread_t t;
    CHECK(pthread_create(&t, NULL, exec_after, arg) == 0);
    pthread_join(t, NULL);
    return 97;
}
