//! One process as the host view (`host::collect`) reads it: its fds by kind (`tally`), its fd
//! limit, its command, whether fdguard runs it, in as few system calls as give the same
//! answers as `Target` would. `/proc/PID` is opened once and its files read relative to it;
//! the limit is one `prlimit`; the maps are searched as text for `/libfdguard` and parsed
//! only when they mention it; `TracerPid` is read only when another `fdguard` runs.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fdguard_core::report::Limit;
use procfs::FromRead;
use procfs::process::{Limits, MMapPath, MemoryMaps, Stat};

use crate::host::{Proc, Under};
use crate::os::{self, ProcDir};
use crate::tally::{Refused, tally};
use crate::target::{exiting, is_fdguard_library, is_fdguard_program, nofile_limit};

/// What every process of one sample is read with.
pub struct Reading {
    /// Whether this kernel counts a process's fds for us (`tally::counts_fds`).
    pub counts: bool,
    /// Threads a large fd table may be read on.
    pub threads: usize,
    /// This process's network namespace (`/proc/self/ns/net`'s link).
    pub net: Option<Vec<u8>>,
}

/// One process as a sample read it.
pub struct Read {
    pub proc: Proc,
    /// Inodes of the sockets it holds in this network namespace.
    pub sockets: Vec<u64>,
    /// Its executable is an `fdguard`, which may be tracing others (`fdguard run`).
    pub fdguard: bool,
}

/// One process; `Err(true)` if this user may not read its fds, `Err(false)` if it is gone (or
/// has none: a kernel thread, a zombie). Whether an fdguard records it from outside is left to `mark_recorded`.
/// `buf` is room to read its files in.
pub fn read_process(pid: i32, how: &Reading, buf: &mut Vec<u8>) -> Result<Read, bool> {
    let dir = ProcDir::open(pid).map_err(|_| false)?;
    // Refused while the process is still there and not exiting: not this user's to read.
    let refused = |buf: &mut Vec<u8>| read_stat(&dir, buf).is_some_and(|s| !exiting(&s));
    let fds = match dir.fd_links() {
        Ok(links) => tally(&links, how.counts, how.threads),
        Err(_) => Err(Refused),
    };
    let fds = fds.map_err(|Refused| refused(buf))?;
    if fds.open == 0 {
        return Err(false);
    }
    // By pid, before the check below: a process gone since (its pid maybe another's) is left
    // out by it.
    let limit = match os::nofile(pid) {
        Ok((soft, hard)) => {
            let finite = |v| (v != libc::RLIM_INFINITY).then_some(v);
            Limit {
                soft: finite(soft),
                hard: finite(hard),
            }
        }
        // Another user's (prlimit asks for its user ids): its limits file, which all may read.
        Err(_) => {
            dir.read(c"limits", buf).map_err(|_| false)?;
            nofile_limit(&Limits::from_read(buf.as_slice()).map_err(|_| false)?)
        }
    };
    // Read while it exited, its fds may be any part of what it had (`Target::has_exited`):
    // left out, like a process gone.
    let stat = read_stat(&dir, buf).ok_or(false)?;
    if exiting(&stat) {
        return Err(false);
    }
    let under =
        (dir.read(c"maps", buf).is_ok() && maps_fdguard_library(buf)).then_some(Under::Library);
    let cmdline = match dir.read(c"cmdline", buf) {
        Ok(()) => cmdline_args(buf),
        Err(_) => Vec::new(),
    };
    // Sockets count as held only where they were made: in this network namespace, whose
    // sockstat is the one read (asked only of processes holding sockets).
    let sockets =
        if !fds.sockets.is_empty() && how.net.is_some() && dir.read_link(c"ns/net").ok() == how.net
        {
            fds.sockets
        } else {
            Vec::new()
        };
    let fdguard = dir
        .read_link(c"exe")
        .is_ok_and(|exe| is_fdguard_program(Path::new(OsStr::from_bytes(&exe))));
    let proc = Proc {
        pid,
        comm: stat.comm,
        cmdline,
        open: fds.open,
        limit,
        by_kind: fds.by_kind,
        under,
    };
    Ok(Read {
        proc,
        sockets,
        fdguard,
    })
}

