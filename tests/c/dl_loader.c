/* Loads each object named on the command line, one per step, the way a program loads plugins:
   at the checkpoint "next" the harness may attach or detach fdguard; then the program loads the
   object (`dlopen`; `dlmopen` into a new namespace for "new:NAME", into its own for
   "base:NAME"; `dlopen` called from code in an anonymous mapping, as a JIT compiler's code
   would, for "jit:NAME"; "close" closes the one loaded last instead), at once calls its
   plugin_open_files (which opens three fds), says what it got and stops at "loaded":
     DLOPEN_BOUND <the object this program's `dlopen` is bound to>
     PREVIOUS_OPEN_BOUND <what OPEN_BOUND says of the plugin loaded before, after this load>
     LOADED <the loader's name for it>   or   DLERROR <dlerror()>   or   CLOSED <dlclose()>
     FDS <open's fd> <pipe's two fds>
     CTOR_FD <fd its constructor opened>
     HELPER_FD <fd app_helper_open opened for its constructor, -1 if it could not call it>
     OPEN_BOUND <the object that plugin's `open` is bound to>
   Built with -rdynamic, so that plugins see app_helper_open. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <sys/mman.h>
#include "checkpoint.h"

/* What a plugin's constructor calls: code of the program's, run by the loader. */
int app_helper_open(void) {
    return open("/dev/null", O_RDONLY);
}

/* The file name of the object holding `addr`. */
static const char *holder(void *addr) {
    Dl_info info;
    if (!dladdr(addr, &info) || info.dli_fname == NULL) return "?";
    const char *slash = strrchr(info.dli_fname, '/');
    return slash ? slash + 1 : info.dli_fname;
}

/* dlopen(name, RTLD_NOW) called from code in an anonymous mapping: a caller the loader finds
   in no object. The code calls what this program's `dlopen` is bound to at that moment. */
static void *jit_dlopen(const char *name) {
    static unsigned char *code;
    if (code == NULL) {
        code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
        CHECK(code != MAP_FAILED);
    }
    /* sub rsp, 8; movabs rax, target; call rax; add rsp, 8; ret */
    static const unsigned char head[] = {0x48, 0x83, 0xec, 0x08, 0x48, 0xb8};
    static const unsigned char tail[] = {0xff, 0xd0, 0x48, 0x83, 0xc4, 0x08, 0xc3};
    void *target = (void *)&dlopen;
    memcpy(code, head, sizeof head);
    memcpy(code + sizeof head, &target, sizeof target);
    memcpy(code + sizeof head + sizeof target, tail, sizeof tail);
    return ((void *(*)(const char *, int))(void *)code)(name, RTLD_NOW);
}

static void *load(const char *name) {
    if (strncmp(name, "jit:", 4) == 0) return jit_dlopen(name + 4);
    if (strncmp(name, "new:", 4) == 0) return dlmopen(LM_ID_NEWLM, name + 4, RTLD_NOW);
    if (strncmp(name, "base:", 5) == 0) return dlmopen(LM_ID_BASE, name + 5, RTLD_NOW);
    return dlopen(name, RTLD_NOW);
}

int main(int argc, char **argv) {
    void *plugin = NULL;
    void *(*open_address)(void) = NULL;
    for (int i = 1; i < argc; i++) {
        checkpoint("next");
        printf("DLOPEN_BOUND %s\n", holder((void *)&dlopen));
        void *(*previous)(void) = open_address;
        if (strcmp(argv[i], "close") == 0) {
            printf("CLOSED %d\n", dlclose(plugin));
            open_address = NULL;
            checkpoint("loaded");
            continue;
        }
        plugin = load(argv[i]);
        const char *error = plugin == NULL ? dlerror() : NULL;
        if (previous != NULL) printf("PREVIOUS_OPEN_BOUND %s\n", holder(previous()));
        if (error != NULL) {
            printf("DLERROR %s\n", error);
            checkpoint("loaded");
            continue;
        }
        int (*work)(int *) = (int (*)(int *))dlsym(plugin, "plugin_open_files");
        CHECK(work != NULL);
        int fds[3];
        CHECK(work(fds) == 0);
        struct link_map *map;
        CHECK(dlinfo(plugin, RTLD_DI_LINKMAP, &map) == 0);
        int *ctor = dlsym(plugin, "plugin_ctor_fd"), *helper = dlsym(plugin, "plugin_helper_fd");
        open_address = (void *(*)(void))dlsym(plugin, "plugin_open_address");
        CHECK(ctor != NULL && helper != NULL && open_address != NULL);
        printf("LOADED %s\n", map->l_name);
        printf("FDS %d %d %d\n", fds[0], fds[1], fds[2]);
        printf("CTOR_FD %d\nHELPER_FD %d\n", *ctor, *helper);
        printf("OPEN_BOUND %s\n", holder(open_address()));
        checkpoint("loaded");
    }
    return 0;
}
