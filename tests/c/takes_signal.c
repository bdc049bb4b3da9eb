/* A program that takes fdguard's report signal (SIGUSR2) after fdguard loaded, the way a JVM or
   nginx does, and checks at every step that it sees exactly what it would without fdguard.
   Prints what it saw; with "all" it takes every signal, as a Go runtime does. */
#define _GNU_SOURCE /* sigset */
#include <signal.h>
#include <string.h>

#include "checkpoint.h"

static volatile sig_atomic_t got;
static void on_usr2(int sig) { (void)sig; got++; }
static void on_any(int sig) { (void)sig; }

static const char *name(void (*h)(int)) {
    if (h == SIG_DFL) return "default";
    if (h == SIG_IGN) return "ignored";
    if (h == on_usr2) return "own";
    return "other";
}

static const char *now(void) {
    struct sigaction q;
    CHECK(sigaction(SIGUSR2, NULL, &q) == 0);
    return name(q.sa_handler);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "all") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_any;
        for (int s = 1; s < NSIG; s++)
            if (s != SIGKILL && s != SIGSTOP) sigaction(s, &sa, NULL);
        checkpoint("all");
        return 0;
    }
    printf("BEFORE %s\n", now());
    /* Setting the default leaves the signal to fdguard: `signal` returns the previous one. */
    printf("DFL_PREV %s\n", name(signal(SIGUSR2, SIG_DFL)));
    printf("AFTER_DFL %s\n", now());
    checkpoint("default");

    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART; /* the checkpoint's read goes on after the handler */
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR2, &sa, &old) == 0);
    printf("OLD %s\n", name(old.sa_handler));
    printf("NOW %s\n", now());
    printf("SIGNAL_PREV %s\n", name(sigset(SIGUSR2, on_usr2)));
    checkpoint("taken");
    printf("GOT %d\n", (int)got);
    checkpoint("counted");
    return 0;
}
