//! The report: what is open, what each fd is, and which code holds them, as pure data built from
//! the fd table and the kernel's view, then written as text or JSON (`text`, `json`).
//!
//! Nothing here touches the OS; `dumper` gathers the inputs.

mod json;
mod suppress;
mod text;
mod time;

pub use json::{render_bad_close_json, render_json};
pub use suppress::is_suppressed;
pub use text::{render_bad_close_text, render_text};
pub use time::{compact_utc, iso8601_utc};

use std::collections::BTreeMap;

use crate::inspect::KernelFd;
use crate::origin::{Call, Detail, FdKind, kind_from_link};
use crate::sockdesc::describe_socket;
use crate::table::{FdRecord, StackId};

/// Facts about the process, first in every report.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub pid: u32,
    pub cmdline: Vec<String>,
    pub reason: &'static str,
    /// The call that failed with EMFILE/ENFILE, and which of the two, for `emfile` reports.
    pub trigger_call: Option<&'static str>,
    pub trigger_errno: Option<&'static str>,
    pub unix_ms: u64,
    pub soft: u64,
    pub hard: u64,
    /// Closes fdguard did not see (a creation reused a number it still had open).
    pub missed_closes: u64,
    /// Updates fdguard could not record (slot busy: signal handler or racing close).
    pub skipped: u64,
    /// Accept guard figures (see `emfile`).
    pub emfile: EmfileStats,
    /// fds left out by `FDGUARD_IGNORE` (exit reports).
    pub suppressed: usize,
    /// Failed closes of fds that were not open, since the start.
    pub bad_closes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmfileStats {
    pub accept_failures: u64,
    pub paused_ms: u64,
    pub shed: u64,
}

/// One open fd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub fd: i32,
    pub kind: FdKind,
    pub desc: String,
    pub call: Call,
    pub age_ms: Option<u64>,
    pub tid: Option<u32>,
    /// Creation stack as captured; reports show its group id (`Report::group_ids`).
    pub stack: Option<StackId>,
    pub tcp_state: Option<&'static str>,
    /// Path as given, for suppressions.
    pub path: Option<String>,
    /// The fd belongs to a stdio `FILE`.
    pub stream: bool,
}

/// One resolved frame of a creation stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub addr: usize,
    pub module: Option<String>,
    /// Offset of the call instruction in `module`: `addr2line -e MODULE OFFSET` finds the line.
    pub offset: Option<usize>,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The fds created by one call stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackGroup {
    /// Position in `Report::stacks` (sorted by count, largest first): what `fds[].stack` holds.
    pub id: usize,
    pub stack: StackId,
    pub count: usize,
    /// How many of them are stdio `FILE` streams.
    pub streams: usize,
    pub by_kind: Vec<(FdKind, usize)>,
    pub tcp_states: Vec<(&'static str, usize)>,
    pub oldest_ms: u64,
    pub newest_ms: u64,
    pub frames: Vec<Frame>,
}

/// A close of an fd that was not open (`EBADF`), printed on its own, not as a report.
#[derive(Clone, Debug, Default)]
pub struct BadCloseNotice {
    pub pid: u32,
    pub unix_ms: u64,
    pub fd: i32,
    pub call: &'static str,
    pub tid: u32,
    pub frames: Vec<Frame>,
    /// Where the number was last released; `None` when close stacks are not captured.
    pub released_by: Option<Vec<Frame>>,
    /// Bad closes since the last notice that were not shown (rate limit).
    pub not_shown: u64,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub header: Header,
    pub rows: Vec<Row>,
    pub stacks: Vec<StackGroup>,
}

impl Report {
    pub fn open(&self) -> usize {
        self.rows.len()
    }

    pub fn untracked(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.call == Call::Untracked)
            .count()
    }

    pub fn by_kind(&self) -> Vec<(FdKind, usize)> {
        count_by(self.rows.iter().map(|r| r.kind))
    }

    /// TCP states of every socket listed, tracked or not.
    pub fn tcp_states(&self) -> Vec<(&'static str, usize)> {
        count_by(self.rows.iter().filter_map(|r| r.tcp_state))
    }

    /// Each stack's group id, looked up once per row: a search of the groups for every row
    /// made a report of many fds and many stacks quadratic.
    pub fn group_ids(&self) -> BTreeMap<StackId, usize> {
        self.stacks.iter().map(|g| (g.stack, g.id)).collect()
    }

    /// The rows of each creation stack, in table order.
    pub fn rows_by_stack(&self) -> BTreeMap<StackId, Vec<&Row>> {
        let mut m: BTreeMap<StackId, Vec<&Row>> = BTreeMap::new();
        for row in &self.rows {
            if let Some(s) = row.stack {
                m.entry(s).or_default().push(row);
            }
        }
        m
    }
}

