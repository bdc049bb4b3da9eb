//! Words for fds, the same as in fdguard's reports: the `kind` names, socket descriptions
//! (`tcp 127.0.0.1:9999 -> 127.0.0.1:40000 CLOSE_WAIT`), pipe ends; and the parsing of what
//! `/proc/PID/fdinfo/N` adds. Pure functions, so that the tests can pin them to the report's.

use serde::Serialize;

use crate::sockdesc::{SocketDesc, describe_socket};

/// The kind of an fd from its `/proc/PID/fd` link (and, for a path, whether it is a directory).
/// The names are the report's `kind` values.
pub fn kind_of(link: &str, is_dir: bool) -> &'static str {
    const PREFIXES: &[(&str, &str)] = &[
        ("socket:", "socket"),
        ("pipe:", "pipe"),
        ("anon_inode:[eventpoll]", "epoll"),
        ("anon_inode:[eventfd]", "eventfd"),
        ("anon_inode:[timerfd]", "timerfd"),
        ("anon_inode:[signalfd]", "signalfd"),
        ("anon_inode:inotify", "inotify"),
        ("anon_inode:[fanotify]", "fanotify"),
        ("anon_inode:[pidfd]", "pidfd"),
        ("pidfd:", "pidfd"),
        ("/memfd:", "memfd"),
        ("/dev/ptmx", "pty"),
        ("/dev/pts/", "pty"),
    ];
    if is_dir {
        return "dir";
    }
    match PREFIXES.iter().find(|(p, _)| link.starts_with(p)) {
        Some((_, kind)) => kind,
        None if link.starts_with('/') => "file",
        None => "other",
    }
}

/// The inode in a `socket:[N]` or `pipe:[N]` link.
pub fn link_inode(link: &str) -> Option<u64> {
    let (_, rest) = link.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// What is known of one socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SocketFacts {
    /// `tcp`, `tcp6`, `udp`, `udp6`, `unix`, `netlink`, ...
    pub proto: String,
    /// `stream`, `dgram`, `seqpacket` (shown for unix sockets).
    #[serde(rename = "type")]
    pub sock_type: &'static str,
    pub local: Option<String>,
    pub peer: Option<String>,
    pub tcp_state: Option<&'static str>,
    /// Listed in a `/proc/PID/net` table: false for sockets lsof calls "can't identify
    /// protocol" (created, perhaps failed to connect, never closed).
    pub in_tables: bool,
}

impl SocketFacts {
    pub fn connected(&self) -> bool {
        self.peer.is_some()
    }
}

/// The report's protocol name and socket type for the kernel's `system.sockprotoname`, for
/// sockets that no `/proc/net` table lists.
pub fn from_protocol_name(name: &str) -> (String, &'static str) {
    let (proto, ty) = match name {
        "TCP" | "MPTCP" => ("tcp", "stream"),
        "TCPv6" | "MPTCPv6" => ("tcp6", "stream"),
        "UDP" | "UDP-Lite" | "PING" => ("udp", "dgram"),
        "UDPv6" | "UDPLITEv6" | "PINGv6" => ("udp6", "dgram"),
        "UNIX-STREAM" | "UNIX" => ("unix", "stream"),
        "UNIX-DGRAM" => ("unix", "dgram"),
        "UNIX-SEQPACKET" => ("unix", "seqpacket"),
        "RAW" => ("ip", "raw"),
        "RAWv6" => ("ip6", "raw"),
        "NETLINK" => ("netlink", "raw"),
        "PACKET" => ("packet", "raw"),
        other => return (other.to_ascii_lowercase(), "other"),
    };
    (proto.to_string(), ty)
}

/// A socket not in any table: TCP ones are in CLOSE (created, or failed to connect).
pub fn unlisted_socket(protocol_name: Option<&str>) -> SocketFacts {
    let (proto, sock_type) = from_protocol_name(protocol_name.unwrap_or("?"));
    let tcp_state = proto.starts_with("tcp").then_some("CLOSE");
    SocketFacts {
        proto,
        sock_type,
        local: None,
        peer: None,
        tcp_state,
        in_tables: false,
    }
}

/// The report's description of a socket.
pub fn socket_desc(s: &SocketFacts) -> String {
    describe_socket(&SocketDesc {
        proto: s.proto.clone(),
        sock_type: s.sock_type,
        local: s.local.clone(),
        peer: s.peer.clone(),
        tcp_state: s.tcp_state,
    })
}

/// One registration in an epoll set, from its fdinfo (`tfd: 5 events: 19 data: 5`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EpollWatch {
    /// The fd number the program registered (the registration outlives it if it was closed
    /// while another fd still referred to the same file).
    pub fd: i32,
    /// `in`, `out`, `rdhup`, `pri`, `et`, `oneshot`, `exclusive`, `wakeup`.
    pub events: Vec<&'static str>,
    /// The program's `epoll_data`, as hex.
    pub data: String,
    /// The events as the kernel has them.
    #[serde(skip)]
    pub mask: u32,
}

/// What fdinfo adds to the link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// The open flags (`O_RDONLY`, `O_NONBLOCK`, ...).
    pub flags: u32,
    pub watches: Vec<EpollWatch>,
}

impl FdInfo {
    /// "read end" or "write end", for a pipe.
    pub fn pipe_end(&self) -> Option<&'static str> {
        match self.flags & libc::O_ACCMODE as u32 {
            0 => Some("read end"),
            1 => Some("write end"),
            _ => None,
        }
    }
}

