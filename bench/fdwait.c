/* Time a report: send SIGUSR2 to PID and wait until the report appended to
 * FILE is complete.
 *
 *   fdwait PID FILE json|text MARKER TIMEOUT_S
 *
 * Complete means: the file grew, and ends with '\n'; for text, in addition the
 * last line starts with MARKER, in which every "{pid}" is replaced by PID.
 * (JSON reports are one line each, so the final '\n' ends the report.)
 * Prints "report_ms=12.3 bytes=4567" and exits 0 when complete.  If the file
 * stops growing for 2 s without being complete, or TIMEOUT_S passes, prints
 * "incomplete ..." and exits 1; exits 2 if the process is gone. */
#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>

static off_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return st.st_size;
}

/* Does the appended part [from, size) end in a complete report? */
static int complete(const char *path, off_t from, off_t size, int json, const char *marker)
{
    char buf[8192];
    off_t start = size - (off_t)sizeof buf + 1 > from ? size - (off_t)sizeof buf + 1 : from;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    if (fd < 0)
        return 0;
    n = pread(fd, buf, (size_t)(size - start), start);
    close(fd);
    if (n <= 0 || buf[n - 1] != '\n')
        return 0;
    if (json)
        return 1;
    buf[n - 1] = '\0';
    char *line = strrchr(buf, '\n');
    line = line ? line + 1 : buf;
    return strncmp(line, marker, strlen(marker)) == 0;
}

/* Alive and not a zombie (our parent may not have reaped it yet). */
static int alive(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kill(pid, 0) == 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* "pid (comm) S ..." */
    return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

int main(int argc, char **argv)
{
    char marker[512];
    const char *path, *tmpl;
    int json;
    pid_t pid;
    if (argc != 6) {
        fprintf(stderr, "usage: %s PID FILE json|text MARKER TIMEOUT_S\n", argv[0]);
        return 2;
    }
    pid = (pid_t)parse_long(argv[1], "PID", 1, 1L << 30);
    path = argv[2];
    json = strcmp(argv[3], "json") == 0;
    tmpl = argv[4];
    long timeout = parse_long(argv[5], "TIMEOUT_S", 1, 3600);
    /* marker with {pid} substituted */
    {
        size_t o = 0;
        for (const char *p = tmpl; *p && o < sizeof marker - 16;) {
            if (strncmp(p, "{pid}", 5) == 0) {
                o += (size_t)snprintf(marker + o, sizeof marker - o, "%d", (int)pid);
                p += 5;
            } else {
                marker[o++] = *p++;
            }
        }
        marker[o] = '\0';
    }
    off_t size0 = file_size(path), last = size0;
    if (size0 < 0)
        die("stat %s", path);
    uint64_t t0 = now_ns(), t_grow = t0;
    if (kill(pid, SIGUSR2) != 0)
        die("kill -USR2 %d", (int)pid);
    for (;;) {
        struct timespec ts = {0, 100000}; /* 0.1 ms */
        uint64_t t = now_ns();
        off_t size = file_size(path);
        if (size > last) {
            last = size;
            t_grow = t;
            if (complete(path, size0, size, json, marker)) {
                printf("report_ms=%.2f bytes=%ld\n", (double)(t - t0) / 1e6, (long)(size - size0));
                return 0;
            }
        }
        if (!alive(pid)) {
            printf("incomplete: process %d is gone after %.1f ms (%ld bytes)\n", (int)pid,
                   (double)(t - t0) / 1e6, (long)(last - size0));
            return 2;
        }
        if ((last > size0 && t - t_grow > 2000000000ull) || t - t0 > (uint64_t)timeout * 1000000000ull) {
            printf("incomplete: %s after %.1f ms (%ld bytes, last growth at %.1f ms)\n",
                   last > size0 ? "no end marker, stopped growing" : "nothing written",
                   (double)(t - t0) / 1e6, (long)(last - size0), (double)(t_grow - t0) / 1e6);
            return 1;
        }
        nanosleep(&ts, NULL);
    }
}
