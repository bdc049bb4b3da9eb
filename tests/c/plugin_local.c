/* A plugin that, when loaded, opens a file from a function of its own: static, so only the
   plugin's .symtab names it (built without debug info), and loaded after fdguard started. */
#include <fcntl.h>
#include <stdio.h>

static __attribute__((noinline)) int open_privately(void) {
    return open("/dev/null", O_RDONLY);
}

__attribute__((constructor)) static void at_load(void) {
    printf("PLUGIN_FD %d\n", open_privately());
    fflush(stdout);
}
