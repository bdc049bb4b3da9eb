//! A traced program's reports: the fds a thread of it has open (read from `/proc`; for the exit
//! report while its last thread is stopped before exiting), joined with the tracer's table, made into
//! fdguard-core's `Report` as the library makes its own (`Report::fill`, the same rows, the
//! same exit rules: fds 0-2 and inherited ones are not leaks, `FDGUARD_IGNORE` suppresses),
//! and written where the run options say.

use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fdguard_core::call::Call;
use fdguard_core::config::{Config, Format, ReportDest, expand_report_path};
use fdguard_core::kind::{FdKind, kinds_agree};
use fdguard_core::report::{EmfileStats, Observed, Report, is_suppressed, iso8601_utc, text};
use fdguard_core::snapshot::FdEntry;

use super::interned::Interned;
use super::table::{StackKey, Table};
use crate::fail::Failure;
use crate::fds::read_fds;
use crate::os::FdDir;
use crate::target::Target;

/// An open fd as the tracer knows it.
type Row = Observed<StackKey>;

/// What a report is made of: a thread of the process reported on and its table; its fds are
/// what `/proc/TID/fd` lists (a traced process's leader may have exited, another thread still
/// holding the table).
pub struct View<'a> {
    pub tid: i32,
    pub tgid: i32,
    pub table: &'a Table,
    /// What the table's stack keys name.
    pub stacks: &'a Interned,
    /// The report's `recorder` (`ebpf`; none for the tracer).
    pub recorder: Option<&'static str>,
}

/// Why a report is made: its `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    Exit,
    /// Asked for (`fdguard report`, or the tracer's request signal).
    Signal,
    Threshold,
    /// A creation failed with `errno` (EMFILE or ENFILE).
    Emfile {
        call: Call,
        errno: i32,
    },
}

impl Why {
    fn reason(self) -> &'static str {
        match self {
            Why::Exit => "exit",
            Why::Signal => "signal",
            Why::Threshold => "threshold",
            Why::Emfile { .. } => "emfile",
        }
    }
}

/// Where a report goes: where the run options say, or into a reply file `fdguard report` made.
pub enum Dest {
    Configured,
    Reply(std::path::PathBuf),
}

/// Makes the exit report of `view` and writes it if it lists fds or `--at-exit` asked for it;
/// returns whether it lists fds (a leak, for `--leak-exitcode`). `stamp` is the `%t` of the
/// report path (the program's start).
pub fn at_exit(config: &Config, view: &View<'_>, stamp: &str, emfile: EmfileStats) -> bool {
    let Some(report) = made(config, view, Why::Exit, emfile) else {
        return false;
    };
    let listed = report.open > 0;
    if listed || config.at_exit {
        write(config, &report, config.format, &Dest::Configured, stamp);
    }
    listed
}

/// Makes a report of `view` for `why` (with the accept guard's `emfile` figures) and writes it
/// in `format` to `dest`.
pub fn now(
    config: &Config,
    view: &View<'_>,
    why: Why,
    format: Format,
    dest: &Dest,
    stamp: &str,
    emfile: EmfileStats,
) {
    if let Some(report) = made(config, view, why, emfile) {
        write(config, &report, format, dest, stamp);
    }
}

fn made(config: &Config, view: &View<'_>, why: Why, emfile: EmfileStats) -> Option<Report> {
    match build(config, view, why, emfile) {
        Ok(r) => Some(r),
        Err(f) => {
            eprintln!("fdguard: no {} report: {}", why.reason(), f.message);
            None
        }
    }
}

fn write(config: &Config, report: &Report, format: Format, dest: &Dest, stamp: &str) {
    let bytes = match format {
        Format::Text => text::report(report),
        Format::Json => report.to_json(),
    };
    match dest {
        Dest::Configured => deliver(config, report.pid, stamp, bytes.as_bytes()),
        // Made by the command, which reads it: written only if it is still there, never
        // created, never through a symlink.
        Dest::Reply(path) => {
            let _ = std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
                .open(path)
                .and_then(|mut f| f.write_all(bytes.as_bytes()));
        }
    }
}