fn epoll_events(mask: u32) -> Vec<&'static str> {
    const NAMES: [(u32, &str); 8] = [
        (libc::EPOLLIN as u32, "in"),
        (libc::EPOLLOUT as u32, "out"),
        (libc::EPOLLPRI as u32, "pri"),
        (libc::EPOLLRDHUP as u32, "rdhup"),
        (libc::EPOLLET as u32, "et"),
        (libc::EPOLLONESHOT as u32, "oneshot"),
        (libc::EPOLLEXCLUSIVE as u32, "exclusive"),
        (libc::EPOLLWAKEUP as u32, "wakeup"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// Parses `/proc/PID/fdinfo/N`.
pub fn parse_fdinfo(text: &str) -> FdInfo {
    let mut info = FdInfo::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("flags:") {
            info.flags = u32::from_str_radix(v.trim(), 8).unwrap_or(0);
        } else if line.starts_with("tfd:") {
            let mut words = line.split_whitespace();
            let mut field = |name: &str| {
                words.by_ref().find(|w| *w == name)?;
                words.next()
            };
            let fd = field("tfd:").and_then(|v| v.parse().ok());
            let events = field("events:").and_then(|v| u32::from_str_radix(v, 16).ok());
            let data = field("data:").and_then(|v| u64::from_str_radix(v, 16).ok());
            if let (Some(fd), Some(events), Some(data)) = (fd, events, data) {
                info.watches.push(EpollWatch {
                    fd,
                    events: epoll_events(events),
                    data: format!("{data:#x}"),
                    mask: events,
                });
            }
        }
    }
    info
}

/// Words for a kind in summaries ("sockets", "directories"); the report's own.
pub fn kind_words(kind: &str, n: usize) -> String {
    let word = match kind {
        "dir" => "directory",
        other => other,
    };
    match (n, kind) {
        (1, _) => word.to_string(),
        (_, "dir") => "directories".to_string(),
        _ => format!("{word}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_links() {
        assert_eq!(kind_of("socket:[123]", false), "socket");
        assert_eq!(kind_of("pipe:[9]", false), "pipe");
        assert_eq!(kind_of("anon_inode:[eventpoll]", false), "epoll");
        assert_eq!(kind_of("anon_inode:inotify", false), "inotify");
        assert_eq!(kind_of("/memfd:buf (deleted)", false), "memfd");
        assert_eq!(kind_of("/dev/pts/3", false), "pty");
        assert_eq!(kind_of("/etc/hosts", false), "file");
        assert_eq!(kind_of("/etc", true), "dir");
        assert_eq!(kind_of("anon_inode:[io_uring]", false), "other");
        assert_eq!(link_inode("socket:[1319616]"), Some(1_319_616));
        assert_eq!(link_inode("/etc/hosts"), None);
    }

    #[test]
    fn socket_descriptions_read_like_the_report() {
        let mut s = SocketFacts {
            proto: "tcp".into(),
            sock_type: "stream",
            local: Some("127.0.0.1:9999".into()),
            peer: Some("127.0.0.1:40000".into()),
            tcp_state: Some("CLOSE_WAIT"),
            in_tables: true,
        };
        assert_eq!(
            socket_desc(&s),
            "tcp 127.0.0.1:9999 -> 127.0.0.1:40000 CLOSE_WAIT"
        );
        s.peer = None;
        s.local = Some("0.0.0.0:9999".into());
        s.tcp_state = Some("LISTEN");
        assert_eq!(socket_desc(&s), "tcp 0.0.0.0:9999 LISTEN");
        assert_eq!(
            socket_desc(&unlisted_socket(Some("TCP"))),
            "tcp unconnected (CLOSE)"
        );
        assert_eq!(
            socket_desc(&unlisted_socket(Some("UDPv6"))),
            "udp6 unconnected"
        );
        let pair = SocketFacts {
            proto: "unix".into(),
            sock_type: "stream",
            local: Some("(unnamed)".into()),
            peer: Some("(unnamed)".into()),
            ..Default::default()
        };
        assert_eq!(socket_desc(&pair), "unix stream (unnamed) -> (unnamed)");
    }

    #[test]
    fn parses_epoll_and_pipe_fdinfo() {
        let epoll = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n\
                     tfd:        5 events:       19 data:                5  pos:0 ino:3f1 sdev:8\n\
                     tfd:        7 events: 80000001 data:     7f0000000007  pos:0 ino:3f2 sdev:8\n";
        let info = parse_fdinfo(epoll);
        assert_eq!(info.flags, 0o2000002);
        assert_eq!(
            info.watches,
            vec![
                EpollWatch {
                    fd: 5,
                    events: vec!["in"],
                    data: "0x5".into(),
                    mask: 0x19
                },
                EpollWatch {
                    fd: 7,
                    events: vec!["in", "et"],
                    data: "0x7f0000000007".into(),
                    mask: 0x8000_0001
                },
            ]
        );
        assert_eq!(
            parse_fdinfo("pos:\t0\nflags:\t0\n").pipe_end(),
            Some("read end")
        );
        assert_eq!(
            parse_fdinfo("pos:\t0\nflags:\t04001\n").pipe_end(),
            Some("write end")
        );
    }
}
