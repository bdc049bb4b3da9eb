//! Report-time questions to the kernel about the process's fds: which are open, what each one
//! is (`readlink`), and for sockets their addresses and TCP state.
//!
//! Runs in report children and on the accept guard's thread, and never creates an fd: open fds
//! are found by probing numbers with `poll` (`POLLNVAL` marks a closed one), not by listing
//! `/proc/self/fd`, so the guard's lines at EMFILE, or while the program races to its limit,
//! cannot take a number the program is about to get. (`list_fds` is for load time, before
//! `main`.)
#![allow(unsafe_code)]

use std::mem::{MaybeUninit, size_of};

use libc::{c_int, c_void, sockaddr_storage, socklen_t};

use crate::os;
pub use fdguard_core::sockdesc::SocketDesc;
use fdguard_core::sockdesc::tcp_state_name;

/// What the kernel says about one open fd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelFd {
    pub fd: i32,
    /// `readlink("/proc/self/fd/N")`: a path, `socket:[ino]`, `pipe:[ino]`, `anon_inode:...`.
    pub link: Option<String>,
    pub is_dir: bool,
    pub socket: Option<SocketDesc>,
    /// For pipes and FIFOs: "read end" / "write end".
    pub pipe_end: Option<&'static str>,
}

/// Open fds, from `/proc/self/fd`; `None` if it could not be listed (e.g. no fd free).
pub fn list_fds() -> Option<Vec<i32>> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    let mut fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    Some(fds)
}

/// Open fds among `0..upto`, found with `poll` in batches (at most `batch` fds per call, which
/// must not exceed the soft `RLIMIT_NOFILE`). Needs no fd of its own.
pub fn probe_fds(upto: i32, batch: usize) -> Vec<i32> {
    let batch = batch.max(1);
    let mut open = Vec::new();
    let mut polls: Vec<libc::pollfd> = Vec::with_capacity(batch);
    let mut start = 0i32;
    while start < upto {
        let end = upto.min(start.saturating_add(batch as i32));
        polls.clear();
        polls.extend((start..end).map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        }));
        // SAFETY: `polls` is a valid array of `polls.len()` pollfd; timeout 0 never blocks.
        let r = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 0) };
        if r < 0 {
            // Cannot poll (EINVAL above the limit, ENOMEM): fall back to one fcntl per fd.
            open.extend((start..end).filter(|fd| os::fd::fd_is_open(*fd)));
        } else {
            open.extend(
                polls
                    .iter()
                    .filter(|p| p.revents & libc::POLLNVAL == 0)
                    .map(|p| p.fd),
            );
        }
        start = end;
    }
    open
}

/// Everything the kernel can tell about `fd`.
pub fn describe(fd: i32) -> KernelFd {
    let link = readlink_fd(fd);
    let file_type = fstat_mode(fd).map(|m| m & libc::S_IFMT);
    let is_dir = file_type == Some(libc::S_IFDIR);
    let is_socket = link.as_deref().is_some_and(|l| l.starts_with("socket:"));
    let is_fifo = file_type == Some(libc::S_IFIFO);
    KernelFd {
        fd,
        socket: if is_socket { socket_desc(fd) } else { None },
        pipe_end: if is_fifo { pipe_end(fd) } else { None },
        link,
        is_dir,
    }
}

fn readlink_fd(fd: i32) -> Option<String> {
    let path = format!("/proc/self/fd/{fd}\0");
    let mut buf = [0u8; 4096];
    // SAFETY: `path` is NUL-terminated and `buf` is writable for its length.
    let n = unsafe { libc::readlink(path.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).ok()?;
    Some(String::from_utf8_lossy(buf.get(..n)?).into_owned())
}

fn fstat_mode(fd: i32) -> Option<libc::mode_t> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable; fstat fills it on success, which is checked before reading.
    unsafe {
        if libc::fstat(fd, st.as_mut_ptr()) != 0 {
            return None;
        }
        Some(st.assume_init().st_mode)
    }
}

fn pipe_end(fd: i32) -> Option<&'static str> {
    // SAFETY: F_GETFL only reads the fd's status flags.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fdguard_core::kind::pipe_end(u32::try_from(fl).ok()?)
}

fn sockopt_int(fd: i32, level: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let r = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut c_int).cast(), &mut len) };
    (r == 0).then_some(v)
}

type AddrQuery = unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut socklen_t) -> c_int;

fn sock_addr(fd: i32, query: AddrQuery) -> Option<String> {
    let mut ss = MaybeUninit::<sockaddr_storage>::zeroed();
    let mut len = size_of::<sockaddr_storage>() as socklen_t;
    // SAFETY: `ss` is a zeroed sockaddr_storage, large enough for any address; `len` says so.
    let ss = unsafe {
        if query(fd, ss.as_mut_ptr().cast(), &mut len) != 0 {
            return None;
        }
        ss.assume_init()
    };
    format_sockaddr(&ss, len as usize)
}

