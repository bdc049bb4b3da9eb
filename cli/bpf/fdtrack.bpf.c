// SPDX-License-Identifier: GPL-2.0
//
// fdguard's eBPF recorder (`fdguard attach PID` on a Go or static program; the command's
// src/ebpf loads it with aya). One raw tracepoint, sys_exit, filtered to one thread group:
//
// - a call that made fds: each new fd is recorded with the thread's user stack (the kernel
//   walks its frame pointers: Go keeps them on amd64), the thread and the time; EMFILE and
//   ENFILE are sent to the command (the first-EMFILE report). The user registers are those
//   of the call's entry until it returns, so the exit has the arguments and the same stack:
//   nothing is kept between entry and exit.
// - close and close_range: their fds are forgotten, but a number another thread was given
//   again in between (the task's fd table says it is open), whose entry is the new fd's.
//
// Why no sys_enter program, which would forget an fd before the kernel can reuse its number
// (the library's rule): a syscall tracepoint runs for every system call of every process of
// the host while it is attached. Measured here, a getppid loop: 77 ns a call, 105 ns with
// sys_exit alone, 140 ns with sys_enter too.
//
// A count of open fds is kept for the threshold report: the command sets it from /proc at the
// attach and again after what the count cannot follow (close_range, exec); a creation that
// reaches NOTIFY_AT tells the command once (it sets NOTIFY_AT again when it re-arms).
//
// The calls are the tracer's list (cli/src/trace/calls.rs) but recvmsg's SCM_RIGHTS fds,
// which stay `untracked`. x86-64 only: system call numbers and pt_regs are that ABI's.
//
// GPL: bpf_probe_read_* and bpf_get_stackid are GPL-only helpers.

#include <linux/bpf.h>
#include <asm/unistd.h>
#include <linux/fcntl.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;
typedef long long s64;

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   u64 flags) = (void *)BPF_FUNC_map_update_elem;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_delete_elem;
static u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static u64 (*bpf_get_current_pid_tgid)(void) = (void *)BPF_FUNC_get_current_pid_tgid;
static long (*bpf_get_stackid)(void *ctx, void *map, u64 flags) = (void *)BPF_FUNC_get_stackid;
static long (*bpf_probe_read_user)(void *dst, u32 size,
                                   const void *src) = (void *)BPF_FUNC_probe_read_user;
static long (*bpf_probe_read_kernel)(void *dst, u32 size,
                                     const void *src) = (void *)BPF_FUNC_probe_read_kernel;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, u64 size,
                                  u64 flags) = (void *)BPF_FUNC_ringbuf_output;
static long (*bpf_for_each_map_elem)(void *map, void *callback, void *ctx,
                                     u64 flags) = (void *)BPF_FUNC_for_each_map_elem;
static u64 (*bpf_get_current_task)(void) = (void *)BPF_FUNC_get_current_task;

char LICENSE[] SEC("license") = "GPL";

// The thread group recorded, and whether stacks are captured (FDGUARD_DEPTH 0: not): set by
// the loader before the programs load.
const volatile u32 target_tgid = 0;
const volatile u32 with_stacks = 1;

// x86-64 `struct pt_regs` (arch/x86/include/asm/ptrace.h), the user registers at the call.
struct user_regs {
    unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
    unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

// What is read of the kernel's own structures: the calling task's fd table. The offsets are
// the running kernel's (CO-RE: aya relocates them from /sys/kernel/btf/vmlinux).
struct file;
struct fdtable {
    unsigned int max_fds;
    struct file **fd;
} __attribute__((preserve_access_index));
struct files_struct {
    struct fdtable *fdt;
} __attribute__((preserve_access_index));
struct task_struct {
    struct files_struct *files;
} __attribute__((preserve_access_index));

// What is kept of an open fd (the command's ebpf/load.rs reads it: keep the layouts equal).
struct entry {
    u64 created_ns; // CLOCK_MONOTONIC (bpf_ktime_get_ns)
    s32 stack;      // in `stacks`; negative: none (stacks off, or the map's bucket was taken)
    u32 tid;
    u32 nr;         // the system call that made it
    u32 pad;
    u64 file;       // its `struct file` (0: not known, an fd open before the attach)
};

// What the command is told (ebpf/load.rs reads it): a creation failed with EMFILE or ENFILE
// (`arg0`: its first argument, an accept's listener), the next one succeeded (the end of the
// failures), a close_range ran (the count is made again), the threshold was reached.
enum event_kind { EV_FAILED = 1, EV_RECOVERED = 2, EV_RECOUNT = 3, EV_THRESHOLD = 4 };
struct event {
    u32 kind;
    u32 nr;
    s32 err;
    u32 tid;
    u64 arg0;
};

// `counts`: the fds open as far as the calls tell; EV_THRESHOLD once that reaches NOTIFY_AT
// (~0: not armed); whether the last creation failed.
enum count_index { OPEN = 0, NOTIFY_AT = 1, FAILING = 2, COUNTS };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536); // the loader sets it from the process's hard limit
    __uint(map_flags, BPF_F_NO_PREALLOC); // a limit of a million fds is not allocated ahead
    __type(key, s32);
    __type(value, struct entry);
} fds SEC(".maps");

