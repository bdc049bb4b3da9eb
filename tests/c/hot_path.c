/* The hot path under fdguard: after a warm-up (first chunk mapped, stacks interned), the
   calls below must allocate exactly what they allocate without fdguard (fopen's FILE, and
   nothing else) on the calling thread. Prints "ALLOCS <n>" for the measured loop. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static int listener;
static struct sockaddr_in addr;

__attribute__((noinline)) static void round_trip(void) {
    int fd = open("/dev/null", O_RDONLY);
    close(fd);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int p[2];
    pipe(p);
    int d = dup(p[0]);
    close(d);
    close(p[0]);
    close(p[1]);
    connect(s, (struct sockaddr *)&addr, sizeof addr);
    int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    close(c);
    close(s);
    FILE *f = fopen("/dev/null", "r");
    fclose(f);
}

int main(int argc, char **argv) {
    long (*count)(void) = (long (*)(void))dlsym(RTLD_DEFAULT, "count_alloc_calls");
    if (!count) {
        fprintf(stderr, "count_alloc_calls not preloaded\n");
        return 2;
    }
    listener = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    bind(listener, (struct sockaddr *)&addr, sizeof addr);
    listen(listener, 16);
    getsockname(listener, (struct sockaddr *)&addr, &len);
    for (int i = 0; i < 200; i++) round_trip(); /* warm-up */
    (void)argc;
    (void)argv;
    long before = count();
    for (int i = 0; i < 20000; i++) round_trip();
    printf("ALLOCS %ld\n", count() - before);
    return 0;
}
