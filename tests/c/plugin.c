/* A plugin whose constructor, run by dlopen (which holds the loader lock while it runs), opens
   a file through an exported function, prints the fd and then waits at a checkpoint: a report
   asked for meanwhile is made while another thread holds the loader lock. Built stripped, so
   only its dynamic symbol table names plugin_open. */
#include <fcntl.h>
#include "checkpoint.h"

__attribute__((noinline)) int plugin_open(void) {
    return open("/dev/null", O_RDONLY);
}

__attribute__((constructor)) static void at_load(void) {
    printf("PLUGIN_FD %d\n", plugin_open());
    checkpoint("in_dlopen");
}
