/* Seed 003 as an event loop: a server that echoes what its clients send and, when accept fails,
   logs the error and carries on.
     ./event_server lt|et|poll|select [ROOM]
   lt      one thread, level-triggered epoll, Redis's way: on an accept error, log and return to
           epoll_wait, which reports the still-queued connection at once: the loop spins, and
           every round logs a line.
   et      the main/sub-reactor design: an acceptor thread with an edge-triggered listener that
           accepts until EAGAIN, logging and retrying on any other error (which never ends while
           fds are exhausted), and a worker thread that echoes.
   poll    one thread, poll(), otherwise like lt.
   select  one thread, select(), otherwise like lt.
   Prints "port N", then one log line per event on stdout. With ROOM, the server lowers its own
   soft RLIMIT_NOFILE so that ROOM more fds fit (for tests without prlimit).
   Under fdguard the listener is hidden from the loop for the backoff period instead: no spin,
   and the echo clients are served as before. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 512

static int listener;

static int accept_one(void) {
    int conn = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (conn >= 0)
        printf("accepted fd %d\n", conn);
    else if (errno != EAGAIN)
        printf("accept: %s\n", strerror(errno));
    return conn;
}

/* Echoes what is there; false when the client is gone (the connection is then closed). */
static int echo(int conn) {
    char buf[4096];
    for (;;) {
        ssize_t n = read(conn, buf, sizeof buf);
        if (n > 0) {
            if (write(conn, buf, (size_t)n) != n) break;
            continue;
        }
        if (n < 0 && errno == EAGAIN) return 1;
        break;
    }
    close(conn);
    printf("closed fd %d\n", conn);
    return 0;
}

static void epoll_add(int ep, int fd, unsigned events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) perror("epoll_ctl");
}

static void run_lt(void) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_add(ep, listener, EPOLLIN);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, 1000);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd != listener) {
                echo(fd);
                continue;
            }
            for (int k = 0; k < 16; k++) { /* Redis: a bounded batch, return on any error */
                int conn = accept_one();
                if (conn < 0) break;
                epoll_add(ep, conn, EPOLLIN);
            }
        }
    }
}

static int worker_ep;

static void *acceptor(void *arg) {
    (void)arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_add(ep, listener, EPOLLIN | EPOLLET);
    for (;;) {
        struct epoll_event ev;
        if (epoll_wait(ep, &ev, 1, -1) < 1) continue;
        for (;;) { /* edge-triggered: accept until EAGAIN */
            int conn = accept_one();
            if (conn >= 0) {
                epoll_add(worker_ep, conn, EPOLLIN | EPOLLET);
                continue;
            }
            if (errno == EAGAIN) break;
        }
    }
    return NULL;
}

static void run_et(void) {
    worker_ep = epoll_create1(EPOLL_CLOEXEC);
    pthread_t t;
    pthread_create(&t, NULL, acceptor, NULL);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(worker_ep, evs, 64, 1000);
        for (int i = 0; i < n; i++) echo(evs[i].data.fd);
    }
}

static void run_poll(void) {
    struct pollfd fds[MAX_CLIENTS + 1] = {{.fd = listener, .events = POLLIN}};
    int n = 1;
    for (;;) {
        if (poll(fds, (nfds_t)n, 1000) <= 0) continue;
        for (int i = n - 1; i >= 1; i--) {
            if (fds[i].revents && !echo(fds[i].fd)) fds[i] = fds[--n];
        }
        if (fds[0].revents & POLLIN) {
            int conn = accept_one();
            if (conn >= 0 && n <= MAX_CLIENTS) fds[n++] = (struct pollfd){.fd = conn, .events = POLLIN};
        }
    }
}

static void run_select(void) {
    int clients[MAX_CLIENTS], n = 0;
    for (;;) {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(listener, &rd);
        int top = listener;
        for (int i = 0; i < n; i++) {
            FD_SET(clients[i], &rd);
            if (clients[i] > top) top = clients[i];
        }
        struct timeval tv = {.tv_sec = 1};
        if (select(top + 1, &rd, NULL, NULL, &tv) <= 0) continue;
        for (int i = n - 1; i >= 0; i--) {
            if (FD_ISSET(clients[i], &rd) && !echo(clients[i])) clients[i] = clients[--n];
        }
        if (FD_ISSET(listener, &rd)) {
            int conn = accept_one();
            if (conn >= 0 && conn < FD_SETSIZE && n < MAX_CLIENTS) clients[n++] = conn;
            else if (conn >= 0) close(conn);
        }
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* a log: one write per line */
    const char *mode = argc > 1 ? argv[1] : "lt";
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 128) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    if (argc > 2) {
        int lowest_free = dup(0);
        close(lowest_free);
        /* One each for the epoll sets still to be created. */
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = (rlim_t)lowest_free + 2 + (rlim_t)atoi(argv[2]);
        if (setrlimit(RLIMIT_NOFILE, &rl)) perror("setrlimit");
    }
    printf("port %d\n", ntohs(addr.sin_port));
    if (!strcmp(mode, "lt")) run_lt();
    if (!strcmp(mode, "et")) run_et();
    if (!strcmp(mode, "poll")) run_poll();
    if (!strcmp(mode, "select")) run_select();
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
