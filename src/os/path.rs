//! Opening a report file by a path that no other user can redirect.
//!
//! # Why
//! `O_NOFOLLOW` guards only the last component of a path. A directory on the way that is a
//! symlink is followed, so whoever may write one of the path's directories (`/tmp`, a shared
//! log directory) could plant `/tmp/app -> /etc` and have a root program append its reports to
//! a file of their choosing; and a hard link to someone else's file is a regular file like any
//! other.
//!
//! # Which symlinks are followed
//! Only those owned by root or by this process's effective user. A symlink is owned by whoever
//! made it and only root can give it to another user, so one owned by anybody else may have
//! been planted by them; root's are the system's own (`/var/run -> /run`, `/lib -> usr/lib`)
//! and this user's are of its own making. Refusing every symlink (`openat2` with
//! `RESOLVE_NO_SYMLINKS`) would refuse such system paths, and the kernel's
//! `fs.protected_symlinks` refuses other users' symlinks only in sticky world-writable
//! directories. The report file itself is never a symlink, whoever owns it, and must be a
//! regular file of this user with one link (no other name that someone else could write it
//! through, or that is someone else's file).
//!
//! # How
//! Component by component, with fds: each directory is opened `O_PATH | O_NOFOLLOW` relative to
//! the one before and looked at through that fd (`fstat`); a symlink's text is read from its
//! own fd. What is checked is what is used: no path is resolved again between the check and the
//! open, and the file is opened relative to its directory's fd. At most `MAX_LINKS` symlinks are
//! followed. The fds are opened with the raw system call (no hook sees them, at load or in a
//! report child) and closed at once. `openat2` is not used, not even as a shortcut where no
//! symlink is on the way: it cannot tell root's symlinks from others', so the walk is needed
//! anyway, and the walk costs three system calls a directory, once per report.
//!
//! Unlike the rest of `os`, this allocates (the path's pieces): it runs at load and in report
//! children, never in a signal handler or a hook.

use libc::c_int;

use super::errno::errno;
use super::process::euid;
use super::sys::raw_close;

/// Symlinks followed at most in one path: the kernel's own limit (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Why a report file cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A system call failed with this errno (no such directory, permission denied, ...).
    Errno(c_int),
    /// A directory on the way is a symlink owned by `uid`, neither root nor this user; `at` is
    /// the path up to it, as walked.
    ForeignSymlink { at: Vec<u8>, uid: u32 },
    /// The file itself is a symlink.
    Symlink,
    /// The file is not a regular file.
    NotRegular,
    /// The file belongs to `uid`, not to this user.
    Owner(u32),
    /// The file has `n` links.
    Links(u64),
}

impl From<c_int> for Refused {
    fn from(e: c_int) -> Self {
        Refused::Errno(e)
    }
}

/// Opens the file at `path` for appending, never truncating; creates it with mode 0600 if
/// `create` and it is missing. Every directory is reached as the module comment says; the file
/// must be a regular file of this user with one link. The fd is close-on-exec and non-blocking.
pub fn open_append(path: &[u8], create: bool) -> Result<c_int, Refused> {
    let (dir, name) = parent(path)?;
    let flags = libc::O_WRONLY
        | libc::O_APPEND
        | libc::O_NOFOLLOW
        | libc::O_CLOEXEC
        | libc::O_NOCTTY
        | libc::O_NONBLOCK
        | if create { libc::O_CREAT } else { 0 };
    let file = open_at(dir.0, &name, flags).map_err(|e| match e {
        // With O_NOFOLLOW, the one way a single component gives ELOOP.
        libc::ELOOP => Refused::Symlink,
        e => Refused::Errno(e),
    })?;
    check_file(&stat(file.0)?)?;
    Ok(file.release())
}

/// Whether `open_append(path, true)` would succeed, asked without creating anything: an
/// existing file must pass the same checks, a missing one needs a directory this user may
/// create files in.
pub fn check_append(path: &[u8]) -> Result<(), Refused> {
    let (dir, name) = parent(path)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated; `st` is read only after fstatat succeeded.
    let r = unsafe {
        libc::fstatat(
            dir.0,
            name.as_ptr().cast(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        // SAFETY: fstatat succeeded and filled `st`.
        let st = unsafe { st.assume_init() };
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(Refused::Symlink);
        }
        return check_file(&st);
    }
    match errno() {
        // SAFETY: "." is a NUL-terminated literal, resolved in the directory's fd.
        libc::ENOENT => match unsafe {
            libc::faccessat(
                dir.0,
                c".".as_ptr(),
                libc::W_OK | libc::X_OK,
                libc::AT_EACCESS,
            )
        } {
            0 => Ok(()),
            _ => Err(Refused::Errno(errno())),
        },
        e => Err(Refused::Errno(e)),
    }
}

/// A regular file of this user with one link.
fn check_file(st: &libc::stat) -> Result<(), Refused> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        Err(Refused::NotRegular)
    } else if st.st_uid != euid() {
        Err(Refused::Owner(st.st_uid))
    } else if st.st_nlink != 1 {
        Err(Refused::Links(st.st_nlink))
    } else {
        Ok(())
    }
}

