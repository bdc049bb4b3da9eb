//! What a traced system call does to a process's fd table, from its number, its arguments and
//! its result: pure, so that every call is unit-tested without ptrace. The tracer asks
//! `at_entry` at the seccomp stop; a call that makes fds is then followed to its exit, where
//! `made` turns the result (and what the call wrote into the program's memory) into fds.
//!
//! The system calls traced are `TRACED` (and `fcntl` only for `FCNTL_TRACED`): the seccomp
//! filter is built from these lists, so that a call stops the program only when this module
//! knows what it means. Calls that make fds fdguard-core has no `Call` name for
//! (`memfd_secret`, `pidfd_getfd`, `userfaultfd`, `perf_event_open`, `io_uring_setup`,
//! `open_by_handle_at`, `open_tree`, `fsopen`, `fsmount`, `fspick`) are not traced: their fds
//! are listed as `untracked`, which is what they are.

use fdguard_core::call::Call;

/// Every system call the filter stops on (x86-64 numbers).
pub const TRACED: &[i64] = &[
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_creat,
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_eventfd,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    libc::SYS_timerfd_create,
    libc::SYS_signalfd,
    libc::SYS_signalfd4,
    libc::SYS_inotify_init,
    libc::SYS_inotify_init1,
    libc::SYS_fanotify_init,
    libc::SYS_memfd_create,
    libc::SYS_pidfd_open,
    libc::SYS_recvmsg,
    libc::SYS_recvmmsg,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_unshare,
];

/// The `fcntl` commands traced: the two that make an fd, and the one that sets close-on-exec.
/// Every other `fcntl` (Go's `F_GETFL`/`F_SETFL` on each new socket) runs without a stop.
pub const FCNTL_TRACED: &[i32] = &[libc::F_DUPFD, libc::F_DUPFD_CLOEXEC, libc::F_SETFD];

/// A system call stopped at its entry: its number and its six arguments.
#[derive(Clone, Copy, Debug)]
pub struct Syscall {
    pub nr: i64,
    pub args: [u64; 6],
}

/// A change to the table made before the call runs: fdguard forgets a released fd before the
/// kernel can give its number to another thread. A release that fails (EBADF) released
/// nothing the table had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Close(i32),
    /// `close_range(first, last, ...)`: the fds `first..=last` closed, or only marked
    /// close-on-exec; `unshare`: the caller's table is its own from now on.
    CloseRange {
        first: i32,
        last: i32,
        cloexec_only: bool,
        unshare: bool,
    },
    /// `fcntl(fd, F_SETFD, flags)`.
    SetCloexec {
        fd: i32,
        on: bool,
    },
    /// `unshare(CLONE_FILES)`: the caller's table is its own from now on (a copy).
    Unshare,
}

/// Whether the fds a call makes are close-on-exec: its flags say so, or (`openat2`) the
/// `open_how` it points to, read by the tracer at the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloexec {
    Is(bool),
    /// The address of an `open_how`, whose first field is the open flags.
    OpenHow(u64),
}

/// Where a call's fds are once it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Yields {
    /// The result is the fd.
    Result,
    /// Two fds written at this address (`pipe`, `socketpair`).
    Pair(u64),
    /// `recvmsg`: fds passed with `SCM_RIGHTS` in the control buffer of the `msghdr` here.
    Message(u64),
    /// `recvmmsg`: the same for each of the result's count of `mmsghdr`s here.
    Messages(u64),
}

/// A call that makes fds, seen at its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creation {
    pub call: Call,
    pub cloexec: Cloexec,
    pub yields: Yields,
}

/// What a traced call means at its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtEntry {
    /// Applied now; the call is not followed to its exit.
    Change(Change),
    /// Followed to its exit for the fds it makes.
    Creates(Creation),
    /// Nothing for the table (an fcntl command not traced, `dup2(fd, fd)`, a `signalfd` that
    /// changes an existing fd's mask).
    Nothing,
}

fn fd_arg(a: u64) -> i32 {
    a as u32 as i32
}

