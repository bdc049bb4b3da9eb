//! The host as a whole, collected once per sample for `top` and `metrics`: every process this
//! user may read, each one's open fds against its own soft limit and by kind, whether it runs
//! under fdguard, and the kernel's host-wide counts (file handles, sockets) to set them against.
//!
//! Only what the fd links say (one `readlinkat` per fd, an `fstatat` per distinct path, to tell
//! a directory): no fdinfo and no socket tables, which is what makes the whole host fast.

use std::collections::{BTreeMap, HashSet};

use fdguard_core::kind::FdKind;
use fdguard_core::report::Limit;
use serde::Serialize;

use crate::hostproc::{Reading, mark_recorded, read_process};
use crate::tally::counts_fds;

/// A process is near its limit from this share of it on.
pub const NEAR_PERCENT: u64 = 80;

/// How a process runs under fdguard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Under {
    /// `libfdguard.so` is mapped in it (`fdguard run`, or attached).
    Library,
    /// An `fdguard run` traces it (a static or Go program).
    Tracer,
    /// An `fdguard attach` records it through eBPF (a static or Go program).
    Ebpf,
}

impl Under {
    /// As the JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            Under::Library => "library",
            Under::Tracer => "tracer",
            Under::Ebpf => "ebpf",
        }
    }
}

/// How close a process is to its soft limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    /// At `NEAR_PERCENT` of its soft limit or more.
    Near,
    /// Every fd of its soft limit taken: new ones fail with EMFILE.
    AtLimit,
}

/// One process, as one sample saw it.
#[derive(Clone, Debug)]
pub struct Proc {
    pub pid: i32,
    /// The kernel's name for it (`/proc/PID/comm`, 15 bytes at most).
    pub comm: String,
    pub cmdline: Vec<String>,
    pub open: usize,
    pub limit: Limit,
    pub by_kind: BTreeMap<FdKind, usize>,
    pub under: Option<Under>,
}

impl Proc {
    /// Open fds over the soft limit; `None` without one.
    pub fn ratio(&self) -> Option<f64> {
        let soft = self.limit.soft?;
        Some(if soft == 0 {
            1.0
        } else {
            self.open as f64 / soft as f64
        })
    }

    pub fn level(&self) -> Level {
        match self.limit.soft {
            Some(soft) if self.open as u64 >= soft => Level::AtLimit,
            Some(soft) if self.open as u64 * 100 >= soft * NEAR_PERCENT => Level::Near,
            _ => Level::Ok,
        }
    }
}

/// The kernel's file handles (`/proc/sys/fs/file-nr`): open file descriptions, host-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FileHandles {
    pub allocated: u64,
    pub max: u64,
}

/// Sockets the kernel has allocated in this network namespace (`/proc/net/sockstat`) against
/// those the processes read hold by an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sockets {
    pub allocated: u64,
    /// Distinct sockets held by an fd of a process read, in this network namespace.
    pub held: u64,
}

impl Sockets {
    /// Sockets allocated that no fd of a process read holds: closed by the program but kept by
    /// the kernel (lingering, orphaned), or held by processes this user may not read.
    pub fn held_by_no_fd(&self) -> u64 {
        self.allocated.saturating_sub(self.held)
    }
}

/// One sample of the host.
pub struct Host {
    /// Every process read with at least one fd open, in no particular order.
    pub processes: Vec<Proc>,
    /// Processes whose fds this user may not read (another user's, or a protected one).
    pub unreadable: usize,
    pub file_handles: Option<FileHandles>,
    pub sockets: Option<Sockets>,
}

/// `/proc/sys/fs/file-nr`: "allocated  free  max" (free is always 0 since Linux 2.6).
pub fn parse_file_nr(text: &str) -> Option<FileHandles> {
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (allocated, _free, max) = (it.next()??, it.next()??, it.next()??);
    Some(FileHandles { allocated, max })
}

/// The `sockets: used N` line of `/proc/net/sockstat`.
pub fn parse_sockstat(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("sockets: used "))
        .and_then(|n| n.trim().parse().ok())
}

/// Threads a large fd table is read on at most: enough for a few cores, few enough to leave a
/// busy host its own.
const MAX_THREADS: usize = 4;