fn format_sockaddr(ss: &sockaddr_storage, len: usize) -> Option<String> {
    match ss.ss_family as c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(format!("{ip}:{}", u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(format!("[{ip}]:{}", u16::from_be(a.sin6_port)))
        }
        libc::AF_UNIX => {
            // SAFETY: the family says the storage holds a sockaddr_un.
            let a = unsafe { &*(ss as *const sockaddr_storage).cast::<libc::sockaddr_un>() };
            let path_len = len.saturating_sub(size_of::<libc::sa_family_t>());
            let bytes: Vec<u8> = a.sun_path.iter().take(path_len).map(|c| *c as u8).collect();
            Some(match bytes.split_first() {
                None => "(unnamed)".to_string(),
                Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
                Some(_) => {
                    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                    String::from_utf8_lossy(&bytes[..end]).into_owned()
                }
            })
        }
        _ => None,
    }
}

/// The local address of socket `fd` (`0.0.0.0:9999`, `[::]:80`, a unix path).
pub fn local_addr(fd: i32) -> Option<String> {
    sock_addr(fd, libc::getsockname)
}

fn tcp_state(fd: i32) -> Option<&'static str> {
    let mut info = [0u8; 256];
    let mut len = info.len() as socklen_t;
    // SAFETY: `info` is writable for `len` bytes; the kernel writes at most that much.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast::<c_void>(),
            &mut len,
        )
    };
    if r != 0 || len == 0 {
        return None;
    }
    tcp_state_name(info[0])
}

fn socket_desc(fd: i32) -> Option<SocketDesc> {
    let domain = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let ty = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(0);
    let protocol = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).unwrap_or(0);
    let sock_type = match ty {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        libc::SOCK_SEQPACKET => "seqpacket",
        libc::SOCK_RAW => "raw",
        _ => "other",
    };
    let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
    let v6 = if domain == libc::AF_INET6 { "6" } else { "" };
    let is_tcp =
        inet && ty == libc::SOCK_STREAM && (protocol == 0 || protocol == libc::IPPROTO_TCP);
    let proto = match domain {
        _ if is_tcp => format!("tcp{v6}"),
        _ if inet && ty == libc::SOCK_DGRAM => format!("udp{v6}"),
        _ if inet => format!("ip{v6}"),
        libc::AF_UNIX => "unix".to_string(),
        libc::AF_NETLINK => "netlink".to_string(),
        libc::AF_PACKET => "packet".to_string(),
        other => format!("family {other}"),
    };
    Some(SocketDesc {
        proto,
        sock_type: sock_type.into(),
        local: sock_addr(fd, libc::getsockname),
        peer: sock_addr(fd, libc::getpeername),
        tcp_state: if is_tcp {
            tcp_state(fd).map(Into::into)
        } else {
            None
        },
    })
}

/// This process's command line, from `/proc/self/cmdline`.
pub fn cmdline() -> Vec<String> {
    std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn describes_tcp_sockets_with_addresses_and_state() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let d = describe(l.as_raw_fd());
        let s = d.socket.unwrap();
        assert_eq!(s.proto, "tcp");
        assert_eq!(s.tcp_state.as_deref(), Some("LISTEN"));
        assert_eq!(
            s.local.as_deref(),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut a, _) = l.accept().unwrap();
        drop(c.write_all(b"x"));
        let mut b = [0u8; 1];
        a.read_exact(&mut b).unwrap();
        drop(c);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let s = describe(a.as_raw_fd()).socket.unwrap();
        assert_eq!(s.tcp_state.as_deref(), Some("CLOSE_WAIT"));
        assert!(s.peer.is_some());
    }

    #[test]
    fn describes_pipes_files_and_dirs() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two ints.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let r = describe(fds[0]);
        assert!(r.link.as_deref().unwrap().starts_with("pipe:["));
        assert_eq!(r.pipe_end, Some("read end"));
        assert_eq!(describe(fds[1]).pipe_end, Some("write end"));
        let dir = std::fs::File::open("/").unwrap();
        assert!(describe(dir.as_raw_fd()).is_dir);
        let listed = list_fds().unwrap();
        assert!(listed.contains(&fds[0]) && listed.contains(&dir.as_raw_fd()));
        let probed = probe_fds(fds[1] + 1, 3);
        assert!(probed.contains(&fds[0]) && probed.contains(&fds[1]));
        assert!(!probe_fds(fds[1] + 1, 3).contains(&(fds[1] + 1)));
        // SAFETY: closing the two fds this test created.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }

    #[test]
    fn unix_socket_names() {
        let mut sv = [0; 2];
        // SAFETY: `sv` has room for two ints.
        assert_eq!(
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
            0
        );
        let s = describe(sv[0]).socket.unwrap();
        assert_eq!((s.proto.as_str(), &*s.sock_type), ("unix", "stream"));
        assert_eq!(s.local.as_deref(), Some("(unnamed)"));
        // SAFETY: closing the two fds this test created.
        unsafe {
            libc::close(sv[0]);
            libc::close(sv[1]);
        }
    }
}
