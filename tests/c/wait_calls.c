/* The accept guard's promise to event loops, checked call by call under fdguard: while a
   listener is paused, every wait call (epoll_wait, epoll_pwait, epoll_pwait2, poll, ppoll,
   __poll_chk, select, pselect) reports exactly what the kernel says about every other fd, never
   the listener, never an early 0; and when the pause ends, the listener is reported (with the
   events and data the program registered last). Run with FDGUARD_BACKOFF_MAX_MS=400. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include "checkpoint.h"

extern int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen);

static int L, pipe_r, pipe_w, E;
static double hidden_at; /* when the current pause started */
static double period;    /* its length, ms */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void accept_fails(void) {
    int c = accept4(L, NULL, NULL, SOCK_NONBLOCK);
    CHECK(c < 0 && errno == EMFILE);
}

/* A failure after the program waited: the listener is paused for `ms`. */
static void pause_for(double ms) {
    accept_fails();
    hidden_at = now_ms();
    period = ms;
}

enum { EPOLL_WAIT, EPOLL_PWAIT, EPOLL_PWAIT2, POLL, PPOLL, POLL_CHK, SELECT, PSELECT, KINDS };
static const char *names[] = {"epoll_wait", "epoll_pwait", "epoll_pwait2", "poll",
                              "ppoll", "__poll_chk", "select", "pselect"};

/* One wait on the listener and the pipe; sets what is ready; returns the call's result. */
static int wait_on(int kind, int timeout_ms, int *listener, int *pipe, unsigned long *ldata) {
    struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
    struct timespec *tsp = timeout_ms < 0 ? NULL : &ts;
    sigset_t mask;
    sigemptyset(&mask);
    *listener = *pipe = 0;
    if (kind <= EPOLL_PWAIT2) {
        struct epoll_event ev[4];
        int n = kind == EPOLL_WAIT    ? epoll_wait(E, ev, 4, timeout_ms)
                : kind == EPOLL_PWAIT ? epoll_pwait(E, ev, 4, timeout_ms, &mask)
                                      : epoll_pwait2(E, ev, 4, tsp, &mask);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == 1) *pipe = 1;
            else { *listener = 1; *ldata = ev[i].data.u64; }
        }
        return n;
    }
    if (kind <= POLL_CHK) {
        struct pollfd p[2] = {{.fd = L, .events = POLLIN}, {.fd = pipe_r, .events = POLLIN}};
        int n = kind == POLL    ? poll(p, 2, timeout_ms)
                : kind == PPOLL ? ppoll(p, 2, tsp, &mask)
                                : __poll_chk(p, 2, timeout_ms, sizeof p);
        CHECK(p[0].fd == L && p[1].fd == pipe_r); /* the program's array is as it gave it */
        *listener = p[0].revents != 0;
        *pipe = p[1].revents != 0;
        return n;
    }
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(L, &rd);
    FD_SET(pipe_r, &rd);
    int top = (L > pipe_r ? L : pipe_r) + 1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int n = kind == SELECT ? select(top, &rd, NULL, NULL, timeout_ms < 0 ? NULL : &tv)
                           : pselect(top, &rd, NULL, NULL, tsp, &mask);
    *listener = FD_ISSET(L, &rd);
    *pipe = FD_ISSET(pipe_r, &rd);
    return n;
}

/* A long wait that must end exactly when the pause does, with the listener. */
static void wait_for_pause_end(int kind, unsigned long want_data) {
    int lr, pr;
    unsigned long data = 0;
    int n = wait_on(kind, kind == SELECT ? 3000 : -1, &lr, &pr, &data);
    double at = now_ms() - hidden_at;
    CHECK(n == 1 && lr && !pr);
    if (kind <= EPOLL_PWAIT2) CHECK(data == want_data);
    printf("%s: listener reported %.1f ms into a %.0f ms pause\n", names[kind], at, period);
    CHECK(at >= period - 1 && at < period + 150);
}

