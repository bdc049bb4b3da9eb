/* A malloc interposer that counts the calling thread's allocations, preloaded *before*
   libfdguard.so so that every allocation (fdguard's Rust allocator calls malloc too) passes
   through it. The workload reads the count with count_alloc_calls(). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

static __thread long calls;

long count_alloc_calls(void) { return calls; }

/* The next definition of `name`, looked up once into a function-local `real`. */
#define NEXT(name, type) \
    static __typeof__(type) real; \
    if (!real) real = (__typeof__(type))dlsym(RTLD_NEXT, name)

void *malloc(size_t n) {
    NEXT("malloc", void *(*)(size_t));
    calls++;
    return real(n);
}

void *calloc(size_t a, size_t b) {
    /* dlsym itself may calloc: serve that first call from a static buffer. */
    static char early[256];
    static int in_dlsym;
    static void *(*real)(size_t, size_t);
    if (!real) {
        if (in_dlsym) return early;
        in_dlsym = 1;
        real = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
        in_dlsym = 0;
    }
    calls++;
    return real(a, b);
}

void *realloc(void *p, size_t n) {
    NEXT("realloc", void *(*)(void *, size_t));
    calls++;
    return real(p, n);
}

int posix_memalign(void **out, size_t align, size_t n) {
    NEXT("posix_memalign", int (*)(void **, size_t, size_t));
    calls++;
    return real(out, align, n);
}

void *aligned_alloc(size_t align, size_t n) {
    NEXT("aligned_alloc", void *(*)(size_t, size_t));
    calls++;
    return real(align, n);
}
