/* Leaks FILE streams from two functions, for tests/suite/trace_reports.rs (built static, run
   under fdguard run's tracer): load_settings opens /etc/hostname COUNT times, open_logs
   /etc/hosts COUNT times, and neither closes them. Prints `LEAK settings FD` and `LEAK logs FD`
   for each, stops at the checkpoint `leaked`, then exits. */
#include <stdlib.h>
#include "checkpoint.h"

static FILE *kept[1024];
static int nkept;

/* Opens `path` n times, keeps the streams, prints `LEAK what FD` for each. */
__attribute__((noinline)) static void keep_open(const char *path, const char *what, int n) {
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(path, "r");
        CHECK(f && nkept < 1024);
        kept[nkept++] = f;
        printf("LEAK %s %d\n", what, fileno(f));
    }
}

__attribute__((noinline)) static void load_settings(int n) { keep_open("/etc/hostname", "settings", n); }

__attribute__((noinline)) static void open_logs(int n) { keep_open("/etc/hosts", "logs", n); }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    load_settings(n);
    open_logs(n);
    checkpoint("leaked");
    return 0;
}