// 64 frames: FDGUARD_DEPTH's most.
struct {
    __uint(type, BPF_MAP_TYPE_STACK_TRACE);
    __uint(max_entries, 8192);
    __uint(key_size, sizeof(u32));
    __uint(value_size, 64 * sizeof(u64));
} stacks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, COUNTS);
    __type(key, u32);
    __type(value, u64);
} counts SEC(".maps");

// A user register of the call, as saved at its entry.
#define REG(regs, name)                                                                      \
    ({                                                                                       \
        unsigned long v_ = 0;                                                                \
        bpf_probe_read_kernel(&v_, sizeof(v_), &(regs)->name);                               \
        v_;                                                                                  \
    })

#define EMFILE 24
#define ENFILE 23

static __attribute__((always_inline)) int ours(u32 *tid) {
    u64 id = bpf_get_current_pid_tgid();
    *tid = (u32)id;
    return (u32)(id >> 32) == target_tgid;
}

static __attribute__((always_inline)) void send(u32 kind, u32 nr, s32 err, u32 tid, u64 arg0) {
    struct event e = {.kind = kind, .nr = nr, .err = err, .tid = tid, .arg0 = arg0};
    bpf_ringbuf_output(&events, &e, sizeof(e), 0);
}

static __attribute__((always_inline)) u64 *count(u32 index) {
    return bpf_map_lookup_elem(&counts, &index);
}

static __attribute__((always_inline)) void counted(s64 delta, u32 nr, u32 tid) {
    u64 *open = count(OPEN), *notify_at = count(NOTIFY_AT), *failing = count(FAILING);
    if (!open || !notify_at || !failing)
        return;
    u64 now = __sync_fetch_and_add(open, delta) + delta;
    if (delta < 0)
        return;
    if (*failing) {
        *failing = 0;
        send(EV_RECOVERED, nr, 0, tid, 0);
    }
    if (now >= *notify_at) {
        *notify_at = ~0ULL; // once: the command arms it again
        send(EV_THRESHOLD, nr, 0, tid, now);
    }
}

// The file fd `fd` of the calling task is open on (its slot in the fd table), 0 if none.
static __attribute__((always_inline)) u64 file_of(u32 fd) {
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct files_struct *files = 0;
    struct fdtable *fdt = 0;
    struct file **slots = 0;
    struct file *file = 0;
    unsigned int max = 0;
    bpf_probe_read_kernel(&files, sizeof(files), &task->files);
    if (!files)
        return 0;
    bpf_probe_read_kernel(&fdt, sizeof(fdt), &files->fdt);
    if (!fdt)
        return 0;
    bpf_probe_read_kernel(&max, sizeof(max), &fdt->max_fds);
    bpf_probe_read_kernel(&slots, sizeof(slots), &fdt->fd);
    if (fd >= max || !slots)
        return 0;
    bpf_probe_read_kernel(&file, sizeof(file), &slots[fd]);
    return (u64)file;
}

static __attribute__((always_inline)) void record(s32 fd, struct entry *e) {
    if (fd < 0)
        return;
    e->file = file_of((u32)fd);
    bpf_map_update_elem(&fds, &fd, e, BPF_ANY);
}

