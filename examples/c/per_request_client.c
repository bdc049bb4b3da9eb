/* Seed 004: a client that dials a new connection for every request and never closes it (the
   gRPC-connection-per-call and unclosed-response-body bugs). A small server in a thread answers
   each request and hangs up, so the client's sockets end in CLOSE_WAIT under new_connection().
     ./per_request_client 25 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int listener;
static int requests;

static void *server(void *arg) {
    (void)arg;
    for (int i = 0; i < requests; i++) {
        int c = accept(listener, NULL, NULL);
        char buf[64];
        if (c < 0) continue;
        if (read(c, buf, sizeof buf) > 0) write(c, "pong\n", 5);
        close(c);
    }
    return NULL;
}

__attribute__((noinline)) static int new_connection(const struct sockaddr_in *server_addr) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s >= 0 && connect(s, (const struct sockaddr *)server_addr, sizeof *server_addr) < 0) {
        close(s);
        return -1;
    }
    return s;
}

/* One request: dial, ask, read the answer... and leave the connection open. */
__attribute__((noinline)) static int do_request(const struct sockaddr_in *server_addr) {
    char buf[64];
    int s = new_connection(server_addr);
    if (s < 0 || write(s, "ping\n", 5) != 5) return -1;
    return read(s, buf, sizeof buf) > 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    requests = argc > 1 ? atoi(argv[1]) : 25;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 128) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, server, NULL);
    int ok = 0;
    for (int i = 0; i < requests; i++) ok += do_request(&addr) == 0;
    pthread_join(t, NULL);
    printf("ready: %d of %d requests answered\n", ok, requests);
    fflush(stdout);
    for (;;) pause();
}
