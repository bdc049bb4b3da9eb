//! `/proc/PID` and its fd directories, read by directory fd: one path component per question
//! about a process, one system call per fd.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::fail::Failure;

/// The file an fd refers to, as `/proc/locks` names it, and its type bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub ino: u64,
    pub kind: u32,
}

/// `/proc/PID` of one process, opened once (`O_PATH`): its files are then opened relative to
/// it, one path component each instead of three, and all of them are of this one process (a
/// pid taken again by another process after it was reaped reads as gone, not as the other).
pub struct ProcDir {
    dir: OwnedFd,
}

impl ProcDir {
    pub fn open(pid: i32) -> io::Result<ProcDir> {
        let path = CString::new(format!("/proc/{pid}")).map_err(io::Error::other)?;
        // SAFETY: `path` is NUL-terminated; the fd returned is owned by `dir` from here on.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        Ok(ProcDir { dir: owned(raw)? })
    }

    fn open_at(&self, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        // SAFETY: `name` is NUL-terminated and the dir fd is open for as long as `self` lives.
        owned(unsafe { libc::openat(self.dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) })
    }

    /// Reads the file `name` (`c"stat"`) whole into `buf`, which it clears first. No size
    /// is asked first (procfs says 0), and `buf` keeps its room from one file to the next.
    pub fn read(&self, name: &CStr, buf: &mut Vec<u8>) -> io::Result<()> {
        let file = File::from(self.open_at(name, libc::O_RDONLY)?);
        buf.clear();
        buf.reserve(4096);
        io::Read::read_to_end(&mut io::Read::take(file, u64::MAX), buf)?;
        Ok(())
    }

    /// What the link `name` (`c"ns/net"`) points to.
    pub fn read_link(&self, name: &CStr) -> io::Result<Vec<u8>> {
        let mut buf = [0u8; 4096];
        Ok(read_link_at(self.dir.as_raw_fd(), name, &mut buf)?.to_vec())
    }

    /// The process's fd links (`fd`), opened without its fdinfo: what the host view reads.
    pub fn fd_links(&self) -> io::Result<FdLinks> {
        Ok(FdLinks {
            dir: File::from(self.open_at(c"fd", libc::O_RDONLY | libc::O_DIRECTORY)?),
        })
    }
}

/// `readlinkat(dir, name)` into `buf`: the link's text.
fn read_link_at<'b>(dir: libc::c_int, name: &CStr, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    // SAFETY: `name` is NUL-terminated and `buf` writable for its length; a `dir` that is not
    // open is the kernel's EBADF, not memory.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    Ok(&buf[..n])
}

/// Takes ownership of the fd a system call returned, or its error.
fn owned(raw: libc::c_int) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `/proc/PID/fd` of one process, opened once: every question about an fd is then one system
/// call relative to it, which is what makes 100,000 fds fast.
pub struct FdLinks {
    dir: File,
}

/// `FdLinks` and `/proc/PID/fdinfo`: what `inspect` and the commands that act on one process
/// read. The host view opens `FdLinks` alone: it reads no fdinfo.
pub struct FdDir {
    pid: i32,
    links: FdLinks,
    info_dir: File,
}

impl std::ops::Deref for FdDir {
    type Target = FdLinks;

    fn deref(&self) -> &FdLinks {
        &self.links
    }
}

impl FdDir {
    /// Opens the process's fd directories; the errors say what the user can do about them.
    pub fn open(pid: i32) -> Result<FdDir, Failure> {
        let open = |what: &str| {
            let path = format!("/proc/{pid}/{what}");
            File::open(&path).map_err(|e| Failure::proc_access(pid, &path, &e))
        };
        Ok(FdDir {
            pid,
            links: FdLinks { dir: open("fd")? },
            info_dir: open("fdinfo")?,
        })
    }

    /// The process's open fd numbers, sorted.
    pub fn numbers(&self) -> Result<Vec<i32>, Failure> {
        let path = format!("/proc/{}/fd", self.pid);
        self.links
            .numbers_from(0)
            .map_err(|e| Failure::proc_access(self.pid, &path, &e))
    }