fn count_by<T: Ord + Copy>(items: impl Iterator<Item = T>) -> Vec<(T, usize)> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m.into_iter().collect()
}

/// Joins the kernel's list of open fds with the table. Every fd the kernel lists appears once:
/// tracked ones with their creation facts, the others as `untracked` with the kernel's name.
pub fn rows(
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
                        age_ms: Some(now_ns.saturating_sub(rec.born_ns) / 1_000_000),
                        tid: (rec.tid != 0).then_some(rec.tid),
                        stack: rec.stack,
                        tcp_state: k.socket.as_ref().and_then(|s| s.tcp_state),
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
                        tcp_state: k.socket.as_ref().and_then(|s| s.tcp_state),
                        path: None,
                        stream: false,
                    }
                }
            }
        })
        .collect()
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

/// Groups rows by creation stack, largest group first, and resolves each group's frames.
pub fn group(rows: &[Row], mut frames_of: impl FnMut(StackId) -> Vec<Frame>) -> Vec<StackGroup> {
    let mut by_stack: BTreeMap<StackId, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        if let Some(s) = r.stack {
            by_stack.entry(s).or_default().push(r);
        }
    }
    let mut groups: Vec<StackGroup> = by_stack
        .into_iter()
        .map(|(stack, rs)| StackGroup {
            id: 0,
            stack,
            count: rs.len(),
            streams: rs.iter().filter(|r| r.stream).count(),
            by_kind: count_by(rs.iter().map(|r| r.kind)),
            tcp_states: count_by(rs.iter().filter_map(|r| r.tcp_state)),
            oldest_ms: rs.iter().filter_map(|r| r.age_ms).max().unwrap_or(0),
            newest_ms: rs.iter().filter_map(|r| r.age_ms).min().unwrap_or(0),
            frames: Vec::new(),
        })
        .collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.stack.cmp(&b.stack)));
    for (i, g) in groups.iter_mut().enumerate() {
        g.id = i;
        g.frames = frames_of(g.stack);
    }
    groups
}