/// What the call `s` means for the table, at its entry.
// The patterns are libc's system call numbers, lower-case as the kernel names them.
#[allow(non_upper_case_globals)]
pub fn at_entry(s: &Syscall) -> AtEntry {
    use libc::*;
    let a = s.args;
    let flag = |bits: u64, bit: u64| bits & bit != 0;
    let o_cloexec = O_CLOEXEC as u64;
    let create = |call, cloexec: bool| {
        AtEntry::Creates(Creation {
            call,
            cloexec: Cloexec::Is(cloexec),
            yields: Yields::Result,
        })
    };
    let pair = |call, cloexec: bool, at: u64| {
        AtEntry::Creates(Creation {
            call,
            cloexec: Cloexec::Is(cloexec),
            yields: Yields::Pair(at),
        })
    };
    match s.nr {
        SYS_open => create(Call::Open, flag(a[1], o_cloexec)),
        SYS_openat => create(Call::Openat, flag(a[2], o_cloexec)),
        // fdguard-core has no `openat2` name; it opens as `openat` does.
        SYS_openat2 => AtEntry::Creates(Creation {
            call: Call::Openat,
            cloexec: Cloexec::OpenHow(a[2]),
            yields: Yields::Result,
        }),
        SYS_creat => create(Call::Creat, false),
        SYS_socket => create(Call::Socket, flag(a[1], SOCK_CLOEXEC as u64)),
        SYS_socketpair => pair(Call::Socketpair, flag(a[1], SOCK_CLOEXEC as u64), a[3]),
        SYS_accept => create(Call::Accept, false),
        SYS_accept4 => create(Call::Accept4, flag(a[3], SOCK_CLOEXEC as u64)),
        SYS_pipe => pair(Call::Pipe, false, a[0]),
        SYS_pipe2 => pair(Call::Pipe2, flag(a[1], o_cloexec), a[0]),
        SYS_dup => create(Call::Dup, false),
        // dup2 of an fd onto itself changes nothing (dup3 refuses it).
        SYS_dup2 if fd_arg(a[0]) == fd_arg(a[1]) => AtEntry::Nothing,
        SYS_dup2 => create(Call::Dup2, false),
        SYS_dup3 => create(Call::Dup3, flag(a[2], o_cloexec)),
        SYS_fcntl => match fd_arg(a[1]) {
            F_DUPFD => create(Call::Fcntl, false),
            F_DUPFD_CLOEXEC => create(Call::Fcntl, true),
            F_SETFD => AtEntry::Change(Change::SetCloexec {
                fd: fd_arg(a[0]),
                on: flag(a[2], FD_CLOEXEC as u64),
            }),
            _ => AtEntry::Nothing,
        },
        SYS_eventfd => create(Call::Eventfd, false),
        SYS_eventfd2 => create(Call::Eventfd, flag(a[1], o_cloexec)),
        SYS_epoll_create => create(Call::EpollCreate, false),
        SYS_epoll_create1 => create(Call::EpollCreate1, flag(a[0], o_cloexec)),
        SYS_timerfd_create => create(Call::TimerfdCreate, flag(a[1], o_cloexec)),
        // A signalfd given an fd changes that fd's mask and returns it.
        SYS_signalfd | SYS_signalfd4 if fd_arg(a[0]) != -1 => AtEntry::Nothing,
        SYS_signalfd => create(Call::Signalfd, false),
        SYS_signalfd4 => create(Call::Signalfd, flag(a[3], o_cloexec)),
        SYS_inotify_init => create(Call::InotifyInit, false),
        SYS_inotify_init1 => create(Call::InotifyInit1, flag(a[0], o_cloexec)),
        SYS_fanotify_init => create(Call::FanotifyInit, flag(a[0], FAN_CLOEXEC as u64)),
        SYS_memfd_create => create(Call::MemfdCreate, flag(a[1], MFD_CLOEXEC as u64)),
        // A pidfd is always close-on-exec.
        SYS_pidfd_open => create(Call::PidfdOpen, true),
        SYS_recvmsg => AtEntry::Creates(Creation {
            call: Call::Recvmsg,
            cloexec: Cloexec::Is(flag(a[2], MSG_CMSG_CLOEXEC as u64)),
            yields: Yields::Message(a[1]),
        }),
        SYS_recvmmsg => AtEntry::Creates(Creation {
            call: Call::Recvmmsg,
            cloexec: Cloexec::Is(flag(a[3], MSG_CMSG_CLOEXEC as u64)),
            yields: Yields::Messages(a[1]),
        }),
        SYS_close => AtEntry::Change(Change::Close(fd_arg(a[0]))),
        SYS_close_range => {
            // The range is of unsigned ints; fd numbers stop at i32::MAX.
            let clamp = |v: u64| (v as u32).min(i32::MAX as u32) as i32;
            AtEntry::Change(Change::CloseRange {
                first: clamp(a[0]),
                last: clamp(a[1]),
                cloexec_only: flag(a[2], CLOSE_RANGE_CLOEXEC as u64),
                unshare: flag(a[2], CLOSE_RANGE_UNSHARE as u64),
            })
        }
        SYS_unshare if flag(a[0], CLONE_FILES as u64) => AtEntry::Change(Change::Unshare),
        _ => AtEntry::Nothing,
    }
}