    /// `/proc/PID/fdinfo/N`: position, flags, and what epoll sets, eventfds or inotify
    /// instances hold.
    pub fn fdinfo(&self, fd: i32) -> Option<String> {
        let name = FdName::of(fd)?;
        // SAFETY: `name` is NUL-terminated and the dir fd is open for as long as `self` lives.
        let raw = unsafe {
            libc::openat(
                self.info_dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        let file = File::from(owned(raw).ok()?);
        // Through `take`: `File::read_to_string` first stats the file for a size hint (procfs
        // says 0), one system call more per fd.
        let mut text = String::new();
        io::Read::read_to_string(&mut io::Read::take(file, u64::MAX), &mut text).ok()?;
        Some(text)
    }

    /// The kernel's name for a socket's protocol (`TCP`, `UDPv6`, `UNIX-STREAM`, `NETLINK`),
    /// which it gives even for a socket no `/proc/net` table lists: the ones lsof calls
    /// "can't identify protocol".
    pub fn socket_protocol(&self, fd: i32) -> Option<String> {
        let path = CString::new(format!("/proc/{}/fd/{fd}", self.pid)).ok()?;
        let name = c"system.sockprotoname";
        let mut buf = [0u8; 64];
        // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let n = usize::try_from(n).ok()?;
        let text = &buf[..n];
        let end = text.iter().position(|b| *b == 0).unwrap_or(n);
        Some(String::from_utf8_lossy(&text[..end]).into_owned())
    }
}

impl FdLinks {
    /// How many fds the process has open: the directory's size, which Linux 6.2 and later
    /// set to that (one `fstat`, no listing); `None` when it says 0: no fd open, or an
    /// older kernel that does not count.
    pub fn count(&self) -> Option<usize> {
        let st = fstat(self.dir.as_raw_fd())?;
        usize::try_from(st.st_size).ok().filter(|n| *n > 0)
    }

    /// What fd `fd` points to, into `buf`; the error is the kernel's (`ENOENT` once the fd is
    /// closed, `EACCES` when this user may not read the process's fds).
    pub fn read_link<'b>(&self, fd: i32, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
        let name = FdName::of(fd).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        read_link_at(self.dir.as_raw_fd(), name.as_cstr(), buf)
    }

    /// What `/proc/PID/fd/N` points to; `None` once the fd is closed.
    pub fn link(&self, fd: i32) -> Option<String> {
        let mut buf = [0u8; 4096];
        let link = self.read_link(fd, &mut buf).ok()?;
        Some(String::from_utf8_lossy(link).into_owned())
    }

    /// The open fd numbers from `first` on, sorted: the directory listed from there (its
    /// position is the fd number plus 2, after `.` and `..`), so what lies below is not
    /// listed again.
    pub fn numbers_from(&self, first: i32) -> io::Result<Vec<i32>> {
        // A description of its own: the listing moves its position, and other threads may
        // read links through `dir` meanwhile.
        let listing = self.reopen()?.dir;
        let start = libc::off_t::from(first.max(0)) + 2;
        // SAFETY: lseek takes only numbers. Should a kernel not seek this directory, the
        // listing starts at 0 and the numbers below `first` are dropped below.
        unsafe { libc::lseek(listing.as_raw_fd(), start, libc::SEEK_SET) };
        let mut fds = Vec::new();
        // What is listed is mostly a few fds above the count: 8 KiB holds about 300.
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    listing.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
            if n == 0 {
                break;
            }
            fds.extend(dirent_names(&buf[..n]).filter_map(|name| {
                let fd: i32 = std::str::from_utf8(name).ok()?.parse().ok()?;
                (fd >= first).then_some(fd)
            }));
        }
        fds.sort_unstable();
        Ok(fds)
    }

    /// The same directory opened again: an open file description of its own. Threads that
    /// share one make every system call through it count a reference up and down on that
    /// one description, a cache line they pass back and forth.
    pub fn reopen(&self) -> io::Result<FdLinks> {
        // SAFETY: the name is NUL-terminated and `dir` is open for as long as `self` lives.
        let raw = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c".".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        Ok(FdLinks {
            dir: File::from(owned(raw)?),
        })
    }

    /// The file type bits (`S_IFMT`) of what the fd refers to.
    pub fn file_type(&self, fd: i32) -> Option<u32> {
        Some(self.stat(fd)?.st_mode & libc::S_IFMT)
    }

