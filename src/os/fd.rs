//! Questions about an fd and writing to one, through libc.

use libc::c_int;

use super::errno::errno;

/// Writes all of `bytes` to `fd`, retrying on EINTR and partial writes. Async-signal-safe.
pub fn write_all(fd: c_int, mut bytes: &[u8]) -> Result<(), c_int> {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        bytes = bytes.get(n as usize..).unwrap_or(&[]);
    }
    Ok(())
}

/// True if `fd` is an open descriptor. Needs no new fd, so it works at EMFILE.
pub fn fd_is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD only queries flags of a descriptor number.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// True if `fd` has `O_NONBLOCK` set.
pub fn is_nonblocking(fd: c_int) -> bool {
    // SAFETY: F_GETFL only reads the status flags of a descriptor number.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl != -1 && fl & libc::O_NONBLOCK != 0
}

/// True if `fd` is a socket on which `listen` was called.
pub fn is_listening(fd: c_int) -> bool {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut v as *mut c_int).cast(),
            &mut len,
        )
    };
    r == 0 && v != 0
}

/// A stream on which the program's own writes can come between fdguard's: what a stderr that
/// is not a file usually is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Pipe,
    /// A stream socket, such as the journal's for a service's stderr.
    Socket,
    Terminal,
}

/// What kind of `Stream` `fd` is, or `None` (a regular file, `/dev/null`, not open).
pub fn stream_kind(fd: c_int) -> Option<Stream> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable; it is read only after fstat succeeded.
    let mode = unsafe {
        if libc::fstat(fd, st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init().st_mode & libc::S_IFMT
    };
    match mode {
        libc::S_IFIFO => Some(Stream::Pipe),
        libc::S_IFSOCK => Some(Stream::Socket),
        // SAFETY: isatty only asks the terminal driver about the descriptor number.
        libc::S_IFCHR if unsafe { libc::isatty(fd) } == 1 => Some(Stream::Terminal),
        _ => None,
    }
}
