/* Reference preloads for the hot-path account in analysis.md: what the
 * cheapest possible interposer costs on this machine, so fdguard's overhead
 * can be judged against a floor rather than against zero.
 *
 *   cc -O2 -shared -fPIC -DFDREF_FORWARD -o fdref-forward.so bench/fdref.c -ldl
 *   cc -O2 -shared -fPIC                  -o fdref-record.so  bench/fdref.c -ldl
 *
 * fdref-forward.so: open/open64/close forwarded to the next definition, with
 * errno kept, and nothing else: the price of being a preload at all.
 *
 * fdref-record.so: as above, plus the least a tracker must remember about each
 * fd to say who made it, and when: the calling thread (cached in initial-exec
 * TLS), the coarse monotonic clock, the call and the path's last 32 bytes, in
 * a flat array indexed by fd (first 65,536 numbers), forgotten on close. No
 * stacks, no fork or signal-handler care, no reports: it is a floor, not a
 * tool.  Only open, open64 and close (what `fdbench open` calls).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*open_fn)(const char *, int, ...);
typedef int (*close_fn)(int);

static open_fn real_open, real_open64;
static close_fn real_close;

__attribute__((constructor)) static void fdref_init(void) {
    real_open = (open_fn)dlsym(RTLD_NEXT, "open");
    real_open64 = (open_fn)dlsym(RTLD_NEXT, "open64");
    real_close = (close_fn)dlsym(RTLD_NEXT, "close");
}

#ifndef FDREF_FORWARD
#define SLOTS 65536
struct rec {
    uint32_t open, tid;
    uint64_t born_ns, len;
    char tail[32];
} __attribute__((aligned(64)));
static struct rec table[SLOTS];
static __thread __attribute__((tls_model("initial-exec"))) uint32_t cached_tid;

static void created(int fd, const char *path) {
    if (fd < 0 || fd >= SLOTS) return;
    struct rec *r = &table[fd];
    if (!cached_tid) cached_tid = (uint32_t)syscall(SYS_gettid);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    size_t n = strlen(path);
    size_t keep = n < 32 ? n : 32;
    memcpy(r->tail, path + n - keep, keep);
    r->len = n;
    r->tid = cached_tid;
    r->born_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    __atomic_store_n(&r->open, 1, __ATOMIC_RELEASE);
}

static void released(int fd) {
    if (fd >= 0 && fd < SLOTS) __atomic_store_n(&table[fd].open, 0, __ATOMIC_RELEASE);
}
#else
static void created(int fd, const char *path) { (void)fd, (void)path; }
static void released(int fd) { (void)fd; }
#endif

static int mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, int) : 0;
}

#define FDREF_OPEN(name, real)                                                  \
    int name(const char *path, int flags, ...) {                                \
        va_list ap;                                                             \
        va_start(ap, flags);                                                    \
        int mode = mode_arg(flags, ap);                                         \
        va_end(ap);                                                             \
        int fd = real(path, flags, mode);                                       \
        int saved = errno;                                                      \
        created(fd, path);                                                      \
        errno = saved;                                                          \
        return fd;                                                              \
    }

FDREF_OPEN(open, real_open)
FDREF_OPEN(open64, real_open64)

int close(int fd) {
    int saved = errno;
    released(fd);
    errno = saved;
    return real_close(fd);
}
