//! What a report knows before symbolization, gathered in a report child while it still holds
//! its copies of the program's fds: the kernel's list of open fds joined with fdguard's table,
//! and the header's facts. Creates no fd (see `inspect`).

use std::sync::atomic::Ordering;

use fdguard_core::call::Call;
use fdguard_core::kind::{FdKind, kind_from_link};
use fdguard_core::report::{EmfileStats, Limit, Observed, Report, iso8601_utc};
use fdguard_core::sockdesc::describe_socket;

use crate::emfile::GUARD;
use crate::inspect::{self, KernelFd};
use crate::origin::Detail;
use crate::os;
use crate::own::OWN;
use crate::table::{FdRecord, StackId};
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

/// Gathers the report's facts from the kernel and the table, without creating any fd.
pub fn gather(reason: Reason, pid: u32, cmdline: Vec<String>) -> Gathered {
    let (soft, hard) = os::process::nofile_limit();
    let (upto, batch) = tracker::probe_bounds();
    let open = inspect::probe_fds(upto, batch);
    let stale = closed_unseen(&open);
    let kernel: Vec<_> = open
        .into_iter()
        .filter(|fd| !OWN.contains(*fd))
        .map(inspect::describe)
        .filter(|k| k.link.is_some())
        .collect();
    let mut rows = observed(&kernel, |fd| TABLE.get(fd), os::clock::coarse_ns());
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
            reason: reason.name().into(),
            trigger_call,
            trigger_errno,
            time: iso8601_utc(os::clock::realtime_ns() / 1_000_000),
            limit: Limit::from_rlimit(soft, hard),
            missed_closes: COUNTERS.missed_closes.load(Ordering::Relaxed) + stale,
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

/// Table entries for fds the kernel no longer has (`open`, sorted): closes fdguard did not see
/// (a raw system call, a close inside libc). The program's table keeps them until the number
/// is reused, which counts them then (`Insert::Replaced`), so each is counted once.
fn closed_unseen(open: &[i32]) -> u64 {
    let mut n = 0;
    TABLE.for_each_open(0, i32::MAX, |fd, _| {
        if open.binary_search(&fd).is_err() && !OWN.contains(fd) {
            n += 1;
        }
    });
    n
}

/// Joins the kernel's list of open fds with the table. Every fd the kernel lists appears once:
/// tracked ones with their creation facts, the others as `untracked` with the kernel's name.
fn observed(
    kernel: &[KernelFd],
    tracked: impl Fn(i32) -> Option<FdRecord>,
    now_ns: u64,
) -> Vec<Row> {
    kernel
        .iter()
        .map(|k| {
            let kind_now = k
                .link
                .as_deref()
                .map(|l| kind_from_link(l.as_bytes(), k.is_dir));
            match tracked(k.fd) {
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
        .collect()
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
        }
    }

    #[test]
    fn joins_kernel_and_table_and_lists_untracked() {
        let kernel = vec![
            kfd(0, "/dev/pts/0"),
            kfd(3, "/etc/hosts"),
            kfd(4, "pipe:[77]"),
        ];
        let rows = observed(
            &kernel,
            |fd| (fd == 3).then(|| rec(Call::Fopen, Some("/etc/hosts"), Some(1), 1_000_000)),
            3_000_000,
        );
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
        );
        assert_eq!((rows[0].age_ms, rows[1].age_ms), (None, Some(2)));
    }

    #[test]
    fn shows_the_given_path_and_the_kernels_when_they_differ() {
        let rows = observed(
            &[kfd(5, "/work/data.txt (deleted)")],
            |_| Some(rec(Call::Open, Some("data.txt"), None, 0)),
            0,
        );
        assert_eq!(rows[0].desc, "data.txt (/work/data.txt (deleted))");
        let long = "/var/lib/postgresql/15/main/base/16384/2619";
        let truncated = observed(
            &[kfd(6, long)],
            |_| Some(rec(Call::Open, Some(long), None, 0)),
            0,
        );
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
        let rows = observed(&[k, unconnected], |_| None, 0);
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
}
