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

/// True if `fd` is a regular file owned by this process's effective user.
pub fn is_own_regular_file(fd: c_int) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable; it is read only after fstat succeeded.
    unsafe {
        libc::fstat(fd, st.as_mut_ptr()) == 0 && {
            let st = st.assume_init();
            st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == super::process::euid()
        }
    }
}

/// The mode and owner of the file at the NUL-terminated `path`, not following a final symlink
/// (`lstat`), or the errno.
pub fn lstat_owner(path: &[u8]) -> Result<(libc::mode_t, libc::uid_t), c_int> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    if !path.ends_with(b"\0") {
        return Err(libc::EINVAL);
    }
    // SAFETY: `path` is NUL-terminated (checked); `st` is read only after lstat succeeded.
    unsafe {
        if libc::lstat(path.as_ptr().cast(), st.as_mut_ptr()) != 0 {
            return Err(errno());
        }
        let st = st.assume_init();
        Ok((st.st_mode, st.st_uid))
    }
}

/// Whether this process's effective user may create files in the NUL-terminated directory
/// `dir`, or the errno that says why not.
pub fn may_create_in(dir: &[u8]) -> Result<(), c_int> {
    if !dir.ends_with(b"\0") {
        return Err(libc::EINVAL);
    }
    // SAFETY: `dir` is NUL-terminated (checked); faccessat only reads it.
    let r = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            dir.as_ptr().cast(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}