fn build(
    config: &Config,
    view: &View<'_>,
    why: Why,
    emfile: EmfileStats,
) -> Result<Report, Failure> {
    // The thread's own view: the process's leader may have exited already (its /proc/PID/fd
    // is then empty) while this thread still has the table.
    let target = Target::open(view.tid)?;
    let dir = FdDir::open(view.tid)?;
    let process = procfs::process::Process::new(view.tid)
        .map_err(|e| Failure::failed(format!("cannot read /proc/{}: {e}", view.tid)))?;
    let kernel = read_fds(&process, &dir)?;
    let (mut rows, stale) = joined(&kernel, view.table, Instant::now());
    if why == Why::Exit {
        // Leaks at exit: what the program opened itself and did not close.
        rows.retain(|r| !r.call.predates_fdguard() && r.fd > 2);
    }
    let listed = rows.len();
    if why == Why::Exit {
        rows.retain(|r| !is_suppressed(r, &[], &config.ignore));
    }
    let (trigger_call, trigger_errno) = match why {
        Why::Emfile { call, errno } => (
            Some(call.name().into()),
            Some(
                if errno == libc::ENFILE {
                    "ENFILE"
                } else {
                    "EMFILE"
                }
                .into(),
            ),
        ),
        _ => (None, None),
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut report = Report {
        pid: view.tgid as u32,
        cmdline: target.cmdline(),
        recorder: view.recorder.map(Into::into),
        reason: why.reason().into(),
        trigger_call,
        trigger_errno,
        time: iso8601_utc(now_ms),
        limit: target.limit()?,
        suppressed: listed - rows.len(),
        missed_closes: view.table.missed_closes + stale,
        emfile,
        ..Report::default()
    };
    report.fill(&rows, |key| view.stacks.frames(key));
    Ok(report)
}

/// Joins the kernel's fds with the table: every fd the kernel lists appears once, with its
/// creation facts when the table has it as an fd of the same kind, else as `untracked`. Also
/// returns how many entries were of another kind (a close the tracer did not see).
fn joined(kernel: &[FdEntry], table: &Table, now: Instant) -> (Vec<Row>, u64) {
    let mut stale = 0;
    let rows = kernel
        .iter()
        .map(|k| {
            let entry = table.get(k.fd).filter(|e| {
                let agree = kinds_agree(e.call.default_kind(), k.kind);
                stale += u64::from(!agree);
                agree
            });
            Row {
                fd: k.fd,
                kind: k.kind,
                desc: k.desc.clone(),
                call: entry.map_or(Call::Untracked, |e| e.call),
                // An fd open before an attach has no known age (an inherited one: the
                // program's).
                age_ms: entry
                    .filter(|e| e.call.age_known())
                    .map(|e| now.saturating_duration_since(e.created).as_millis() as u64),
                tid: entry.map(|e| e.tid).filter(|t| *t != 0),
                stack: entry.and_then(|e| e.stack),
                socket: k.socket.as_ref().map(|f| f.desc.clone()),
                kernel_path: matches!(k.kind, FdKind::File | FdKind::Dir)
                    .then(|| k.path.clone())
                    .flatten(),
                stream: false,
                path: None,
            }
        })
        .collect();
    (rows, stale)
}

/// Writes a report to the file the options name (appended to, created 0600, never through a
/// symlink) or to stderr; says so on stderr when the file cannot be written, and writes the
/// report there instead.
fn deliver(config: &Config, pid: u32, stamp: &str, bytes: &[u8]) {
    if let ReportDest::Path(template) = &config.report {
        let path = expand_report_path(template, pid, stamp);
        let path = std::path::PathBuf::from(<std::ffi::OsString as OsStringExt>::from_vec(path));
        let written = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes));
        match written {
            Ok(()) => return,
            Err(e) => eprintln!(
                "fdguard: cannot write the report to {}: {e}; it goes to stderr",
                path.display()
            ),
        }
    }
    let _ = std::io::stderr().write_all(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::table::Entry;
    use fdguard_core::snapshot::SocketFacts;
    use fdguard_core::sockdesc::SocketDesc;

    fn kernel(fd: i32, kind: FdKind, desc: &str) -> FdEntry {
        FdEntry {
            fd,
            kind,
            desc: desc.to_string(),
            path: (kind == FdKind::File).then(|| desc.to_string()),
            ..FdEntry::default()
        }
    }

    #[test]
    fn kernel_fds_joined_with_the_table() {
        let start = Instant::now();
        let mut t = Table::inherited([(0, false)], start);
        let made = |call| Entry {
            call,
            cloexec: false,
            tid: 42,
            created: start,
            stack: Some(StackKey(1)),
        };
        t.insert(3, made(Call::Openat));
        t.insert(4, made(Call::Socket));
        let mut sock = kernel(
            5,
            FdKind::Socket,
            "tcp 127.0.0.1:1 -> 127.0.0.1:2 ESTABLISHED",
        );
        sock.socket = Some(SocketFacts {
            desc: SocketDesc {
                proto: "tcp".into(),
                sock_type: "stream".into(),
                local: Some("127.0.0.1:1".into()),
                peer: Some("127.0.0.1:2".into()),
                tcp_state: Some("ESTABLISHED".into()),
            },
            in_tables: true,
            ..SocketFacts::default()
        });
        let k = [
            kernel(0, FdKind::Pty, "/dev/pts/0"),
            kernel(3, FdKind::File, "/etc/hosts"),
            // The table says socket, the kernel a file: reused behind the tracer's back.
            kernel(4, FdKind::File, "/etc/group"),
            sock,
        ];
        let (rows, stale) = joined(&k, &t, start);
        let calls: Vec<Call> = rows.iter().map(|r| r.call).collect();
        assert_eq!(
            calls,
            [
                Call::Inherited,
                Call::Openat,
                Call::Untracked,
                Call::Untracked
            ]
        );
        assert_eq!(stale, 1);
        assert_eq!((rows[0].tid, rows[1].tid), (None, Some(42)));
        assert_eq!(rows[1].stack, Some(StackKey(1)));
        assert_eq!(rows[1].kernel_path.as_deref(), Some("/etc/hosts"));
        assert_eq!(
            rows[3].socket.as_ref().unwrap().tcp_state.as_deref(),
            Some("ESTABLISHED")
        );
    }
}