    /// What the fd refers to: device, inode and file type bits.
    pub fn identity(&self, fd: i32) -> Option<FileId> {
        let st = self.stat(fd)?;
        Some(FileId {
            major: libc::major(st.st_dev),
            minor: libc::minor(st.st_dev),
            ino: st.st_ino,
            kind: st.st_mode & libc::S_IFMT,
        })
    }

    fn stat(&self, fd: i32) -> Option<libc::stat> {
        let name = FdName::of(fd)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `name` is NUL-terminated, `st` writable; it is read only if fstatat succeeded.
        // Flags 0 follow the magic link to the open file itself.
        unsafe {
            if libc::fstatat(self.dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), 0) != 0 {
                return None;
            }
            Some(st.assume_init())
        }
    }
}

/// `fstat` of an open fd.
fn fstat(fd: libc::c_int) -> Option<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable and read only if fstat succeeded.
    unsafe {
        if libc::fstat(fd, st.as_mut_ptr()) != 0 {
            return None;
        }
        Some(st.assume_init())
    }
}

/// The names in a buffer of `linux_dirent64` records (`getdents64`): inode (8 bytes), offset
/// (8), record length (2), type (1), then the NUL-terminated name.
fn dirent_names(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(
            buf.get(at + 16..at + 18)?.try_into().ok()?,
        ));
        let record = buf.get(at..at + len).filter(|_| len > 19)?;
        at += len;
        let name = &record[19..];
        Some(&name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())])
    })
}

/// An fd's name in `/proc/PID/fd` and `/proc/PID/fdinfo`, NUL-terminated, made without
/// allocating: it is made once per fd read.
struct FdName {
    buf: [u8; 12],
    start: usize,
}

impl FdName {
    fn of(fd: i32) -> Option<FdName> {
        let mut n = u32::try_from(fd).ok()?;
        let mut name = FdName {
            buf: [0; 12],
            start: 11,
        };
        loop {
            name.start -= 1;
            name.buf[name.start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return Some(name);
            }
        }
    }

    fn as_cstr(&self) -> &CStr {
        // Digits then the one NUL at the end: always a C string (the empty name, which names
        // no fd, otherwise).
        CStr::from_bytes_with_nul(&self.buf[self.start..]).unwrap_or(c"")
    }

    fn as_ptr(&self) -> *const libc::c_char {
        self.as_cstr().as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(fd: i32) -> Option<Vec<u8>> {
        let n = FdName::of(fd)?;
        Some(n.as_cstr().to_bytes().to_vec())
    }

    #[test]
    fn fd_names_are_decimal() {
        assert_eq!(name(0).as_deref(), Some(&b"0"[..]));
        assert_eq!(name(19940).as_deref(), Some(&b"19940"[..]));
        assert_eq!(name(i32::MAX).as_deref(), Some(&b"2147483647"[..]));
        assert_eq!(name(-1), None);
    }

    #[test]
    fn dirents_give_their_names() {
        let mut buf = Vec::new();
        for (name, len) in [(&b"."[..], 24usize), (b"12", 24), (b"1234567", 32)] {
            let start = buf.len();
            buf.resize(start + len, 0);
            buf[start + 16..start + 18].copy_from_slice(&(len as u16).to_ne_bytes());
            buf[start + 19..start + 19 + name.len()].copy_from_slice(name);
        }
        let names: Vec<&[u8]> = dirent_names(&buf).collect();
        assert_eq!(names, [&b"."[..], b"12", b"1234567"]);
        // A record that claims less than its header, or more than there is, ends the list.
        buf[16..18].copy_from_slice(&3u16.to_ne_bytes());
        assert_eq!(dirent_names(&buf).count(), 0);
        assert_eq!(dirent_names(&buf[..20]).count(), 0);
    }

    #[test]
    fn own_fds_listed_from_a_number() {
        let links = ProcDir::open(std::process::id() as i32)
            .and_then(|d| d.fd_links())
            .unwrap();
        let all = links.numbers_from(0).unwrap();
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
        assert!(all.starts_with(&[0, 1, 2]), "{all:?}");
        assert!(links.numbers_from(3).unwrap().iter().all(|fd| *fd >= 3));
    }
}