/// Reads every process of the host this user may read, and the host's counts. One process
/// after the other; a large fd table is read on a thread per core (`tally`).
pub fn collect() -> Host {
    let how = Reading {
        counts: counts_fds(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS)),
        net: std::fs::read_link("/proc/self/ns/net")
            .ok()
            .map(|p| p.into_os_string().into_encoded_bytes()),
    };
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
    let mut held = HashSet::new();
    let mut fdguards = HashSet::new();
    let mut processes = Vec::new();
    let mut unreadable = 0;
    let own = std::process::id() as i32;
    let mut buf = Vec::new();
    for pid in pids {
        match read_process(pid, &how, &mut buf) {
            Ok(r) => {
                held.extend(r.sockets);
                if r.fdguard && pid != own {
                    fdguards.insert(pid);
                }
                processes.push(r.proc);
            }
            Err(true) => unreadable += 1,
            Err(false) => {}
        }
    }
    mark_recorded(&mut processes, &fdguards);
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let allocated = read("/proc/net/sockstat")
        .as_deref()
        .and_then(parse_sockstat);
    Host {
        processes,
        unreadable,
        file_handles: read("/proc/sys/fs/file-nr")
            .as_deref()
            .and_then(parse_file_nr),
        sockets: allocated.map(|allocated| Sockets {
            allocated,
            held: held.len() as u64,
        }),
    }
}

/// How `top` and `metrics` rank processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// Open fds over the process's own soft limit, highest first (no limit last)
    Ratio,
    /// Open fds, most first
    Count,
}

/// Sorts `processes` by `sort`, ties by more open fds, then by pid.
pub fn rank(processes: &mut [Proc], sort: Sort) {
    processes.sort_by(|a, b| {
        let by_ratio = match sort {
            Sort::Ratio => b
                .ratio()
                .unwrap_or(-1.0)
                .total_cmp(&a.ratio().unwrap_or(-1.0)),
            Sort::Count => std::cmp::Ordering::Equal,
        };
        by_ratio.then(b.open.cmp(&a.open)).then(a.pid.cmp(&b.pid))
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A process with `open` fds of no kind in particular, for ranking tests.
    pub(crate) fn proc(pid: i32, open: usize, soft: Option<u64>) -> Proc {
        Proc {
            pid,
            comm: format!("p{pid}"),
            cmdline: Vec::new(),
            open,
            limit: Limit { soft, hard: soft },
            by_kind: BTreeMap::new(),
            under: None,
        }
    }

    #[test]
    fn host_files_parse() {
        assert_eq!(
            parse_file_nr("731\t0\t2466239\n"),
            Some(FileHandles {
                allocated: 731,
                max: 2466239
            })
        );
        assert_eq!(parse_file_nr("731 0"), None);
        let sockstat = "sockets: used 157624\nTCP: inuse 1 orphan 0 tw 27100 alloc 1 mem 202\n";
        assert_eq!(parse_sockstat(sockstat), Some(157624));
        assert_eq!(parse_sockstat("TCP: inuse 1\n"), None);
        let s = Sockets {
            allocated: 10,
            held: 12,
        };
        assert_eq!(s.held_by_no_fd(), 0);
    }

    #[test]
    fn levels_and_ranks() {
        assert_eq!(proc(1, 79, Some(100)).level(), Level::Ok);
        assert_eq!(proc(1, 80, Some(100)).level(), Level::Near);
        assert_eq!(proc(1, 100, Some(100)).level(), Level::AtLimit);
        assert_eq!(proc(1, 5, None).level(), Level::Ok);
        assert_eq!(proc(1, 0, Some(0)).ratio(), Some(1.0));
        let mut ps = vec![
            proc(1, 300, Some(1000)),
            proc(2, 900, Some(1000)),
            proc(3, 5000, None),
            proc(4, 90, Some(100)),
        ];
        rank(&mut ps, Sort::Ratio);
        let pids: Vec<i32> = ps.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [2, 4, 1, 3]);
        rank(&mut ps, Sort::Count);
        let pids: Vec<i32> = ps.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [3, 2, 1, 4]);
    }
}
