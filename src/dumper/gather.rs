//! What a report knows before symbolization, gathered in a report child while it still holds
//! its copies of the program's fds: the kernel's list of open fds joined with fdguard's table,
//! and the header's facts. Creates no fd (see `inspect`).
//!
//! # A true snapshot
//! The copy's fd table and its memory (fdguard's table) are copied by one `clone`, the fds a
//! moment before the memory, while the program's other threads go on: an fd closed and its
//! number reused in between would be described by the kernel as the old one and by the table
//! as the new one. So every entry is checked against the kernel before it names an fd's
//! creator (`matches`): an entry written since the copy began (its report epoch is the copy's
//! or later: see `tracker::REPORT_EPOCH`) must show that it is this fd (the same file name,
//! the same socket family), else the fd is listed as `untracked`;
//! and an entry of another kind than the kernel's fd (`kinds_agree`) is one whose close
//! fdguard never saw (a raw system call, io_uring): the fd is `untracked` and the close counted
//! as missed.

use std::sync::atomic::Ordering;

use fdguard_core::call::Call;
use fdguard_core::kind::{FdKind, kind_from_link, kinds_agree};
use fdguard_core::report::{EmfileStats, Limit, Observed, Report, iso8601_utc};
use fdguard_core::sockdesc::describe_socket;

use crate::child;
use crate::emfile::GUARD;
use crate::inspect::{self, KernelFd};
use crate::origin::Detail;
use crate::os;
use crate::own::OWN;
use crate::runtime;
use crate::table::{EPOCHS, FdRecord, StackId};
use crate::tracker::{self, BAD_CLOSES, COUNTERS, TABLE};
use crate::trigger::Reason;

/// One open fd as the report child sees it.
pub type Row = Observed<StackId>;

/// What a report knows before symbolization: gathered while the child still has its copies of
/// the program's fds. `report` has every fact but the fds, which `rows` holds until their
/// stacks are resolved.
pub struct Gathered {
    pub reason: Reason,
    pub report: Report,
    pub rows: Vec<Row>,
}

/// Gathers the report's facts from the kernel and the table, without creating any fd. The
/// process was copied in report epoch `epoch`.
pub fn gather(reason: Reason, pid: u32, cmdline: Vec<String>, epoch: u16) -> Gathered {
    let (soft, hard) = os::process::nofile_limit();
    let (upto, batch) = tracker::probe_bounds();
    let open = inspect::probe_fds(upto, batch);
    let since = Since { epoch };
    let unseen = closed_unseen(&open, since);
    let kernel: Vec<_> = open
        .into_iter()
        .filter(|fd| !OWN.contains(*fd) && Some(*fd) != child::own_fd())
        .map(inspect::describe)
        .filter(|k| k.link.is_some())
        .collect();
    let (mut rows, stale) = observed(&kernel, |fd| TABLE.get(fd), os::clock::coarse_ns(), since);
    if reason == Reason::Exit {
        // Leaks at exit: what the program opened itself and did not close.
        rows.retain(|r| !r.call.predates_fdguard() && r.fd > 2);
    }
    let (trigger_call, trigger_errno) = if reason == Reason::Emfile {
        let (call, errno) = tracker::emfile_trigger();
        let errno = if errno == libc::ENFILE {
            "ENFILE"
        } else {
            "EMFILE"
        };
        (Some(call.name().into()), Some(errno.into()))
    } else {
        (None, None)
    };
    let guard = GUARD.totals();
    Gathered {
        reason,
        report: Report {
            pid,
            cmdline,
            runtime: runtime::header(),
            reason: reason.name().into(),
            trigger_call,
            trigger_errno,
            time: iso8601_utc(os::clock::realtime_ns() / 1_000_000),
            limit: Limit::from_rlimit(soft, hard),
            missed_closes: COUNTERS.missed_closes.load(Ordering::Relaxed) + unseen + stale,
            skipped: COUNTERS.skipped.load(Ordering::Relaxed),
            emfile: EmfileStats {
                accept_failures: guard.failures,
                paused_ms: guard.paused_ns / 1_000_000,
                shed: guard.shed,
            },
            bad_closes: BAD_CLOSES.total(),
            ..Report::default()
        },
        rows,
    }
}

/// The report epoch the process was copied in.
#[derive(Clone, Copy, Debug)]
struct Since {
    epoch: u16,
}

impl Since {
    /// Whether an entry of report epoch `epoch` may have been written after the copy's fds
    /// were: the copy's epoch or later (within half the epochs a slot tells apart; an entry
    /// older than that by a whole turn is taken as newer, and checked).
    fn may_be_newer(&self, epoch: u16) -> bool {
        epoch.wrapping_sub(self.epoch) % EPOCHS < EPOCHS / 2
    }
}