// Forgets fd `*fd` after a close returned, unless its entry is of the file open with that
// number now: another thread made an fd with it between the close and this exit, and its
// exit recorded it. (A number taken again by a call not recorded, SCM_RIGHTS, is forgotten:
// `untracked`, never named after the closed fd's creation.)
static __attribute__((always_inline)) void forget_if_closed(void *map, s32 *fd) {
    struct entry *e = bpf_map_lookup_elem(map, fd);
    if (!e)
        return;
    u64 now = file_of((u32)*fd);
    if (!now || now != e->file)
        bpf_map_delete_elem(map, fd);
}

struct range {
    u32 first, last;
};

static long forget_in_range(void *map, s32 *fd, struct entry *e, struct range *r) {
    if ((u32)*fd >= r->first && (u32)*fd <= r->last)
        forget_if_closed(map, fd);
    return 0;
}

SEC("raw_tracepoint/sys_exit")
int fd_exit(struct bpf_raw_tracepoint_args *ctx) {
    u32 tid;
    if (!ours(&tid))
        return 0;
    struct user_regs *regs = (struct user_regs *)ctx->args[0];
    s64 ret = (s64)ctx->args[1];
    unsigned long nr = REG(regs, orig_ax);
    // Which register holds the fds' address for the calls that write two (pipe: di,
    // socketpair: r10), and whether the result is the fd.
    unsigned long pair_at = 0;
    switch (nr) {
    case __NR_close:
        if (ret == 0) {
            s32 fd = (s32)REG(regs, di);
            forget_if_closed(&fds, &fd);
            counted(-1, (u32)nr, tid);
        }
        return 0;
    case __NR_close_range:
        if (ret == 0) {
            struct range r = {.first = (u32)REG(regs, di), .last = (u32)REG(regs, si)};
            if (!(REG(regs, dx) & 4 /* CLOSE_RANGE_CLOEXEC */))
                bpf_for_each_map_elem(&fds, forget_in_range, &r, 0);
            send(EV_RECOUNT, (u32)nr, 0, tid, r.first);
        }
        return 0;
    case __NR_open: case __NR_openat: case __NR_openat2: case __NR_creat:
    case __NR_socket: case __NR_accept: case __NR_accept4: case __NR_dup: case __NR_dup3:
    case __NR_eventfd: case __NR_eventfd2: case __NR_epoll_create: case __NR_epoll_create1:
    case __NR_timerfd_create: case __NR_inotify_init: case __NR_inotify_init1:
    case __NR_fanotify_init: case __NR_memfd_create: case __NR_pidfd_open:
        break;
    case __NR_dup2:
        if ((s32)REG(regs, di) == (s32)REG(regs, si))
            return 0; // onto itself: nothing new
        break;
    case __NR_fcntl:
        if ((s32)REG(regs, si) != F_DUPFD && (s32)REG(regs, si) != F_DUPFD_CLOEXEC)
            return 0;
        break;
    case __NR_signalfd: case __NR_signalfd4:
        if ((s32)REG(regs, di) != -1)
            return 0; // a new mask for an existing signalfd
        break;
    case __NR_pipe: case __NR_pipe2:
        pair_at = REG(regs, di);
        break;
    case __NR_socketpair:
        pair_at = REG(regs, r10);
        break;
    default:
        return 0;
    }
    if (ret < 0) {
        u64 *failing = count(FAILING);
        if ((ret == -EMFILE || ret == -ENFILE) && failing) {
            *failing = 1;
            send(EV_FAILED, (u32)nr, (s32)-ret, tid, REG(regs, di));
        }
        return 0;
    }
    struct entry e = {.created_ns = bpf_ktime_get_ns(), .stack = -1, .tid = tid, .nr = (u32)nr};
    if (with_stacks)
        e.stack = (s32)bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
    if (!pair_at) {
        record((s32)ret, &e);
        counted(1, (u32)nr, tid);
        return 0;
    }
    s32 pair[2] = {-1, -1};
    if (bpf_probe_read_user(pair, sizeof(pair), (void *)pair_at) == 0) {
        record(pair[0], &e);
        record(pair[1], &e);
    }
    counted(2, (u32)nr, tid);
    return 0;
}
