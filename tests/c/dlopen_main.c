/* Loads the plugin given as argv[1] from a second thread that blocks SIGUSR2, so the report
   signal is handled by the main thread while the loader thread holds the loader lock. */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include "checkpoint.h"

static void *load(void *path) {
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    CHECK(pthread_sigmask(SIG_BLOCK, &usr2, NULL) == 0);
    void *plugin = dlopen(path, RTLD_NOW);
    CHECK(plugin != NULL);
    return plugin;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    pthread_t loader;
    CHECK(pthread_create(&loader, NULL, load, argv[1]) == 0);
    CHECK(pthread_join(loader, NULL) == 0);
    checkpoint("loaded");
    return 0;
}
