/* A process holding one of each kind of fd that `fdguard inspect` must describe: files and a
   directory, sockets in CLOSE_WAIT, sockets that never connected or failed to (lsof's "can't
   identify protocol"), one bound and never used, a bound UDP socket, a unix socketpair, a pipe, an epoll set watching
   the listener and the pipe, an eventfd. Then it leaks FILE streams in rounds, one round per
   checkpoint, from leak_streams(), for the tests of `diff`, `flamegraph` and `watch`.
     holder DIR ROUNDS    checkpoints: "held", then "leaked" after each round */
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "testlib.h"

enum { CLOSE_WAITS = 3, STREAMS_PER_ROUND = 25 };

/* Accepted connections whose clients have gone: the server never closes them. */
static void close_waits(int listener) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    CHECK(getsockname(listener, (struct sockaddr *)&a, &len) == 0);
    for (int i = 0; i < CLOSE_WAITS; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0);
        int s = accept(listener, NULL, NULL);
        CHECK(s >= 0);
        CHECK(close(c) == 0);
        printf("CLOSE_WAIT %d\n", s);
    }
}

/* A socket whose connect was refused (the port's listener is gone), kept open. The kernel
   released the port it was given; getsockname still shows it. */
static int failed_connect(void) {
    int gone_client, port;
    int l = loopback_listener(1, &gone_client, &port);
    CHECK(close(gone_client) == 0 && close(l) == 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(s, (struct sockaddr *)&a, sizeof a) == -1 && errno == ECONNREFUSED);
    return s;
}

__attribute__((noinline)) static void leak_streams(const char *path) {
    for (int i = 0; i < STREAMS_PER_ROUND; i++) CHECK(fopen(path, "r") != NULL);
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    dir = argv[1];
    int rounds = atoi(argv[2]);
    const char *data = touch("data");
    for (int i = 0; i < 2; i++) printf("FILE %d\n", open(data, O_RDONLY));
    printf("DIR %d\n", open(dir, O_RDONLY | O_DIRECTORY));

    int first_client, port;
    int listener = loopback_listener(16, &first_client, &port);
    printf("LISTEN %d %d\n", listener, port);
    int first = accept(listener, NULL, NULL);
    CHECK(first >= 0 && close(first_client) == 0);
    printf("CLOSE_WAIT %d\n", first);
    close_waits(listener);
    printf("UNCONNECTED %d\n", socket(AF_INET, SOCK_STREAM, 0));
    printf("UNCONNECTED %d\n", socket(AF_INET6, SOCK_STREAM, 0));
    printf("FAILED %d\n", failed_connect());
    int bound = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in ba = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t blen = sizeof ba;
    CHECK(bind(bound, (struct sockaddr *)&ba, sizeof ba) == 0);
    CHECK(getsockname(bound, (struct sockaddr *)&ba, &blen) == 0);
    printf("BOUND %d %d\n", bound, ntohs(ba.sin_port));

    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(udp, (struct sockaddr *)&ua, sizeof ua) == 0);
    printf("UDP %d\n", udp);

    int pair[2], pipe_fds[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    printf("PAIR %d %d\n", pair[0], pair[1]);
    CHECK(pipe(pipe_fds) == 0);
    printf("PIPE %d %d\n", pipe_fds[0], pipe_fds[1]);

    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) == 0);
    ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.fd = pipe_fds[0]};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, pipe_fds[0], &ev) == 0);
    printf("EPOLL %d\n", ep);
    printf("EVENTFD %d\n", eventfd(0, 0));
    checkpoint("held");

    for (int r = 0; r < rounds; r++) {
        leak_streams(data);
        checkpoint("leaked");
    }
    return 0;
}