/// An fd this module opened, closed when dropped.
struct Fd(c_int);

impl Fd {
    fn release(self) -> c_int {
        let fd = self.0;
        std::mem::forget(self);
        fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        raw_close(self.0);
    }
}

/// `name` (NUL-terminated) opened relative to the directory fd `dir`, with mode 0600 if
/// `flags` create it.
fn open_at(dir: c_int, name: &[u8], flags: c_int) -> Result<Fd, c_int> {
    debug_assert_eq!(name.last(), Some(&0));
    // SAFETY: `name` is NUL-terminated; the mode is passed as the variadic int openat reads
    // with O_CREAT (and ignores otherwise).
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat,
            dir,
            name.as_ptr(),
            flags,
            0o600 as libc::c_uint,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(Fd(r as c_int))
    }
}

fn stat(fd: c_int) -> Result<libc::stat, c_int> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable; it is read only after fstat succeeded.
    unsafe {
        if libc::fstat(fd, st.as_mut_ptr()) != 0 {
            return Err(errno());
        }
        Ok(st.assume_init())
    }
}

/// The text of the symlink opened (`O_PATH | O_NOFOLLOW`) as `fd`.
fn link_text(fd: c_int) -> Result<Vec<u8>, c_int> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: an empty NUL-terminated name reads the link `fd` itself is; `buf` is writable
    // for its length.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The directory that holds the last component of `path`, reached as the module comment says,
/// and that component, NUL-terminated.
fn parent(path: &[u8]) -> Result<(Fd, Vec<u8>), Refused> {
    let (dirs, last) = match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (&b""[..], path),
    };
    if last.is_empty() {
        // "/", "dir/": a directory, never a report file.
        return Err(Refused::Errno(if path.is_empty() {
            libc::ENOENT
        } else {
            libc::EISDIR
        }));
    }
    let absolute = dirs.starts_with(b"/");
    let mut dir = open_at(
        libc::AT_FDCWD,
        if absolute { b"/\0" } else { b".\0" },
        DIR_FLAGS,
    )?;
    // The directories walked so far, for the message naming a refused symlink.
    let mut walked: Vec<u8> = if absolute { b"/".to_vec() } else { Vec::new() };
    // Components still to walk, the next one last; a symlink's text takes its place.
    let mut todo: Vec<Vec<u8>> = components(dirs);
    let mut links = 0;
    while let Some(name) = todo.pop() {
        let next = open_at(dir.0, &[&name[..], b"\0"].concat(), DIR_FLAGS)?;
        let st = stat(next.0)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                dir = next;
                walked.extend_from_slice(&name);
                walked.push(b'/');
            }
            libc::S_IFLNK => {
                if st.st_uid != 0 && st.st_uid != euid() {
                    return Err(Refused::ForeignSymlink {
                        at: [&walked[..], &name[..]].concat(),
                        uid: st.st_uid,
                    });
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(Refused::Errno(libc::ELOOP));
                }
                let text = link_text(next.0)?;
                // A relative text goes on from the symlink's directory, `dir`.
                if text.starts_with(b"/") {
                    dir = open_at(libc::AT_FDCWD, b"/\0", DIR_FLAGS)?;
                    walked = b"/".to_vec();
                }
                todo.extend(components(&text));
            }
            _ => return Err(Refused::Errno(libc::ENOTDIR)),
        }
    }
    Ok((dir, [last, b"\0"].concat()))
}