/// The name of the fds system call `nr` makes, for a recorder that keeps only the number (the
/// eBPF one, `crate::ebpf`, which records only the creations `at_entry` names: `fcntl`'s
/// `F_DUPFD`s, `signalfd` making a new fd, `dup2` onto another fd).
pub fn creator(nr: i64) -> Option<Call> {
    let args = [u64::MAX, libc::F_DUPFD as u64, 0, 0, 0, 0];
    match at_entry(&Syscall { nr, args }) {
        AtEntry::Creates(c) => Some(c.call),
        _ => None,
    }
}

/// `open_how.flags` (its first field, a u64) read from the program's memory: close-on-exec?
pub fn open_how_cloexec(bytes: &[u8]) -> bool {
    read_u64(bytes, 0).is_some_and(|f| f & libc::O_CLOEXEC as u64 != 0)
}

/// The fds a call made, from its result (a negative result is an error: none) and, for the
/// calls that write them into the program's memory, what `read(addr, len)` finds there after
/// the call. A read that fails gives no fds: they are then `untracked`.
pub fn made(
    yields: Yields,
    result: i64,
    read: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>,
) -> Vec<i32> {
    if result < 0 {
        return Vec::new();
    }
    match yields {
        Yields::Result => i32::try_from(result).into_iter().collect(),
        Yields::Pair(at) => read(at, 8)
            .map(|b| {
                [read_i32(&b, 0), read_i32(&b, 4)]
                    .into_iter()
                    .flatten()
                    .collect()
            })
            .unwrap_or_default(),
        Yields::Message(at) => message_fds(at, read),
        Yields::Messages(at) => (0..result.min(MAX_MESSAGES) as u64)
            .flat_map(|i| message_fds(at + i * MMSGHDR_SIZE, read))
            .collect(),
    }
}

/// x86-64 `struct msghdr`: `msg_control` and `msg_controllen` (which the kernel sets to the
/// length it wrote) at these offsets; `struct mmsghdr` is a msghdr and a length, padded.
const MSGHDR_SIZE: usize = 56;
const MSG_CONTROL: usize = 32;
const MSG_CONTROLLEN: usize = 40;
const MMSGHDR_SIZE: u64 = 64;
/// `recvmmsg` messages looked at (its `vlen` is capped at 1024 by the kernel, UIO_MAXIOV).
const MAX_MESSAGES: i64 = 1024;
/// Control bytes read per message: SCM_RIGHTS carries at most 253 fds (SCM_MAX_FD).
const MAX_CONTROL: usize = 4096;

fn message_fds(at: u64, read: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>) -> Vec<i32> {
    let Some(hdr) = read(at, MSGHDR_SIZE) else {
        return Vec::new();
    };
    let (Some(control), Some(len)) = (read_u64(&hdr, MSG_CONTROL), read_u64(&hdr, MSG_CONTROLLEN))
    else {
        return Vec::new();
    };
    let len = (len as usize).min(MAX_CONTROL);
    if control == 0 || len == 0 {
        return Vec::new();
    }
    read(control, len)
        .map(|c| scm_rights(&c))
        .unwrap_or_default()
}

