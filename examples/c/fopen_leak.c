/* Seed 000: a request handler opens a file on every request and never closes it.
   Run it under fdguard and ask for a report:
     LD_PRELOAD=target/release/libfdguard.so ./fopen_leak &  kill -USR2 $!
   The report names handle_request() as the holder of the leaked FILE streams. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Reads a setting for the request... and forgets to fclose the stream. */
__attribute__((noinline)) static int load_setting(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    return fgetc(f);
}

__attribute__((noinline)) static void handle_request(int id) {
    if (load_setting("/etc/hostname") < 0 && load_setting("/etc/hosts") < 0)
        fprintf(stderr, "request %d: no settings\n", id);
}

int main(int argc, char **argv) {
    int requests = argc > 1 ? atoi(argv[1]) : 200;
    for (int i = 0; i < requests; i++) handle_request(i);
    printf("ready: served %d requests\n", requests);
    fflush(stdout);
    if (argc > 2) for (;;) pause(); /* "wait": stay alive like a server until killed */
    return 0;
}
