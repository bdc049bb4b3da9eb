/* Blocks in read(2) under known functions, for the stack tests of static programs
 * (cli/src/trace/stack/tests.rs): main -> load_settings -> read_setting -> read on a FIFO
 * opened for reading and writing (so the open does not block, the read does). */
#include <fcntl.h>
#include <unistd.h>

__attribute__((noinline)) static int read_setting(const char *path) {
    char buf[64];
    int fd = open(path, O_RDWR);
    return (int)read(fd, buf, sizeof buf); /* LINE read_setting */
}

__attribute__((noinline)) static int load_settings(const char *path) {
    return read_setting(path) + 1; /* LINE load_settings */
}

int main(int argc, char **argv) {
    (void)argc;
    return load_settings(argv[1]) > 0 ? 0 : 1; /* LINE main */
}
