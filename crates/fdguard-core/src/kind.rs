//! What an fd is: `FdKind`, named from the kernel's own view of it (the link in
//! `/proc/PID/fd`), and the words reports use for kinds. One table, read by the library at
//! report time and by the command from outside.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

crate::named::named_u8_enum! {
    /// The kind of object behind an fd. The names are the report's `kind` values.
    pub enum FdKind {
        File => "file",
        Dir => "dir",
        Socket => "socket",
        Pipe => "pipe",
        Epoll => "epoll",
        Eventfd => "eventfd",
        Timerfd => "timerfd",
        Signalfd => "signalfd",
        Inotify => "inotify",
        Fanotify => "fanotify",
        Memfd => "memfd",
        Pidfd => "pidfd",
        Pty => "pty",
        Other => "other",
    }
}

/// What an fd is before anything says otherwise.
impl Default for FdKind {
    fn default() -> Self {
        FdKind::Other
    }
}

impl AsRef<str> for FdKind {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl Serialize for FdKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A kind this version does not know (written by a newer fdguard) reads as `other`.
impl<'de> Deserialize<'de> for FdKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(FdKind::from_name(&name).unwrap_or(FdKind::Other))
    }
}

/// Classifies an fd from what `readlink("/proc/self/fd/N")` says, the kernel's own view.
/// `is_dir` comes from `fstat`, since a directory's link looks like any path.
pub fn kind_from_link(link: &[u8], is_dir: bool) -> FdKind {
    const PREFIXES: &[(&[u8], FdKind)] = &[
        (b"socket:", FdKind::Socket),
        (b"pipe:", FdKind::Pipe),
        (b"anon_inode:[eventpoll]", FdKind::Epoll),
        (b"anon_inode:[eventfd]", FdKind::Eventfd),
        (b"anon_inode:[timerfd]", FdKind::Timerfd),
        (b"anon_inode:[signalfd]", FdKind::Signalfd),
        (b"anon_inode:inotify", FdKind::Inotify),
        (b"anon_inode:[fanotify]", FdKind::Fanotify),
        (b"anon_inode:[pidfd]", FdKind::Pidfd),
        (b"pidfd:", FdKind::Pidfd),
        (b"/memfd:", FdKind::Memfd),
        (b"/dev/ptmx", FdKind::Pty),
        (b"/dev/pts/", FdKind::Pty),
    ];
    if is_dir {
        return FdKind::Dir;
    }
    for (prefix, kind) in PREFIXES {
        if link.starts_with(prefix) {
            return *kind;
        }
    }
    if link.starts_with(b"/") {
        FdKind::File
    } else {
        FdKind::Other
    }
}
/// Whether an fd recorded as `recorded` (from the call that made it) can be what the kernel
/// now calls `now`: the same kind; anything for a kind the call did not say (`Other`: an
/// inherited fd, one received in a message, a copy of an unknown one); and for a path the
/// program opened, any kind a path can open (a directory, a terminal, a FIFO or a pipe reopened
/// through `/proc/self/fd`, a memfd). Anything else means the number was closed and reused
/// behind fdguard's back (a raw system call, io_uring).
pub fn kinds_agree(recorded: FdKind, now: FdKind) -> bool {
    use FdKind::*;
    recorded == now
        || recorded == Other
        || matches!(recorded, File | Dir | Pty) && matches!(now, File | Dir | Pty | Pipe | Memfd)
}

/// Which end of a pipe an fd is, from its open flags (`fcntl(F_GETFL)`, or `flags:` in
/// `/proc/PID/fdinfo/N`).
pub fn pipe_end(flags: u32) -> Option<&'static str> {
    match flags & libc::O_ACCMODE as u32 {
        0 => Some("read end"),
        1 => Some("write end"),
        _ => None,
    }
}

/// Words for `n` fds of a kind in summaries: "sockets", "directories", and "FILE streams" for
/// files behind stdio streams (what readers search for).
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

    #[test]
    fn round_trips_through_u8_and_name() {
        for k in FdKind::ALL {
            assert_eq!(FdKind::from_u8(*k as u8), Some(*k));
            assert_eq!(FdKind::from_name(k.name()), Some(*k));
        }
        assert_eq!(FdKind::from_u8(200), None);
        let read: Vec<FdKind> = serde_json::from_str(r#"["pipe","io_uring"]"#).unwrap();
        assert_eq!(read, [FdKind::Pipe, FdKind::Other]);
        assert_eq!(serde_json::to_string(&FdKind::Dir).unwrap(), r#""dir""#);
    }

    #[test]
    fn classifies_kernel_links() {
        assert_eq!(kind_from_link(b"socket:[123]", false), FdKind::Socket);
        assert_eq!(kind_from_link(b"pipe:[9]", false), FdKind::Pipe);
        assert_eq!(
            kind_from_link(b"anon_inode:[eventpoll]", false),
            FdKind::Epoll
        );
        assert_eq!(
            kind_from_link(b"anon_inode:inotify", false),
            FdKind::Inotify
        );
        assert_eq!(kind_from_link(b"/memfd:x (deleted)", false), FdKind::Memfd);
        assert_eq!(kind_from_link(b"/dev/pts/3", false), FdKind::Pty);
        assert_eq!(kind_from_link(b"/tmp", true), FdKind::Dir);
        assert_eq!(kind_from_link(b"/etc/hosts", false), FdKind::File);
        assert_eq!(
            kind_from_link(b"anon_inode:[io_uring]", false),
            FdKind::Other
        );
    }

    #[test]
    fn kinds_agree_unless_the_number_was_reused() {
        use FdKind::*;
        assert!(kinds_agree(Socket, Socket) && kinds_agree(Other, Epoll));
        assert!(kinds_agree(File, Dir) && kinds_agree(File, Pty) && kinds_agree(File, Pipe));
        assert!(
            !kinds_agree(Socket, File),
            "socket() then a raw close and open"
        );
        assert!(!kinds_agree(Pipe, File) && !kinds_agree(File, Socket));
        assert!(!kinds_agree(Eventfd, Timerfd) && !kinds_agree(File, Other));
    }

    #[test]
    fn words_for_kinds() {
        assert_eq!(kind_words(FdKind::Socket, 3, false), "sockets");
        assert_eq!(kind_words(FdKind::Dir, 2, false), "directories");
        assert_eq!(kind_words(FdKind::File, 1, true), "FILE stream");
        assert_eq!(kind_words(FdKind::Epoll, 1, true), "epoll");
        assert_eq!(pipe_end(0o2000000), Some("read end"));
        assert_eq!(pipe_end(0o4001), Some("write end"));
        assert_eq!(pipe_end(2), None);
    }
}
