/* Three threads loading, using and unloading plugins as fast as they can (dlopen, the plugin's
   plugin_open_files, close, dlclose), each result checked, while fdguard is attached to the
   process and detached again from outside.
     dl_churn DIR     loads DIR/libchurn<thread>_<0|1>.so (copies of dl_plugin.c)
   Checkpoint "churning" (threads running; the harness attaches and detaches meanwhile); then
   prints "ok LOADS" and exits 0 if every call gave the expected result. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include "checkpoint.h"

enum { THREADS = 3, MAX_ROUNDS = 200000 };

static atomic_int stop_wanted;
static atomic_long loads, failures;
static const char *dir;

/* What a plugin's constructor calls (the program is built with -rdynamic). */
int app_helper_open(void) {
    return dup(0);
}

static void fail(const char *what, const char *path) {
    fprintf(stderr, "dl_churn: %s failed for %s: %s\n", what, path, dlerror());
    atomic_fetch_add(&failures, 1);
}

static void *churn(void *arg) {
    long t = (long)arg;
    char path[4096];
    for (long i = 0; i < MAX_ROUNDS && !atomic_load(&stop_wanted); i++) {
        snprintf(path, sizeof path, "%s/libchurn%ld_%ld.so", dir, t, i % 2);
        void *plugin = dlopen(path, RTLD_NOW);
        if (plugin == NULL) {
            fail("dlopen", path);
            continue;
        }
        int (*work)(int *) = (int (*)(int *))dlsym(plugin, "plugin_open_files");
        int *ctor = dlsym(plugin, "plugin_ctor_fd"), *helper = dlsym(plugin, "plugin_helper_fd");
        int fds[3];
        if (work == NULL || ctor == NULL || helper == NULL || work(fds) != 0) {
            fail("plugin_open_files", path);
        } else if (close(fds[0]) || close(fds[1]) || close(fds[2]) || close(*ctor) ||
                   close(*helper)) {
            fail("close", path);
        }
        if (dlclose(plugin) != 0) fail("dlclose", path);
        atomic_fetch_add(&loads, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    dir = argv[1];
    pthread_t threads[THREADS];
    for (long t = 0; t < THREADS; t++) CHECK(pthread_create(&threads[t], NULL, churn, (void *)t) == 0);
    checkpoint("churning");
    atomic_store(&stop_wanted, 1);
    for (int t = 0; t < THREADS; t++) CHECK(pthread_join(threads[t], NULL) == 0);
    printf("ok %ld\n", atomic_load(&loads));
    return atomic_load(&failures) == 0 ? 0 : 1;
}
