/* Seed 003 in C: a server whose accept loop logs the error and tries again, as most servers do.
   Each client is served by a thread that waits until the client sends something or hangs up,
   then closes the connection. When fds run out, accept fails with EMFILE while the connection
   stays queued, and the loop logs "accept: Too many open files" as fast as it can.
     ./accept_spin                 # prints "port N", then one log line per event on stdout
     prlimit --pid PID --nofile=N:N
   Under fdguard the loop sleeps in accept (5 ms doubling to 1 s) instead of spinning. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void *handle_client(void *arg) {
    int conn = (int)(intptr_t)arg;
    char c;
    (void)read(conn, &c, 1);
    close(conn);
    printf("closed fd %d\n", conn);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* a log: one write per line */
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 128) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    printf("port %d\n", ntohs(addr.sin_port));
    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0) {
            printf("accept: %s\n", strerror(errno));
            continue;
        }
        printf("accepted fd %d\n", conn);
        pthread_t t;
        if (pthread_create(&t, NULL, handle_client, (void *)(intptr_t)conn) == 0)
            pthread_detach(t);
        else
            close(conn);
    }
}
