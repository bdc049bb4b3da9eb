//! What an fd is (`FdKind`) and which libc call made or released it (`Call`).
//!
//! Both are stored as one byte in the fd table and turned into names only at report time.

/// Declares a `u8` enum with its report name, and the reverse lookup from a stored byte.
macro_rules! named_u8_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            pub fn from_u8(v: u8) -> Option<$name> {
                Self::ALL.get(v as usize).copied()
            }
        }
    };
}

named_u8_enum! {
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

named_u8_enum! {
    /// The libc entry point that created (or released) an fd, as the program called it.
    pub enum Call {
        Inherited => "inherited",
        Open => "open",
        Open64 => "open64",
        Openat => "openat",
        Openat64 => "openat64",
        Creat => "creat",
        Creat64 => "creat64",
        Open2 => "__open_2",
        Open64_2 => "__open64_2",
        Openat2 => "__openat_2",
        Openat64_2 => "__openat64_2",
        Fopen => "fopen",
        Fopen64 => "fopen64",
        Freopen => "freopen",
        Freopen64 => "freopen64",
        Fdopen => "fdopen",
        Opendir => "opendir",
        Fdopendir => "fdopendir",
        Tmpfile => "tmpfile",
        Tmpfile64 => "tmpfile64",
        Mkstemp => "mkstemp",
        Mkstemp64 => "mkstemp64",
        Mkostemp => "mkostemp",
        Mkostemp64 => "mkostemp64",
        Mkstemps => "mkstemps",
        Mkstemps64 => "mkstemps64",
        Mkostemps => "mkostemps",
        Mkostemps64 => "mkostemps64",
        MemfdCreate => "memfd_create",
        PosixOpenpt => "posix_openpt",
        Getpt => "getpt",
        Popen => "popen",
        Socket => "socket",
        Socketpair => "socketpair",
        Accept => "accept",
        Accept4 => "accept4",
        Recvmsg => "recvmsg",
        Recvmmsg => "recvmmsg",
        Pipe => "pipe",
        Pipe2 => "pipe2",
        EpollCreate => "epoll_create",
        EpollCreate1 => "epoll_create1",
        Eventfd => "eventfd",
        TimerfdCreate => "timerfd_create",
        Signalfd => "signalfd",
        InotifyInit => "inotify_init",
        InotifyInit1 => "inotify_init1",
        FanotifyInit => "fanotify_init",
        PidfdOpen => "pidfd_open",
        Dup => "dup",
        Dup2 => "dup2",
        Dup3 => "dup3",
        Fcntl => "fcntl",
        Fcntl64 => "fcntl64",
        Close => "close",
        CloseRange => "close_range",
        Closefrom => "closefrom",
        Fclose => "fclose",
        Fcloseall => "fcloseall",
        Closedir => "closedir",
        Pclose => "pclose",
        Untracked => "untracked",
        BeforeAttach => "before attach",
    }
}

impl Call {
    /// Open before fdguard was there to see it created: inherited at start, or open when
    /// `fdguard attach` loaded it. No stack, no thread; not a leak at exit.
    pub fn predates_fdguard(self) -> bool {
        matches!(self, Call::Inherited | Call::BeforeAttach)
    }

    /// The kind an fd made by this call has, when the call alone says so. Report time asks the
    /// kernel first; this is the answer when the fd can no longer be inspected.
    #[inline(always)]
    pub fn default_kind(self) -> FdKind {
        use Call::*;
        match self {
            Opendir | Fdopendir => FdKind::Dir,
            Socket | Socketpair | Accept | Accept4 => FdKind::Socket,
            Pipe | Pipe2 | Popen => FdKind::Pipe,
            EpollCreate | EpollCreate1 => FdKind::Epoll,
            Eventfd => FdKind::Eventfd,
            TimerfdCreate => FdKind::Timerfd,
            Signalfd => FdKind::Signalfd,
            InotifyInit | InotifyInit1 => FdKind::Inotify,
            FanotifyInit => FdKind::Fanotify,
            MemfdCreate => FdKind::Memfd,
            PidfdOpen => FdKind::Pidfd,
            PosixOpenpt | Getpt => FdKind::Pty,
            Open | Open64 | Openat | Openat64 | Creat | Creat64 | Open2 | Open64_2 | Openat2
            | Openat64_2 | Fopen | Fopen64 | Freopen | Freopen64 | Tmpfile | Tmpfile64
            | Mkstemp | Mkstemp64 | Mkostemp | Mkostemp64 | Mkstemps | Mkstemps64 | Mkostemps
            | Mkostemps64 => FdKind::File,
            _ => FdKind::Other,
        }
    }

    /// Calls whose fd lives inside a stdio `FILE` (closed by `fclose`, flushed by `fcloseall`).
    #[inline(always)]
    pub fn makes_stream(self) -> bool {
        use Call::*;
        matches!(
            self,
            Fopen | Fopen64 | Freopen | Freopen64 | Fdopen | Tmpfile | Tmpfile64 | Popen
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_u8() {
        for c in Call::ALL {
            assert_eq!(Call::from_u8(*c as u8), Some(*c));
        }
        for k in FdKind::ALL {
            assert_eq!(FdKind::from_u8(*k as u8), Some(*k));
        }
        assert_eq!(FdKind::from_u8(200), None);
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
}

/// How many bytes of a path the table keeps: the end of it, where the file name is.
pub const PATH_TAIL: usize = 32;

/// The last `PATH_TAIL` bytes of a path as the program gave it, kept inline in the fd table: no
/// hashing or allocation at `open`, and memory bounded by the number of open fds however many
/// distinct names a program uses. The kernel's full path is read at report time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathTail([u64; PATH_WORDS]);

const PATH_WORDS: usize = PATH_TAIL / 8;
// `PathTail::of` builds exactly four words.
const _: () = assert!(PATH_WORDS == 4);

impl PathTail {
    /// The tail of `path` and the path's full length.
    ///
    /// Built from whole-word loads of the program's string, never through a byte buffer: a
    /// word read back from a buffer just filled byte-wise (or by `memcpy`) stalls store
    /// forwarding, ~15 ns on every `open` here.
    #[inline(always)]
    pub fn of(path: &[u8]) -> (PathTail, u32) {
        let tail = &path[path.len().saturating_sub(PATH_TAIL)..];
        let n = tail.len();
        let words = if n >= 8 {
            // Word `i` is bytes 8i.. of the tail, loaded from where a whole word still fits
            // (8i, or n - 8 for the last, partial one) and shifted down by the bytes it loaded
            // too early; a word past the end shifts out completely. Four loads, no branches:
            // the hot path's size is what costs here, since each system call leaves the
            // instruction cache cold.
            std::array::from_fn(|i| {
                let at = (8 * i).min(n - 8);
                let skip = (8 * i - at) as u32;
                let word = tail[at..at + 8].try_into().map_or(0, u64::from_le_bytes);
                word.checked_shr(8 * skip).unwrap_or(0)
            })
        } else {
            [partial_word(tail), 0, 0, 0]
        };
        (PathTail(words), path.len() as u32)
    }

    /// True when no path was recorded (or it was empty).
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.0.iter().fold(0, |any, w| any | w) == 0
    }

    /// The path as text: `…` plus the tail when the path was longer than the tail kept.
    pub fn text(&self, full_len: u32) -> String {
        let bytes: Vec<u8> = self.0.iter().flat_map(|w| w.to_le_bytes()).collect();
        let kept = (full_len as usize).min(PATH_TAIL);
        let tail = String::from_utf8_lossy(&bytes[..kept]);
        if full_len as usize > PATH_TAIL {
            format!("…{tail}")
        } else {
            tail.into_owned()
        }
    }

    /// The tail as the table stores it.
    pub fn words(&self) -> [u64; PATH_WORDS] {
        self.0
    }

    pub fn from_words(w: [u64; PATH_WORDS]) -> PathTail {
        PathTail(w)
    }
}

/// Up to 7 bytes as the low bytes of a little-endian word, from at most two loads.
#[inline(always)]
fn partial_word(b: &[u8]) -> u64 {
    let n = b.len();
    let le32 = |at: usize| {
        b.get(at..at + 4)
            .and_then(|c| c.try_into().ok())
            .map_or(0, |c| u64::from(u32::from_le_bytes(c)))
    };
    match n {
        0 => 0,
        1..=3 => b
            .iter()
            .enumerate()
            .fold(0, |v, (i, &c)| v | u64::from(c) << (8 * i)),
        // Two overlapping 4-byte loads; the bytes they share are equal, so OR joins them.
        _ => le32(0) | le32(n - 4) << (8 * (n - 4)),
    }
}

/// Call-specific facts packed into `FdRecord::detail` (8 bits of tag, 56 of payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    None,
    /// A path (or command, for `popen`; name, for `memfd_create`) as the program gave it: its
    /// full length; its last bytes are in `FdRecord::path`.
    Path(u32),
    /// Socket domain, type (with flags) and protocol as passed to `socket`/`socketpair`.
    Socket {
        domain: u16,
        ty: u32,
        protocol: u16,
    },
    /// The fd this one came from: the listener of `accept`, the source of `dup`, the socket of
    /// `recvmsg`.
    FromFd(i32),
    /// The process a pidfd refers to.
    Pid(i32),
}

impl Detail {
    const TAG_SHIFT: u32 = 56;

    #[inline(always)]
    pub fn pack(self) -> u64 {
        let (tag, payload): (u64, u64) = match self {
            Detail::None => (0, 0),
            Detail::Path(id) => (1, id as u64),
            Detail::Socket {
                domain,
                ty,
                protocol,
            } => (
                2,
                domain as u64 | ((ty as u64) << 16) | ((protocol as u64) << 48),
            ),
            Detail::FromFd(fd) => (3, fd as u32 as u64),
            Detail::Pid(pid) => (4, pid as u32 as u64),
        };
        (tag << Self::TAG_SHIFT) | (payload & ((1 << Self::TAG_SHIFT) - 1))
    }

    pub fn unpack(v: u64) -> Detail {
        let payload = v & ((1 << Self::TAG_SHIFT) - 1);
        match v >> Self::TAG_SHIFT {
            1 => Detail::Path(payload as u32),
            2 => Detail::Socket {
                domain: payload as u16,
                ty: (payload >> 16) as u32,
                protocol: (payload >> 48) as u16,
            },
            3 => Detail::FromFd(payload as u32 as i32),
            4 => Detail::Pid(payload as u32 as i32),
            _ => Detail::None,
        }
    }
}

#[cfg(test)]
mod detail_tests {
    use super::*;

    #[test]
    fn path_tails_keep_the_end_and_mark_truncation() {
        let (t, n) = PathTail::of(b"/etc/hosts");
        assert_eq!((t.text(n), n), ("/etc/hosts".to_string(), 10));
        let long = b"/var/lib/postgresql/15/main/base/16384/2619_fsm";
        let (t, n) = PathTail::of(long);
        assert_eq!(t.text(n), "…esql/15/main/base/16384/2619_fsm");
        assert_eq!(PathTail::from_words(t.words()), t);
        let (t, n) = PathTail::of(b"");
        assert_eq!(t.text(n), "");
    }

    #[test]
    fn path_tails_are_the_last_bytes_for_every_length() {
        let all: Vec<u8> = (1..=45).collect();
        for len in 0..=all.len() {
            let path = &all[..len];
            let (t, n) = PathTail::of(path);
            let kept = &path[len.saturating_sub(PATH_TAIL)..];
            let mut want = [0u8; PATH_TAIL];
            want[..kept.len()].copy_from_slice(kept);
            let got: Vec<u8> = t.words().iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(
                (got.as_slice(), n as usize),
                (&want[..], len),
                "length {len}"
            );
        }
    }

    #[test]
    fn details_round_trip() {
        for d in [
            Detail::None,
            Detail::Path(0),
            Detail::Path(u32::MAX),
            Detail::Socket {
                domain: libc::AF_INET6 as u16,
                ty: (libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u32,
                protocol: 6,
            },
            Detail::FromFd(0),
            Detail::FromFd(i32::MAX),
            Detail::Pid(4242),
        ] {
            assert_eq!(Detail::unpack(d.pack()), d);
        }
    }
}
