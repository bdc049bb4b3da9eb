//! Every open fd of a process, described from the outside: `/proc/PID/fd` for what each one
//! is, `fdinfo` for pipe ends and epoll sets, the network namespace's tables for sockets.

use std::collections::HashMap;

use fdguard_core::fdinfo::{link_inode, parse_fdinfo};
use fdguard_core::kind::{FdKind, kind_from_link};
use fdguard_core::snapshot::{FdEntry, SocketFacts};
use fdguard_core::sockdesc::{SocketDesc, describe_socket};
use procfs::process::Process;

use crate::fail::Failure;
use crate::net::{Diagnostics, SocketTables};
use crate::os::{FdDir, FdLinks};

/// Reads and describes every fd of the process. An fd closed while this runs is left out.
pub fn read_fds(process: &Process, dir: &FdDir) -> Result<Vec<FdEntry>, Failure> {
    let mut paths = PathIsDir::new();
    let mut fds: Vec<FdEntry> = dir
        .numbers()?
        .into_iter()
        .filter_map(|fd| describe_fd(dir, fd, &mut paths))
        .collect();
    if fds.iter().any(|e| e.kind == FdKind::Socket) {
        let tables = SocketTables::load(process, &Diagnostics::of(process.pid()));
        for e in fds.iter_mut().filter(|e| e.kind == FdKind::Socket) {
            let facts = e.inode.and_then(|i| tables.get(i).cloned());
            let facts = facts.unwrap_or_else(|| SocketFacts {
                desc: SocketDesc::unlisted(dir.socket_protocol(e.fd).as_deref()),
                ..SocketFacts::default()
            });
            e.desc = describe_socket(&facts.desc);
            e.socket = Some(facts);
        }
    }
    link_pipe_ends(&mut fds);
    Ok(fds)
}

/// Whether each path one process has open is a directory, by the text of its fd link. One
/// text in one process is one object (a path replaced since shows as `(deleted)`, or by its
/// new name), so 20,000 fds of one log file cost one `fstatat`, not 20,000.
pub type PathIsDir = HashMap<String, bool>;

/// The kind of fd `fd`, whose link says `link`: for a path, whether it is a directory, asked
/// once per path in `paths`.
pub fn kind_of(dir: &FdLinks, fd: i32, link: &str, paths: &mut PathIsDir) -> FdKind {
    let is_dir = link.starts_with('/')
        && match paths.get(link) {
            Some(is_dir) => *is_dir,
            None => {
                let t = dir.file_type(fd);
                // Not kept when the fd closed meanwhile: the next one of the path may tell.
                if let Some(t) = t {
                    paths.insert(link.to_string(), t == libc::S_IFDIR);
                }
                t == Some(libc::S_IFDIR)
            }
        };
    kind_from_link(link.as_bytes(), is_dir)
}

fn describe_fd(dir: &FdDir, fd: i32, paths: &mut PathIsDir) -> Option<FdEntry> {
    let link = dir.link(fd)?;
    let kind = kind_of(dir, fd, &link, paths);
    let mut e = FdEntry {
        fd,
        kind,
        desc: link.clone(),
        path: None,
        inode: None,
        socket: None,
        other_ends: Vec::new(),
        watches: Vec::new(),
    };
    match kind {
        FdKind::Socket => e.inode = link_inode(&link),
        FdKind::Pipe => {
            e.inode = link_inode(&link);
            if let Some(end) = dir.fdinfo(fd).and_then(|i| parse_fdinfo(&i).pipe_end()) {
                e.desc = format!("{link} {end}");
            }
        }
        FdKind::Epoll => e.watches = dir.fdinfo(fd).map(|i| parse_fdinfo(&i).watches)?,
        FdKind::File | FdKind::Dir => e.path = Some(link),
        _ => {}
    }
    Some(e)
}

/// Notes, for each pipe fd, the other fds of the process on the same pipe.
fn link_pipe_ends(fds: &mut [FdEntry]) {
    let mut by_inode: HashMap<u64, Vec<i32>> = HashMap::new();
    for e in fds.iter().filter(|e| e.kind == FdKind::Pipe) {
        if let Some(i) = e.inode {
            by_inode.entry(i).or_default().push(e.fd);
        }
    }
    for e in fds.iter_mut().filter(|e| e.kind == FdKind::Pipe) {
        if let Some(all) = e.inode.and_then(|i| by_inode.get(&i)) {
            e.other_ends = all.iter().copied().filter(|fd| *fd != e.fd).collect();
        }
    }
}