int main(void) {
    L = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    CHECK(!bind(L, (struct sockaddr *)&addr, sizeof addr) && !listen(L, 8));
    CHECK(!getsockname(L, (struct sockaddr *)&addr, &len));
    int client = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(!connect(client, (struct sockaddr *)&addr, sizeof addr)); /* queued in L's backlog */
    int p[2];
    CHECK(!pipe(p));
    pipe_r = p[0], pipe_w = p[1];
    E = epoll_create1(0);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 64;
    CHECK(!setrlimit(RLIMIT_NOFILE, &rl));
    int spare = -1;
    while (dup(0) >= 0) spare++; /* every fd taken: accept fails with EMFILE */

    /* Retries without waiting (short sleeps: fdguard has not seen the listener waited on),
       then a failure after a wait: paused for the 7th period, 320 ms. */
    for (int i = 0; i < 6; i++) accept_fails();
    struct pollfd only_pipe = {.fd = pipe_r, .events = POLLIN};
    CHECK(poll(&only_pipe, 1, 0) == 0);
    pause_for(320);
    /* Registered while paused: hidden in this set at once. */
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 12345};
    CHECK(!epoll_ctl(E, EPOLL_CTL_ADD, L, &ev));
    ev.data.u64 = 1;
    CHECK(!epoll_ctl(E, EPOLL_CTL_ADD, pipe_r, &ev));

    for (int k = 0; k < KINDS; k++) {
        int lr, pr;
        unsigned long data;
        /* Nothing but the (hidden) listener is ready. */
        CHECK(wait_on(k, 0, &lr, &pr, &data) == 0 && !lr && !pr);
        /* The pipe is reported at once, alone. */
        CHECK(write(pipe_w, "x", 1) == 1);
        CHECK(wait_on(k, 0, &lr, &pr, &data) == 1 && !lr && pr);
        double t = now_ms();
        CHECK(wait_on(k, 10, &lr, &pr, &data) == 1 && !lr && pr && now_ms() - t < 5);
        char c;
        CHECK(read(pipe_r, &c, 1) == 1);
        /* The program's own timeout, shorter than the pause: 0, not early. */
        t = now_ms();
        CHECK(wait_on(k, 15, &lr, &pr, &data) == 0 && !lr && !pr);
        CHECK(now_ms() - t >= 15);
        printf("%s: exact during the pause\n", names[k]);
    }
    CHECK(now_ms() - hidden_at < period); /* all of the above happened within the pause */

    /* The program changes the registration during the pause: the new data comes back. */
    ev.events = EPOLLIN;
    ev.data.u64 = 777;
    CHECK(!epoll_ctl(E, EPOLL_CTL_MOD, L, &ev));
    wait_for_pause_end(EPOLL_WAIT, 777);
    pause_for(400);
    wait_for_pause_end(POLL, 0);
    pause_for(400);
    /* select writes the time not slept back into its timeval. */
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(L, &rd);
    struct timeval tv = {3, 0};
    CHECK(select(L + 1, &rd, NULL, NULL, &tv) == 1 && FD_ISSET(L, &rd));
    double left = tv.tv_sec * 1e3 + tv.tv_usec / 1e3;
    printf("select: %.0f ms of 3000 left after a %.0f ms pause\n", left, period);
    CHECK(left > 3000 - period - 150 && left <= 3000 - period + 1);

    /* A failed select leaves the program's sets as they were, listener bit included. */
    pause_for(400);
    close(spare);
    FD_ZERO(&rd);
    FD_SET(L, &rd);
    FD_SET(spare, &rd);
    errno = 0;
    CHECK(select((L > spare ? L : spare) + 1, &rd, NULL, NULL, NULL) == -1 && errno == EBADF);
    CHECK(FD_ISSET(L, &rd) && FD_ISSET(spare, &rd));
    /* An fd is free again: the program's next accept works, paused or not. */
    int conn = accept(L, NULL, NULL);
    CHECK(conn == spare);
    printf("accepted after the pause: fd %d\n", conn);
    return 0;
}