/// Marks the processes an `fdguard` of `fdguards` records from outside, of those without the
/// library: its tracer (`TracerPid` of their status) or the server of an eBPF attach (its run
/// file). Only another `fdguard` than this one can: on a host with none, which is most, no
/// status is read at all.
pub fn mark_recorded(processes: &mut [Proc], fdguards: &HashSet<i32>) {
    if fdguards.is_empty() {
        return;
    }
    let mut buf = Vec::new();
    for p in processes.iter_mut().filter(|p| p.under.is_none()) {
        let tracer = ProcDir::open(p.pid)
            .and_then(|dir| dir.read(c"status", &mut buf))
            .ok()
            .and_then(|_| tracer_pid(&buf));
        if tracer.is_some_and(|t| fdguards.contains(&t)) {
            p.under = Some(Under::Tracer);
        } else if crate::ebpf::server_of(p.pid).is_some() {
            p.under = Some(Under::Ebpf);
        }
    }
}

fn read_stat(dir: &ProcDir, buf: &mut Vec<u8>) -> Option<Stat> {
    dir.read(c"stat", buf).ok()?;
    Stat::from_read(buf.as_slice()).ok()
}

/// True if `/proc/PID/maps` (`maps`) has `libfdguard.so` mapped from its first page, as
/// `Target::mapped` finds it. Most processes never mention it: a search of the text (file
/// names come after a `/`) decides for them, with no parse of every mapping. Maps that are not
/// UTF-8 are refused by that parse, as they were by `Target::mapped`.
fn maps_fdguard_library(maps: &[u8]) -> bool {
    if !std::str::from_utf8(maps).is_ok_and(|text| text.contains("/libfdguard")) {
        return false;
    }
    MemoryMaps::from_read(maps).is_ok_and(|maps| {
        maps.iter().any(|m| {
            m.offset == 0
                && matches!(&m.pathname, MMapPath::Path(p)
                    if p.file_name().and_then(|n| n.to_str()).is_some_and(is_fdguard_library))
        })
    })
}

/// `TracerPid` of `/proc/PID/status`: the process tracing it, if one does.
fn tracer_pid(status: &[u8]) -> Option<i32> {
    let line = status
        .split(|b| *b == b'\n')
        .find_map(|l| l.strip_prefix(b"TracerPid:"))?;
    let tracer: i32 = std::str::from_utf8(line).ok()?.trim().parse().ok()?;
    (tracer > 0).then_some(tracer)
}

/// The arguments in `/proc/PID/cmdline`, as `Target::cmdline` gives them: none unless it is
/// UTF-8, empty ones left out.
fn cmdline_args(cmdline: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(cmdline) else {
        return Vec::new();
    };
    text.split('\0')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_files_parse() {
        let maps = b"55d1-55d2 r--p 00000000 08:01 12 /usr/bin/cat\n\
            7f00-7f01 r--p 00000000 08:01 13 /opt/fdguard/libfdguard.so\n";
        assert!(maps_fdguard_library(maps));
        let later_page = b"7f00-7f01 r-xp 00001000 08:01 13 /opt/fdguard/libfdguard.so\n";
        assert!(!maps_fdguard_library(later_page));
        let dir_only = b"7f00-7f01 r--p 00000000 08:01 13 /opt/libfdguard/libc.so.6\n";
        assert!(!maps_fdguard_library(dir_only));
        assert!(!maps_fdguard_library(
            b"55d1-55d2 rw-p 00000000 00:00 0 [heap]\n"
        ));
        // Not UTF-8: what Target::mapped's parse refuses.
        let not_utf8 = b"7f00-7f01 r--p 00000000 08:01 13 /opt/\xff/libfdguard.so\n";
        assert!(!maps_fdguard_library(not_utf8));
        let status = b"Name:\tcat\nTracerPid:\t4242\nUid:\t0\n";
        assert_eq!(tracer_pid(status), Some(4242));
        assert_eq!(tracer_pid(b"Name:\tcat\nTracerPid:\t0\n"), None);
        assert_eq!(cmdline_args(b"sleep\0\x0030\0"), ["sleep", "30"]);
        assert!(cmdline_args(b"bad\xff\0").is_empty());
    }
}