/// How each directory of the way is opened: a handle that reads and follows nothing.
const DIR_FLAGS: c_int = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// The components of `path` to walk, last first (`.` and empty ones left out).
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::path::{Path, PathBuf};

    /// A fresh directory of this test's own.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir()
            .join("fdguard-unit")
            .join(format!("path-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn bytes(p: &Path) -> &[u8] {
        p.as_os_str().as_bytes()
    }

    /// Gives `path` (not following a symlink) to nobody; false where this user cannot.
    fn give_to_nobody(path: &Path) -> bool {
        std::os::unix::fs::lchown(path, Some(65534), Some(65534)).is_ok()
    }

    fn append(path: &Path, create: bool, text: &str) -> Result<(), Refused> {
        let fd = open_append(bytes(path), create)?;
        let r = crate::os::fd::write_all(fd, text.as_bytes());
        raw_close(fd);
        r.map_err(Refused::Errno)
    }

    #[test]
    fn a_missing_file_is_created_0600_and_appended_to() {
        let dir = scratch("create");
        let file = dir.join("r.log");
        assert_eq!(check_append(bytes(&file)), Ok(()));
        assert!(!file.exists(), "the check creates nothing");
        append(&file, true, "one\n").unwrap();
        append(&file, true, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
        // 0600 less the umask (the integration tests set it to 0): never more than 0600.
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777 & !0o600, 0, "{mode:o}");
        assert_eq!(
            append(&dir.join("missing"), false, "x"),
            Err(Refused::Errno(libc::ENOENT)),
            "a reply file is never created"
        );
    }

    #[test]
    fn relative_paths_dots_and_repeated_slashes_resolve() {
        let dir = scratch("relative");
        std::fs::create_dir(dir.join("sub")).unwrap();
        let odd = format!("{}//./sub/../sub/r.log", dir.display());
        append(Path::new(&odd), true, "x\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/r.log")).unwrap(),
            "x\n"
        );
        // The same directory relative to the working directory (not changed here: the tests
        // share the process).
        let up = std::env::current_dir().unwrap().components().count() - 1;
        let relative = format!("{}{}", "../".repeat(up), dir.display());
        let relative = relative.replacen("//", "/", 1);
        assert_eq!(
            check_append(format!("{relative}/sub/r.log").as_bytes()),
            Ok(())
        );
        for not_a_file in [&b"/"[..], b"sub/", b""] {
            assert!(check_append(not_a_file).is_err());
        }
    }

    #[test]
    fn symlinked_directories_of_root_and_this_user_are_followed() {
        let dir = scratch("own-link");
        std::fs::create_dir(dir.join("real")).unwrap();
        symlink(dir.join("real"), dir.join("abs")).unwrap();
        symlink("real", dir.join("rel")).unwrap();
        symlink("rel/../abs", dir.join("chain")).unwrap();
        for via in ["abs", "rel", "chain"] {
            append(&dir.join(via).join("r.log"), true, &format!("{via}\n")).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(dir.join("real/r.log")).unwrap(),
            "abs\nrel\nchain\n"
        );
    }

    #[test]
    fn a_symlinked_directory_of_another_user_is_refused() {
        let dir = scratch("foreign-link");
        std::fs::create_dir(dir.join("real")).unwrap();
        symlink(dir.join("real"), dir.join("theirs")).unwrap();
        if !give_to_nobody(&dir.join("theirs")) {
            eprintln!("cannot chown here (not root): skipped");
            return;
        }
        let file = dir.join("theirs").join("r.log");
        let refused = Refused::ForeignSymlink {
            at: bytes(&dir.join("theirs")).to_vec(),
            uid: 65534,
        };
        assert_eq!(check_append(bytes(&file)), Err(refused.clone()));
        assert_eq!(append(&file, true, "x"), Err(refused));
        assert!(!dir.join("real/r.log").exists());
    }

    #[test]
    fn the_file_must_be_no_symlink_a_regular_file_of_this_user_with_one_link() {
        let dir = scratch("file-rules");
        let mine = dir.join("mine.log");
        std::fs::write(&mine, "mine\n").unwrap();
        symlink(&mine, dir.join("link.log")).unwrap();
        std::fs::hard_link(&mine, dir.join("second-name.log")).unwrap();
        for (name, refused) in [
            ("link.log", Refused::Symlink),
            ("second-name.log", Refused::Links(2)),
            ("mine.log", Refused::Links(2)),
        ] {
            let path = dir.join(name);
            assert_eq!(check_append(bytes(&path)), Err(refused.clone()), "{name}");
            assert_eq!(append(&path, true, "x"), Err(refused), "{name}");
        }
        assert_eq!(check_append(bytes(&dir)), Err(Refused::NotRegular));
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "mine\n");
        assert_eq!(std::fs::metadata(&mine).unwrap().nlink(), 2);
        let theirs = dir.join("theirs.log");
        std::fs::write(&theirs, "theirs\n").unwrap();
        if give_to_nobody(&theirs) {
            assert_eq!(append(&theirs, true, "x"), Err(Refused::Owner(65534)));
            assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "theirs\n");
        }
    }

    #[test]
    fn symlink_loops_end() {
        let dir = scratch("loop");
        symlink("b", dir.join("a")).unwrap();
        symlink("a", dir.join("b")).unwrap();
        assert_eq!(
            check_append(bytes(&dir.join("a/r.log"))),
            Err(Refused::Errno(libc::ELOOP))
        );
        std::fs::write(dir.join("file"), "").unwrap();
        assert_eq!(
            check_append(bytes(&dir.join("file/r.log"))),
            Err(Refused::Errno(libc::ENOTDIR))
        );
    }
}
