/* Seed 002: a log shipper whose connect() to the collector fails, and which returns without
   closing the socket. lsof shows such sockets as "can't identify protocol"; fdguard shows them
   as "tcp unconnected" under ship_logs().
     ./connect_fail_leak 30      # 30 attempts against a closed port on 127.0.0.1 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* A port nobody listens on: bind one, and close it again. */
static int closed_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(s, (struct sockaddr *)&a, sizeof a);
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

__attribute__((noinline)) static int ship_logs(int port) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        return -1; /* the bug: s is never closed */
    close(s);
    return 0;
}

int main(int argc, char **argv) {
    int attempts = argc > 1 ? atoi(argv[1]) : 30;
    int port = closed_port();
    int failed = 0;
    for (int i = 0; i < attempts; i++) failed += ship_logs(port) < 0;
    printf("ready: %d of %d deliveries failed\n", failed, attempts);
    fflush(stdout);
    for (;;) pause();
}
