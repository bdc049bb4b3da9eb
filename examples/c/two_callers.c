/* One helper, two call chains: load_config() and load_cache() both open files through
   util_open() and leak them. fdguard reports two stacks, not one, so each leaking caller is
   named. Exits at once: run with FDGUARD_AT_EXIT=1 to see the leaks reported at exit.
     ./two_callers 3 5     # 3 leaks through load_config, 5 through load_cache */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int opened;

__attribute__((noinline)) static int util_open(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) opened++;
    return fd;
}

__attribute__((noinline)) static void load_config(void) {
    if (util_open("/etc/hosts") < 0) perror("config");
}

__attribute__((noinline)) static void load_cache(void) {
    if (util_open("/dev/null") < 0) perror("cache");
}

int main(int argc, char **argv) {
    int configs = argc > 1 ? atoi(argv[1]) : 3;
    int caches = argc > 2 ? atoi(argv[2]) : 5;
    for (int i = 0; i < configs; i++) load_config();
    for (int i = 0; i < caches; i++) load_cache();
    int kept = open("/etc/hostname", O_RDONLY); /* closed properly: not a leak */
    if (kept >= 0) close(kept);
    printf("opened %d\n", opened);
    return 0;
}