/// The fds of every `SCM_RIGHTS` message in a control buffer (`struct cmsghdr`s: a u64
/// length counting the 16-byte header, level, type, data; each aligned to 8 bytes).
pub fn scm_rights(control: &[u8]) -> Vec<i32> {
    const HEADER: usize = 16;
    let mut fds = Vec::new();
    let mut at = 0;
    while let Some(len) = read_u64(control, at) {
        let len = len as usize;
        if len < HEADER || at + len > control.len() {
            break;
        }
        let level = read_i32(control, at + 8);
        let kind = read_i32(control, at + 12);
        if level == Some(libc::SOL_SOCKET) && kind == Some(libc::SCM_RIGHTS) {
            fds.extend(
                (at + HEADER..at + len)
                    .step_by(4)
                    .filter_map(|i| read_i32(control, i)),
            );
        }
        at += len.next_multiple_of(8);
    }
    fds
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(nr: i64, args: &[u64]) -> AtEntry {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        at_entry(&Syscall { nr, args: a })
    }

    #[test]
    fn creators_named_by_number() {
        assert_eq!(creator(libc::SYS_openat), Some(Call::Openat));
        assert_eq!(creator(libc::SYS_fcntl), Some(Call::Fcntl));
        assert_eq!(creator(libc::SYS_signalfd4), Some(Call::Signalfd));
        assert_eq!(creator(libc::SYS_dup2), Some(Call::Dup2));
        assert_eq!(creator(libc::SYS_close), None);
        assert_eq!(creator(libc::SYS_read), None);
    }

    fn creates(e: AtEntry) -> Creation {
        match e {
            AtEntry::Creates(c) => c,
            other => panic!("not a creation: {other:?}"),
        }
    }

    #[test]
    fn opens_and_sockets_with_their_close_on_exec_flag() {
        let cloexec = libc::O_CLOEXEC as u64;
        let c = creates(call(libc::SYS_openat, &[0, 0x1000, cloexec | 2]));
        assert_eq!(c.call, Call::Openat);
        assert_eq!((c.cloexec, c.yields), (Cloexec::Is(true), Yields::Result));
        assert_eq!(
            creates(call(libc::SYS_open, &[0x1000, 0])).cloexec,
            Cloexec::Is(false)
        );
        assert_eq!(
            creates(call(libc::SYS_openat2, &[0, 1, 0x2000, 24])).cloexec,
            Cloexec::OpenHow(0x2000)
        );
        let sock = libc::SOCK_STREAM as u64 | libc::SOCK_CLOEXEC as u64;
        let c = creates(call(libc::SYS_socket, &[2, sock, 0]));
        assert_eq!((c.call, c.cloexec), (Call::Socket, Cloexec::Is(true)));
        let c = creates(call(libc::SYS_accept4, &[3, 0, 0, 0]));
        assert_eq!((c.call, c.cloexec), (Call::Accept4, Cloexec::Is(false)));
        assert_eq!(
            creates(call(libc::SYS_memfd_create, &[0x10, 1])).cloexec,
            Cloexec::Is(true)
        );
        let mut how = (libc::O_CLOEXEC as u64).to_ne_bytes().to_vec();
        how.extend([0; 16]);
        assert!(open_how_cloexec(&how) && !open_how_cloexec(&[0; 24]));
    }

    #[test]
    fn pairs_are_read_from_memory() {
        let c = creates(call(libc::SYS_pipe2, &[0x7000, libc::O_CLOEXEC as u64]));
        assert_eq!(
            (c.call, c.cloexec, c.yields),
            (Call::Pipe2, Cloexec::Is(true), Yields::Pair(0x7000))
        );
        let c = creates(call(libc::SYS_socketpair, &[1, 1, 0, 0x7100]));
        assert_eq!(c.yields, Yields::Pair(0x7100));
        let mut mem = |addr: u64, len: usize| {
            assert_eq!((addr, len), (0x7000, 8));
            let mut b = 5i32.to_ne_bytes().to_vec();
            b.extend(6i32.to_ne_bytes());
            Some(b)
        };
        assert_eq!(made(Yields::Pair(0x7000), 0, &mut mem), [5, 6]);
        assert!(made(Yields::Pair(0x7000), -24, &mut mem).is_empty());
        assert!(made(Yields::Pair(0x7000), 0, &mut |_, _| None).is_empty());
        assert_eq!(made(Yields::Result, 9, &mut |_, _| None), [9]);
    }

    #[test]
    fn dups_fcntl_and_signalfd() {
        assert_eq!(call(libc::SYS_dup2, &[4, 4]), AtEntry::Nothing);
        assert_eq!(creates(call(libc::SYS_dup2, &[4, 7])).call, Call::Dup2);
        let c = creates(call(libc::SYS_dup3, &[4, 7, libc::O_CLOEXEC as u64]));
        assert_eq!((c.call, c.cloexec), (Call::Dup3, Cloexec::Is(true)));
        let fcntl = |cmd: i32, arg: u64| call(libc::SYS_fcntl, &[5, cmd as u64, arg]);
        assert_eq!(
            creates(fcntl(libc::F_DUPFD_CLOEXEC, 10)).cloexec,
            Cloexec::Is(true)
        );
        assert_eq!(creates(fcntl(libc::F_DUPFD, 10)).call, Call::Fcntl);
        assert_eq!(
            fcntl(libc::F_SETFD, libc::FD_CLOEXEC as u64),
            AtEntry::Change(Change::SetCloexec { fd: 5, on: true })
        );
        assert_eq!(
            fcntl(libc::F_SETFD, 0),
            AtEntry::Change(Change::SetCloexec { fd: 5, on: false })
        );
        assert_eq!(fcntl(libc::F_GETFL, 0), AtEntry::Nothing);
        let minus_one = u64::from(u32::MAX);
        assert_eq!(
            creates(call(libc::SYS_signalfd4, &[minus_one, 0, 8, 0])).call,
            Call::Signalfd
        );
        assert_eq!(call(libc::SYS_signalfd4, &[6, 0, 8, 0]), AtEntry::Nothing);
    }

    #[test]
    fn closes_and_ranges() {
        assert_eq!(
            call(libc::SYS_close, &[7]),
            AtEntry::Change(Change::Close(7))
        );
        assert_eq!(
            call(libc::SYS_close_range, &[3, u64::from(u32::MAX), 0]),
            AtEntry::Change(Change::CloseRange {
                first: 3,
                last: i32::MAX,
                cloexec_only: false,
                unshare: false
            })
        );
        assert_eq!(
            call(
                libc::SYS_close_range,
                &[3, 9, libc::CLOSE_RANGE_CLOEXEC as u64]
            ),
            AtEntry::Change(Change::CloseRange {
                first: 3,
                last: 9,
                cloexec_only: true,
                unshare: false
            })
        );
        assert_eq!(call(libc::SYS_read, &[3, 0, 0]), AtEntry::Nothing);
        let files = libc::CLONE_FILES as u64;
        assert_eq!(
            call(libc::SYS_unshare, &[files]),
            AtEntry::Change(Change::Unshare)
        );
        assert_eq!(
            call(libc::SYS_unshare, &[libc::CLONE_NEWNS as u64]),
            AtEntry::Nothing
        );
    }

    /// A control buffer of one SCM_RIGHTS message carrying `fds`, after a message of another
    /// type.
    fn control(fds: &[i32]) -> Vec<u8> {
        let mut c = Vec::new();
        // SCM_CREDENTIALS: 12 bytes of data, padded to 8.
        c.extend(28u64.to_ne_bytes());
        c.extend(libc::SOL_SOCKET.to_ne_bytes());
        c.extend(libc::SCM_CREDENTIALS.to_ne_bytes());
        c.extend([0; 16]);
        c.extend((16 + 4 * fds.len() as u64).to_ne_bytes());
        c.extend(libc::SOL_SOCKET.to_ne_bytes());
        c.extend(libc::SCM_RIGHTS.to_ne_bytes());
        for fd in fds {
            c.extend(fd.to_ne_bytes());
        }
        c
    }

    #[test]
    fn fds_passed_by_recvmsg() {
        assert_eq!(scm_rights(&control(&[8, 9, 10])), [8, 9, 10]);
        assert!(scm_rights(&[1, 2, 3]).is_empty());
        let c = creates(call(libc::SYS_recvmsg, &[3, 0x5000, 0x4000_0000]));
        assert_eq!(
            (c.call, c.cloexec, c.yields),
            (Call::Recvmsg, Cloexec::Is(true), Yields::Message(0x5000))
        );
        let ctl = control(&[11]);
        let mut mem = |addr: u64, len: usize| -> Option<Vec<u8>> {
            match addr {
                0x5000 | 0x5040 => {
                    let mut h = vec![0u8; MSGHDR_SIZE];
                    h[MSG_CONTROL..MSG_CONTROL + 8].copy_from_slice(&0x9000u64.to_ne_bytes());
                    h[MSG_CONTROLLEN..MSG_CONTROLLEN + 8]
                        .copy_from_slice(&(ctl.len() as u64).to_ne_bytes());
                    Some(h)
                }
                0x9000 => Some(ctl[..len].to_vec()),
                _ => None,
            }
        };
        assert_eq!(made(Yields::Message(0x5000), 40, &mut mem), [11]);
        assert_eq!(made(Yields::Messages(0x5000), 2, &mut mem), [11, 11]);
        assert!(made(Yields::Message(0x6000), 40, &mut mem).is_empty());
    }
}
