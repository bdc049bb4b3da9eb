/* The plugin dl_loader.c loads: its constructor opens an fd itself and asks the program for
   another (app_helper_open, when the program exports it to the plugin's namespace);
   plugin_open_files opens three more the moment the program calls it. */
#include <fcntl.h>
#include <unistd.h>

int app_helper_open(void) __attribute__((weak));

int plugin_ctor_fd = -1, plugin_helper_fd = -1;

__attribute__((constructor)) static void at_load(void) {
    plugin_ctor_fd = open("/dev/null", O_RDONLY);
    if (app_helper_open) plugin_helper_fd = app_helper_open();
}

__attribute__((noinline)) int plugin_open_files(int *fds) {
    fds[0] = open("/dev/null", O_RDONLY);
    return fds[0] < 0 || pipe(fds + 1) != 0 ? -1 : 0;
}

/* Where this object's GOT entry for open points: libc's open, or a hook. */
void *plugin_open_address(void) {
    return (void *)&open;
}
