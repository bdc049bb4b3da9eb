/* Memory / report workload: many live fds from many distinct call stacks.
 *
 *   fdmem NPATHS PER_PATH [LINGER_S]
 *
 * Opens NPATHS * PER_PATH fds of /dev/null and keeps them open: PER_PATH fds
 * from each of NPATHS distinct call stacks (NPATHS <= 1024).  Path p walks 10
 * levels of two non-inlined functions, choosing at level l by bit l of p from
 * one of two call sites, so every path has its own sequence of return
 * addresses.  The program measures its own VmRSS before and after, prints
 *   rss_before_kb=1234 rss_kb=5678 nfds=100000 pid=42 ready
 * and then waits (for SIGUSR2 report requests sent by the harness, which is the
 * preload library's business) until killed or LINGER_S seconds (default 120)
 * have passed.  Exits 77 with a SKIP line if RLIMIT_NOFILE is too low. */
#include "common.h"

#include <fcntl.h>
#include <sys/resource.h>

#define LEVELS 10

static int *fds;
static long nfds;
static int per_path;
volatile long sink;

NOINLINE static void leaf(void)
{
    for (int i = 0; i < per_path; i++) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0)
            die("open /dev/null (fd #%ld)", nfds);
        fds[nfds++] = fd;
    }
}

NOINLINE static void walk_b(int level, unsigned path);

NOINLINE static void walk_a(int level, unsigned path)
{
    if (level == LEVELS) {
        leaf();
    } else if ((path >> level) & 1) {
        walk_b(level + 1, path);
    } else {
        walk_a(level + 1, path);
    }
    sink += level; /* not a tail call */
}

NOINLINE static void walk_b(int level, unsigned path)
{
    if (level == LEVELS) {
        leaf();
    } else if ((path >> level) & 1) {
        walk_b(level + 1, path);
    } else {
        walk_a(level + 1, path);
    }
    sink -= level;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    long npaths, linger = 120, before;
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s NPATHS PER_PATH [LINGER_S]\n", argv[0]);
        return 2;
    }
    npaths = parse_long(argv[1], "NPATHS", 1, 1L << LEVELS);
    per_path = (int)parse_long(argv[2], "PER_PATH", 1, 1000000);
    if (argc == 4)
        linger = parse_long(argv[3], "LINGER_S", 1, 3600);
    long want = npaths * per_path;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit");
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < want + 64) {
        printf("SKIP: RLIMIT_NOFILE is %ld, need at least %ld for %ld fds\n", (long)rl.rlim_cur,
               want + 64, want);
        return 77;
    }
    fds = malloc(sizeof *fds * (size_t)want);
    if (!fds)
        die("malloc");
    memset(fds, 0xff, sizeof *fds * (size_t)want); /* touch it now: not part of the delta */
    alarm((unsigned)linger + 60);
    before = vm_rss_kb();
    for (long p = 0; p < npaths; p++)
        walk_a(0, (unsigned)p);
    printf("rss_before_kb=%ld rss_kb=%ld nfds=%ld pid=%d ready\n", before, vm_rss_kb(), nfds,
           (int)getpid());
    fflush(stdout);
    alarm((unsigned)linger);
    for (;;)
        pause();
}
