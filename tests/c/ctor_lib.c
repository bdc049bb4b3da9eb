/* A library whose constructor opens a file before main (and before or after fdguard's own
   initialization, as the loader orders them): `$CTOR_PATH` stays open in `ctor_fd`. */
#include <fcntl.h>
#include <stdlib.h>

int ctor_fd = -1;

__attribute__((constructor)) static void open_at_load(void) {
    const char *p = getenv("CTOR_PATH");
    if (p) ctor_fd = open(p, O_RDONLY);
}
