//! Which call made (or released) an fd: `Call`, the report's `call` values. The library
//! records it per fd in one byte of its table.

use crate::kind::FdKind;

crate::named::named_u8_enum! {
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

    /// Whether fdguard knows how old an fd made by this call is. Not for one open when an
    /// attach loaded fdguard: its table holds the attach's time, which says nothing of the
    /// fd's (an inherited fd's age counts from the program's start, which is what the program
    /// has known of it).
    pub fn age_known(self) -> bool {
        self != Call::BeforeAttach
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_u8_and_name() {
        for c in Call::ALL {
            assert_eq!(Call::from_u8(*c as u8), Some(*c));
            assert_eq!(Call::from_name(c.name()), Some(*c));
        }
        assert_eq!(Call::from_name("before attach"), Some(Call::BeforeAttach));
        assert!(Call::Inherited.predates_fdguard() && !Call::Open.predates_fdguard());
        assert!(!Call::BeforeAttach.age_known() && Call::Inherited.age_known());
        assert_eq!(Call::Accept4.default_kind(), FdKind::Socket);
        assert!(Call::Fdopen.makes_stream() && !Call::Open.makes_stream());
    }
}
