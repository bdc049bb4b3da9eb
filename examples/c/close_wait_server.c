/* Seed 001: a server whose clients disconnect while it never closes their sockets. Each
   connection is read until the client hangs up (read returns 0) and then forgotten: the
   server-side socket stays in CLOSE_WAIT forever, until accept() fails with EMFILE.
     ./close_wait_server 20      # serves 20 connections on 127.0.0.1, prints its port
   Under fdguard, `kill -USR2 PID` shows the sockets in CLOSE_WAIT under accept_connection(). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int accepted;

__attribute__((noinline)) static int accept_connection(int listener) {
    int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (conn >= 0) accepted++;
    return conn;
}

/* Reads the request until the client is done... and never closes the connection. */
__attribute__((noinline)) static void serve(int conn) {
    char buf[256];
    while (read(conn, buf, sizeof buf) > 0) {
    }
}

int main(int argc, char **argv) {
    int connections = argc > 1 ? atoi(argv[1]) : 20;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 128) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    printf("port %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    for (int i = 0; i < connections; i++) {
        int conn = accept_connection(listener);
        if (conn < 0) {
            perror("accept");
            continue;
        }
        serve(conn);
    }
    printf("ready: served %d connections\n", accepted);
    fflush(stdout);
    for (;;) pause();
}
