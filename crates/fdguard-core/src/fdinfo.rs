//! What `/proc/PID/fdinfo/N` adds to an fd's link: its open flags (which end of a pipe) and,
//! for an epoll set, what it watches; and the inode in a `socket:[N]` or `pipe:[N]` link.

use serde::{Deserialize, Serialize};

use crate::report::Word;

/// The inode in a `socket:[N]` or `pipe:[N]` link.
pub fn link_inode(link: &str) -> Option<u64> {
    let (_, rest) = link.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// One registration in an epoll set, from its fdinfo (`tfd: 5 events: 19 data: 5`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpollWatch {
    /// The fd number the program registered (the registration outlives it if it was closed
    /// while another fd still referred to the same file).
    pub fd: i32,
    /// `in`, `out`, `rdhup`, `pri`, `et`, `oneshot`, `exclusive`, `wakeup`.
    pub events: Vec<Word>,
    /// The program's `epoll_data`, as hex.
    pub data: String,
    /// The events as the kernel has them (not in the JSON: `events` names them).
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
        crate::kind::pipe_end(self.flags)
    }
}

fn epoll_events(mask: u32) -> Vec<Word> {
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
        .map(|(_, n)| Word::Borrowed(n))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_of_links() {
        assert_eq!(link_inode("socket:[1319616]"), Some(1_319_616));
        assert_eq!(link_inode("pipe:[9]"), Some(9));
        assert_eq!(link_inode("/etc/hosts"), None);
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
                    events: vec!["in".into()],
                    data: "0x5".into(),
                    mask: 0x19
                },
                EpollWatch {
                    fd: 7,
                    events: vec!["in".into(), "et".into()],
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
