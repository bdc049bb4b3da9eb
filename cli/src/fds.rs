//! Every open fd of a process, described from the outside: `/proc/PID/fd` for what each one
//! is, `fdinfo` for pipe ends and epoll sets, the network namespace's tables for sockets.

use std::collections::HashMap;

use procfs::process::Process;
use serde::Serialize;

use crate::describe::{
    EpollWatch, SocketFacts, kind_of, link_inode, parse_fdinfo, socket_desc, unlisted_socket,
};
use crate::fail::Failure;
use crate::net::{Diagnostics, SocketTables};
use crate::os::FdDir;

/// One open fd. `fd`, `kind` and `desc` are the report's keys and mean the same.
#[derive(Clone, Debug, Serialize)]
pub struct FdEntry {
    pub fd: i32,
    pub kind: &'static str,
    pub desc: String,
    /// The kernel's path, for files and directories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The inode of a socket or pipe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<SocketFacts>,
    /// For pipes: other fds of this process on the same pipe.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_ends: Vec<i32>,
    /// For epoll sets: what they watch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<EpollWatch>,
}

impl FdEntry {
    pub fn tcp_state(&self) -> Option<&'static str> {
        self.socket.as_ref().and_then(|s| s.tcp_state)
    }
}

/// Reads and describes every fd of the process. An fd closed while this runs is left out.
pub fn read_fds(process: &Process, dir: &FdDir) -> Result<Vec<FdEntry>, Failure> {
    let mut fds: Vec<FdEntry> = dir
        .numbers()?
        .into_iter()
        .filter_map(|fd| describe_fd(dir, fd))
        .collect();
    if fds.iter().any(|e| e.kind == "socket") {
        let tables = SocketTables::load(process, &Diagnostics::of(process.pid()));
        for e in fds.iter_mut().filter(|e| e.kind == "socket") {
            let facts = e
                .inode
                .and_then(|i| tables.get(i).cloned())
                .unwrap_or_else(|| unlisted_socket(dir.socket_protocol(e.fd).as_deref()));
            e.desc = socket_desc(&facts);
            e.socket = Some(facts);
        }
    }
    link_pipe_ends(&mut fds);
    Ok(fds)
}

fn describe_fd(dir: &FdDir, fd: i32) -> Option<FdEntry> {
    let link = dir.link(fd)?;
    let is_path = link.starts_with('/');
    let is_dir = is_path && dir.file_type(fd) == Some(libc::S_IFDIR);
    let kind = kind_of(&link, is_dir);
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
        "socket" => e.inode = link_inode(&link),
        "pipe" => {
            e.inode = link_inode(&link);
            if let Some(end) = dir.fdinfo(fd).and_then(|i| parse_fdinfo(&i).pipe_end()) {
                e.desc = format!("{link} {end}");
            }
        }
        "epoll" => e.watches = dir.fdinfo(fd).map(|i| parse_fdinfo(&i).watches)?,
        "file" | "dir" => e.path = Some(link),
        _ => {}
    }
    Some(e)
}

/// Notes, for each pipe fd, the other fds of the process on the same pipe.
fn link_pipe_ends(fds: &mut [FdEntry]) {
    let mut by_inode: HashMap<u64, Vec<i32>> = HashMap::new();
    for e in fds.iter().filter(|e| e.kind == "pipe") {
        if let Some(i) = e.inode {
            by_inode.entry(i).or_default().push(e.fd);
        }
    }
    for e in fds.iter_mut().filter(|e| e.kind == "pipe") {
        if let Some(all) = e.inode.and_then(|i| by_inode.get(&i)) {
            e.other_ends = all.iter().copied().filter(|fd| *fd != e.fd).collect();
        }
    }
}