/// Words for a kind in summaries: "sockets", and "FILE streams" for files behind stdio
/// streams (what readers search for).
pub fn kind_words(kind: FdKind, n: usize, streams: bool) -> String {
    if streams && kind == FdKind::File {
        return if n == 1 {
            "FILE stream"
        } else {
            "FILE streams"
        }
        .to_string();
    }
    let word = match kind {
        FdKind::File => "file",
        FdKind::Dir => "directory",
        FdKind::Socket => "socket",
        FdKind::Pipe => "pipe",
        FdKind::Pty => "pty",
        other => other.name(),
    };
    match (n, kind) {
        (1, _) => word.to_string(),
        (_, FdKind::Dir) => "directories".to_string(),
        _ => format!("{word}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::PathTail;
    use crate::sockdesc::SocketDesc;

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
        let rows = rows(
            &kernel,
            |fd| (fd == 3).then(|| rec(Call::Fopen, Some("/etc/hosts"), Some(1), 1_000_000)),
            3_000_000,
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].call, Call::Untracked);
        assert_eq!(rows[0].kind, FdKind::Pty);
        assert_eq!(rows[1].desc, "/etc/hosts");
        assert_eq!(rows[1].age_ms, Some(2));
        assert_eq!(rows[1].tid, Some(11));
        assert_eq!(rows[2].kind, FdKind::Pipe);
        assert_eq!(rows[2].desc, "pipe:[77]");
    }

    #[test]
    fn shows_the_given_path_and_the_kernels_when_they_differ() {
        let rows = rows(
            &[kfd(5, "/work/data.txt (deleted)")],
            |_| Some(rec(Call::Open, Some("data.txt"), None, 0)),
            0,
        );
        assert_eq!(rows[0].desc, "data.txt (/work/data.txt (deleted))");
        let long = "/var/lib/postgresql/15/main/base/16384/2619";
        let truncated = super::rows(
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
            sock_type: "stream",
            local: Some("127.0.0.1:9999".into()),
            peer: Some("127.0.0.1:40000".into()),
            tcp_state: Some("CLOSE_WAIT"),
        });
        let mut unconnected = kfd(7, "socket:[2]");
        unconnected.socket = Some(SocketDesc {
            proto: "tcp".into(),
            sock_type: "stream",
            local: Some("0.0.0.0:0".into()),
            peer: None,
            tcp_state: Some("CLOSE"),
        });
        let rows = rows(&[k, unconnected], |_| None, 0);
        assert_eq!(
            rows[0].desc,
            "tcp 127.0.0.1:9999 -> 127.0.0.1:40000 CLOSE_WAIT"
        );
        assert_eq!(rows[0].tcp_state, Some("CLOSE_WAIT"));
        assert_eq!(rows[1].desc, "tcp unconnected (CLOSE)");
    }

    #[test]
    fn groups_by_stack_largest_first() {
        let kernel: Vec<_> = (3..9).map(|fd| kfd(fd, "/dev/null")).collect();
        let rows = rows(
            &kernel,
            |fd| {
                let stack = if fd < 7 { 9 } else { 2 };
                Some(rec(Call::Open, None, Some(stack), fd as u64 * 1_000_000))
            },
            10_000_000,
        );
        let groups = group(&rows, |s| {
            vec![Frame {
                addr: s.0 as usize,
                ..Default::default()
            }]
        });
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (groups[0].id, groups[0].stack, groups[0].count),
            (0, StackId(9), 4)
        );
        assert_eq!(groups[0].oldest_ms, 7);
        assert_eq!(groups[0].newest_ms, 4);
        assert_eq!(groups[0].frames[0].addr, 9);
        assert_eq!((groups[1].stack, groups[1].count), (StackId(2), 2));
    }

    #[test]
    fn rows_and_ids_of_interleaved_stacks() {
        let kernel: Vec<_> = (3..11).map(|fd| kfd(fd, "/dev/null")).collect();
        let rows = rows(
            &kernel,
            |fd| {
                let stack = match fd % 3 {
                    0 => Some(4),
                    1 => Some(8),
                    _ => None,
                };
                Some(rec(Call::Open, None, stack, 0))
            },
            0,
        );
        let stacks = group(&rows, |_| Vec::new());
        let r = Report {
            header: Header::default(),
            rows,
            stacks,
        };
        let fds = |s: u32| -> Vec<i32> {
            r.rows_by_stack()
                .get(&StackId(s))
                .map(|rs| rs.iter().map(|row| row.fd).collect())
                .unwrap_or_default()
        };
        assert_eq!(fds(4), [3, 6, 9]);
        assert_eq!(fds(8), [4, 7, 10]);
        let ids = r.group_ids();
        assert_eq!(ids.len(), 2);
        for g in &r.stacks {
            assert_eq!(ids[&g.stack], g.id);
        }
    }
}