/// Table entries for fds the kernel no longer has (`open`, sorted): closes fdguard did not see
/// (a raw system call, a close inside libc). The program's table keeps them until the number
/// is reused, which counts them then (`Insert::Replaced`), so each is counted once. Entries
/// written while the process was copied may be of fds the copy does not have: not counted.
fn closed_unseen(open: &[i32], since: Since) -> u64 {
    let mut n = 0;
    TABLE.for_each_open(0, i32::MAX, |fd, rec| {
        if open.binary_search(&fd).is_err() && !OWN.contains(fd) && !since.may_be_newer(rec.epoch) {
            n += 1;
        }
    });
    n
}

/// Whether a table entry describes the fd the kernel listed (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    Belongs,
    /// Another kind: its close was never seen.
    Stale,
    /// Written while the process was copied, and not shown to be this fd.
    Unsure,
}

fn matches(k: &KernelFd, kind_now: Option<FdKind>, rec: &FdRecord, since: Since) -> Match {
    if let Some(now) = kind_now
        && !kinds_agree(rec.kind, now)
    {
        return Match::Stale;
    }
    // Entries of fds found open when fdguard started or attached are written before any
    // report can be asked for.
    if rec.call.predates_fdguard() || !since.may_be_newer(rec.epoch) {
        return Match::Belongs;
    }
    let same = match Detail::unpack(rec.detail) {
        Detail::Path(len) => k
            .link
            .as_deref()
            .is_some_and(|link| same_file_name(&rec.path.text(len), link)),
        Detail::Socket { domain, .. } => k
            .socket
            .as_ref()
            .is_some_and(|s| same_family(domain, &s.proto)),
        _ => false,
    };
    if same { Match::Belongs } else { Match::Unsure }
}

/// Whether the path a program gave (maybe relative, maybe only its end, `…`) and the kernel's
/// path of an fd end in the same name.
fn same_file_name(given: &str, link: &str) -> bool {
    let link = link.strip_suffix(" (deleted)").unwrap_or(link);
    match given.strip_prefix('…') {
        Some(tail) => link.ends_with(tail),
        None => {
            let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
            !given.is_empty() && name(given) == name(link)
        }
    }
}

/// Whether a socket made in address family `domain` is the kind of socket the kernel describes
/// with `proto` (`inspect`'s names).
fn same_family(domain: u16, proto: &str) -> bool {
    match i32::from(domain) {
        libc::AF_INET => matches!(proto, "tcp" | "udp" | "ip"),
        libc::AF_INET6 => matches!(proto, "tcp6" | "udp6" | "ip6"),
        libc::AF_UNIX => proto == "unix",
        libc::AF_NETLINK => proto == "netlink",
        libc::AF_PACKET => proto == "packet",
        other => proto == format!("family {other}"),
    }
}

/// Joins the kernel's list of open fds with the table. Every fd the kernel lists appears once:
/// tracked ones with their creation facts, the others as `untracked` with the kernel's name.
/// Also returns how many entries were stale (closes fdguard did not see).
fn observed(
    kernel: &[KernelFd],
    tracked: impl Fn(i32) -> Option<FdRecord>,
    now_ns: u64,
    since: Since,
) -> (Vec<Row>, u64) {
    let mut stale = 0;
    let rows = kernel
        .iter()
        .map(|k| {
            let kind_now = k
                .link
                .as_deref()
                .map(|l| kind_from_link(l.as_bytes(), k.is_dir));
            let rec = tracked(k.fd).filter(|rec| match matches(k, kind_now, rec, since) {
                Match::Belongs => true,
                Match::Stale => {
                    stale += 1;
                    false
                }
                Match::Unsure => false,
            });
            match rec {
                Some(rec) => {
                    let detail = Detail::unpack(rec.detail);
                    let path = match detail {
                        Detail::Path(len) => Some(rec.path.text(len)),
                        _ => None,
                    };
                    let kind = kind_now.unwrap_or(rec.kind);
                    Row {
                        fd: k.fd,
                        kind,
                        desc: describe(k, kind, rec.call, detail, path.as_deref()),
                        call: rec.call,
                        age_ms: rec
                            .call
                            .age_known()
                            .then(|| now_ns.saturating_sub(rec.born_ns) / 1_000_000),
                        tid: (rec.tid != 0).then_some(rec.tid),
                        stack: rec.stack,
                        socket: k.socket.clone(),
                        kernel_path: kernel_path(k, kind),
                        path,
                        stream: rec.stream,
                    }
                }
                None => {
                    let kind = kind_now.unwrap_or(FdKind::Other);
                    Row {
                        fd: k.fd,
                        kind,
                        desc: describe(k, kind, Call::Untracked, Detail::None, None),
                        call: Call::Untracked,
                        age_ms: None,
                        tid: None,
                        stack: None,
                        socket: k.socket.clone(),
                        kernel_path: kernel_path(k, kind),
                        path: None,
                        stream: false,
                    }
                }
            }
        })
        .collect();
    (rows, stale)
}

/// Where a file or directory is, as the kernel says (the path the program gave may be
/// relative, or only its end kept).
fn kernel_path(k: &KernelFd, kind: FdKind) -> Option<String> {
    matches!(kind, FdKind::File | FdKind::Dir)
        .then(|| k.link.clone())
        .flatten()
}

/// The description column: what a reader needs to recognise the fd.
fn describe(k: &KernelFd, kind: FdKind, call: Call, detail: Detail, path: Option<&str>) -> String {
    if let Some(s) = &k.socket {
        return describe_socket(s);
    }
    let link = k.link.as_deref();
    let mut d = match (kind, path, link) {
        (FdKind::Pipe, _, Some(l)) => match k.pipe_end {
            Some(end) => format!("{l} {end}"),
            None => l.to_string(),
        },
        // Only the end of a long path was kept: the kernel's full path says it all.
        (_, Some(p), Some(l)) if p.strip_prefix('…').is_some_and(|t| l.ends_with(t)) => {
            l.to_string()
        }
        (_, Some(p), Some(l)) if p != l => format!("{p} ({l})"),
        (_, Some(p), _) => p.to_string(),
        (_, None, Some(l)) => l.to_string(),
        (_, None, None) => "?".to_string(),
    };
    match (call, detail) {
        (Call::Popen, _) => {
            if let Some(p) = path {
                d = format!(
                    "{} {} (popen \"{p}\")",
                    link.unwrap_or("pipe"),
                    k.pipe_end.unwrap_or("")
                );
            }
        }
        (_, Detail::Pid(pid)) => d.push_str(&format!(" (pid {pid})")),
        _ => {}
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::PathTail;
    use fdguard_core::sockdesc::SocketDesc;

    /// A copy made after every entry of a test was written (in epoch 0).
    const LONG_AGO: Since = Since { epoch: 1 };

    fn kfd(fd: i32, link: &str) -> KernelFd {
        KernelFd {
            fd,
            link: Some(link.to_string()),
            ..Default::default()
        }
    }

    fn rec(call: Call, path: Option<&str>, stack: Option<u32>, born_ns: u64) -> FdRecord {
        let (tail, detail) = match path {
            Some(p) => {
                let (t, n) = PathTail::of(p.as_bytes());
                (t, Detail::Path(n))
            }
            None => (PathTail::default(), Detail::None),
        };
        FdRecord {
            call,
            kind: call.default_kind(),
            stream: false,
            tid: 11,
            stack: stack.map(StackId),
            born_ns,
            detail: detail.pack(),
            path: tail,
            epoch: 0,
        }
    }

    #[test]
    fn joins_kernel_and_table_and_lists_untracked() {
        let kernel = vec![
            kfd(0, "/dev/pts/0"),
            kfd(3, "/etc/hosts"),
            kfd(4, "pipe:[77]"),
        ];
        let (rows, stale) = observed(
            &kernel,
            |fd| (fd == 3).then(|| rec(Call::Fopen, Some("/etc/hosts"), Some(1), 1_000_000)),
            3_000_000,
            LONG_AGO,
        );
        assert_eq!(stale, 0);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].call, Call::Untracked);
        assert_eq!(rows[0].kind, FdKind::Pty);
        assert_eq!(rows[1].desc, "/etc/hosts");
        assert_eq!(rows[1].kernel_path.as_deref(), Some("/etc/hosts"));
        assert_eq!(rows[1].age_ms, Some(2));
        assert_eq!(rows[1].tid, Some(11));
        assert_eq!(rows[2].kind, FdKind::Pipe);
        assert_eq!(rows[2].desc, "pipe:[77]");
        assert_eq!(rows[2].kernel_path, None);
    }

    #[test]
    fn the_age_of_an_fd_open_before_an_attach_is_unknown() {
        let kernel = [kfd(3, "/etc/hosts"), kfd(4, "/etc/hosts")];
        let rows = observed(
            &kernel,
            |fd| {
                let call = if fd == 3 {
                    Call::BeforeAttach
                } else {
                    Call::Inherited
                };
                Some(rec(call, None, None, 1_000_000))
            },
            3_000_000,
            LONG_AGO,
        )
        .0;
        assert_eq!((rows[0].age_ms, rows[1].age_ms), (None, Some(2)));
    }

    #[test]
    fn shows_the_given_path_and_the_kernels_when_they_differ() {
        let rows = observed(
            &[kfd(5, "/work/data.txt (deleted)")],
            |_| Some(rec(Call::Open, Some("data.txt"), None, 0)),
            0,
            LONG_AGO,
        )
        .0;
        assert_eq!(rows[0].desc, "data.txt (/work/data.txt (deleted))");
        let long = "/var/lib/postgresql/15/main/base/16384/2619";
        let truncated = observed(
            &[kfd(6, long)],
            |_| Some(rec(Call::Open, Some(long), None, 0)),
            0,
            LONG_AGO,
        )
        .0;
        assert_eq!(truncated[0].desc, long);
    }

    #[test]
    fn describes_sockets_by_state() {
        let mut k = kfd(6, "socket:[1]");
        k.socket = Some(SocketDesc {
            proto: "tcp".into(),
            sock_type: "stream".into(),
            local: Some("127.0.0.1:9999".into()),
            peer: Some("127.0.0.1:40000".into()),
            tcp_state: Some("CLOSE_WAIT".into()),
        });
        let mut unconnected = kfd(7, "socket:[2]");
        unconnected.socket = Some(SocketDesc {
            proto: "tcp".into(),
            sock_type: "stream".into(),
            local: Some("0.0.0.0:0".into()),
            peer: None,
            tcp_state: Some("CLOSE".into()),
        });
        let rows = observed(&[k, unconnected], |_| None, 0, LONG_AGO).0;
        assert_eq!(
            rows[0].desc,
            "tcp 127.0.0.1:9999 -> 127.0.0.1:40000 CLOSE_WAIT"
        );
        assert_eq!(
            rows[0].socket.as_ref().unwrap().tcp_state.as_deref(),
            Some("CLOSE_WAIT")
        );
        assert_eq!(rows[1].desc, "tcp unconnected (CLOSE)");
    }

    /// A socket's number closed and reused for a file behind fdguard's back (raw system
    /// calls): not the socket's creator, and a missed close.
    #[test]
    fn an_entry_of_another_kind_is_a_missed_close() {
        let (rows, stale) = observed(
            &[kfd(11, "/etc/group")],
            |_| Some(rec(Call::Socket, None, Some(3), 0)),
            0,
            LONG_AGO,
        );
        assert_eq!(
            (rows[0].call, rows[0].stack, stale),
            (Call::Untracked, None, 1)
        );
        assert_eq!(rows[0].desc, "/etc/group");
    }

    /// Entries written while the process was copied name an fd only when they show it is
    /// that fd: the same file name, the same socket family.
    #[test]
    fn entries_written_during_the_copy_must_show_they_are_that_fd() {
        // Entries written in the copy's epoch (0), and one before it.
        let copied = Since { epoch: 0 };
        let mut sock = kfd(5, "socket:[9]");
        sock.socket = Some(SocketDesc {
            proto: "unix".into(),
            sock_type: "stream".into(),
            ..Default::default()
        });
        let kernel = [
            kfd(3, "/tmp/storm/f6"),
            kfd(4, "/tmp/storm/f7"),
            sock,
            kfd(6, "pipe:[8]"),
            kfd(7, "/tmp/storm/f1"),
        ];
        let socket = |domain: i32| {
            let mut r = rec(Call::Socket, None, Some(2), 9_000_000);
            r.detail = Detail::Socket {
                domain: domain as u16,
                ty: libc::SOCK_STREAM as u32,
                protocol: 0,
            }
            .pack();
            r
        };
        let (rows, stale) = observed(
            &kernel,
            |fd| match fd {
                3 => Some(rec(Call::Open, Some("/dev/null"), Some(1), 9_000_000)),
                4 => Some(rec(Call::Open, Some("/tmp/storm/f7"), Some(1), 9_000_000)),
                5 => Some(socket(libc::AF_UNIX)),
                6 => Some(rec(Call::Pipe2, None, Some(1), 9_000_000)),
                // Written an epoch before the copy: it was there.
                _ => Some(FdRecord {
                    epoch: EPOCHS - 1,
                    ..rec(Call::Open, Some("/dev/null"), Some(1), 1_000_000)
                }),
            },
            12_000_000,
            copied,
        );
        let calls: Vec<Call> = rows.iter().map(|r| r.call).collect();
        assert_eq!(
            calls,
            [
                Call::Untracked,
                Call::Open,
                Call::Socket,
                Call::Untracked,
                Call::Open
            ]
        );
        assert_eq!(rows[0].desc, "/tmp/storm/f6", "no other fd's path");
        assert_eq!(stale, 0, "not missed closes: the copy was taken mid-change");
        let (rows, _) = observed(&kernel[2..3], |_| Some(socket(libc::AF_INET)), 0, copied);
        assert_eq!(rows[0].call, Call::Untracked);
    }
}
