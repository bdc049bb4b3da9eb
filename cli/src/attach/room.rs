//! An fd to load the library with, in a process that may have none free.
//!
//! `dlopen` opens one file at a time (the library, then each dependency not yet loaded) and
//! closes it before the next, so loading needs one fd free below the soft limit, and
//! `fdguard_attach` needs none. With fewer than `ROOM` free, every other thread is stopped
//! first (each where it holds no lock: `thread::stop_others`), so that none takes the room and
//! the fd table stays as read; then, in this order of preference:
//! 1. an fd is free: nothing else to do;
//! 2. an fd is borrowed: one of two fds sharing an open file description (`kcmp`; stdout and
//!    stderr often do) is closed for the moment of loading and made again from its twin with
//!    `dup3`, close-on-exec as it was. The description (offset, status flags, locks taken with
//!    `flock`, epoll registrations, which the kernel keys by description and number) stays
//!    open through the twin, so nothing the program can see changes. Not borrowed: a
//!    directory (closing it ends `F_NOTIFY` watches), a file the process holds POSIX locks on
//!    (closing any fd of it releases them all: `/proc/locks`);
//! 3. an fd alone on `/dev/null` is closed and opened again with the same access mode and
//!    flags (`/dev/null` has no offset, no data and cannot be in an epoll set);
//! 4. the soft limit is raised for the moment of loading and put back, if it is below the hard
//!    one and fdguard may (`CAP_SYS_RESOURCE`, or the process's own user);
//!
//! and otherwise the attach is refused with the process untouched. Afterwards the fd is
//! checked to be what it was (same description or file, same flags).

use super::thread::Stopped;
use crate::fail::Failure;
use crate::os::{FdDir, FileId, same_description};
use crate::target::Target;
use fdguard_core::fdinfo::parse_fdinfo;

/// With this many fds free, nothing needs stopping: another thread taking a few does not
/// leave loading without one.
const ROOM: u64 = 8;

const O_CLOEXEC: u32 = libc::O_CLOEXEC as u32;

/// How loading gets its fd.
#[derive(Debug, PartialEq, Eq)]
pub enum Room {
    /// `ROOM` fds free, or one free with every other thread stopped.
    Free,
    /// `fd` closed for the moment of loading, then `dup3(twin, fd)` with its close-on-exec.
    Borrowed { fd: i32, twin: i32, cloexec: bool },
    /// `fd`, alone on `/dev/null`, closed and opened again with `flags`.
    Reopened { fd: i32, flags: u32 },
    /// The soft limit raised from `soft` for the moment of loading.
    Raised { soft: u64 },
}

/// The process's soft and hard limits, from `/proc/PID/limits` (readable wherever ptrace is
/// allowed; `prlimit` would need `CAP_SYS_RESOURCE` for another user's process).
pub fn limits(target: &Target) -> Result<(u64, u64), Failure> {
    let l = target.limit()?;
    Ok((l.soft.unwrap_or(u64::MAX), l.hard.unwrap_or(u64::MAX)))
}

fn lowest_free(open: &[i32]) -> u64 {
    let gap = open.iter().enumerate().find(|(i, fd)| **fd != *i as i32);
    gap.map_or(open.len(), |(i, _)| i) as u64
}

/// True if `ROOM` fds are free below the soft limit.
pub fn plenty(target: &Target, open: &[i32]) -> Result<bool, Failure> {
    Ok(lowest_free(open) + ROOM <= limits(target)?.0)
}

/// What each fd is, for choosing one to borrow.
struct Fd {
    fd: i32,
    id: FileId,
    flags: u32,
}

/// The files process `pid` holds POSIX record locks on (`/proc/locks`: `1: POSIX ADVISORY
/// WRITE PID MAJ:MIN:INODE START END`, major and minor in hex).
fn posix_locked(pid: i32) -> Vec<(u32, u32, u64)> {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (kind, holder, file) = (f.get(1)?, f.get(4)?, f.get(5)?);
            if *kind != "POSIX" || holder.parse::<i32>().ok()? != pid {
                return None;
            }
            let mut p = file.split(':');
            let major = u32::from_str_radix(p.next()?, 16).ok()?;
            let minor = u32::from_str_radix(p.next()?, 16).ok()?;
            Some((major, minor, p.next()?.parse().ok()?))
        })
        .collect()
}

/// Decides how loading gets its fd, with every thread of the process stopped (the fd table
/// read now stays as it is).
pub fn find(target: &Target) -> Result<Room, Failure> {
    let pid = target.pid;
    let dir = FdDir::open(pid)?;
    let open = dir.numbers()?;
    let (soft, hard) = limits(target)?;
    if lowest_free(&open) < soft {
        return Ok(Room::Free);
    }
    let fds: Vec<Fd> = open
        .iter()
        .filter_map(|&fd| {
            Some(Fd {
                fd,
                id: dir.identity(fd)?,
                flags: parse_fdinfo(&dir.fdinfo(fd)?).flags,
            })
        })
        .collect();
    let locked = posix_locked(pid);
    // Below the soft limit: a number above it, once free, is no room for a new fd.
    let borrowable = |f: &Fd| {
        (f.fd as u64) < soft
            && f.id.kind != libc::S_IFDIR
            && !locked.contains(&(f.id.major, f.id.minor, f.id.ino))
    };
    // Highest numbers first: the program's own fds are usually above its standard streams.
    for f in fds.iter().rev().filter(|f| borrowable(f)) {
        let twin = fds.iter().find(|t| {
            t.fd != f.fd && t.id == f.id && same_description(pid, f.fd, t.fd).unwrap_or(false)
        });
        if let Some(t) = twin {
            return Ok(Room::Borrowed {
                fd: f.fd,
                twin: t.fd,
                cloexec: f.flags & O_CLOEXEC != 0,
            });
        }
    }
    let dev_null = std::fs::metadata("/dev/null").ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        (libc::major(m.rdev()), libc::minor(m.rdev()))
    });
    let is_dev_null = |f: &Fd| {
        f.id.kind == libc::S_IFCHR
            && dir.link(f.fd).as_deref() == Some("/dev/null")
            && dev_null.is_some()
    };
    if let Some(f) = fds.iter().rev().find(|f| is_dev_null(f) && borrowable(f)) {
        return Ok(Room::Reopened {
            fd: f.fd,
            flags: f.flags,
        });
    }
    if soft < hard {
        crate::os::set_soft_nofile(pid, Some(soft + 1)).map_err(|e| {
            Failure::bad_input(format!(
                "pid {pid} has no fd free to load the library with, none that can be borrowed \
                 (no two fds share an open file description, none is /dev/null), and its soft \
                 limit cannot be raised for that moment ({e}): run fdguard as pid {pid}'s user \
                 or with CAP_SYS_RESOURCE, or free an fd; nothing was changed"
            ))
        })?;
        return Ok(Room::Raised { soft });
    }
    Err(Failure::bad_input(format!(
        "pid {pid} has no fd free to load the library with, none that can be borrowed (no two \
         fds share an open file description, none is /dev/null), and its soft limit ({soft}) \
         is its hard limit: free an fd, or raise its hard limit (prlimit --pid {pid} \
         --nofile={soft}:{}); nothing was changed",
        soft + 16
    )))
}

/// Libc's functions the borrowing calls in the process.
pub struct Calls {
    pub close: u64,
    pub dup3: u64,
    pub open: u64,
}

impl Room {
    /// Frees the fd for loading (the soft limit was already raised by `find`).
    pub fn take(&self, stopped: &mut Stopped, calls: &Calls) -> Result<(), Failure> {
        match *self {
            Room::Borrowed { fd, .. } | Room::Reopened { fd, .. } => {
                let r = stopped.call("close", calls.close, &[fd as u64])? as i32;
                if r != 0 {
                    return Err(Failure::failed(format!(
                        "closing fd {fd} for the moment of loading failed ({r}); it was left \
                         as it was"
                    )));
                }
                Ok(())
            }
            Room::Free | Room::Raised { .. } => Ok(()),
        }
    }

    /// Puts back what `take` and `find` changed, and checks it (`calls` are there for a
    /// borrowed or reopened fd).
    pub fn give_back(
        &self,
        target: &Target,
        stopped: &mut Stopped,
        calls: Option<&Calls>,
    ) -> Result<(), Failure> {
        let pid = target.pid;
        let calls = || calls.ok_or_else(|| Failure::failed("no libc calls to give an fd back"));
        match *self {
            Room::Free => Ok(()),
            Room::Raised { soft } => crate::os::set_soft_nofile(pid, Some(soft))
                .map(|_| ())
                .map_err(|e| {
                    Failure::failed(format!(
                        "putting pid {pid}'s soft fd limit back to {soft} failed: {e}"
                    ))
                }),
            Room::Borrowed { fd, twin, cloexec } => {
                let flags = if cloexec { O_CLOEXEC } else { 0 };
                let r = stopped.call(
                    "dup3",
                    calls()?.dup3,
                    &[twin as u64, fd as u64, flags.into()],
                )?;
                check(pid, fd, "its twin's description", |_, now| {
                    r as i32 == fd
                        && same_description(pid, fd, twin).unwrap_or(false)
                        && (now & O_CLOEXEC != 0) == cloexec
                })
            }
            Room::Reopened { fd, flags } => {
                let path = stopped.put(b"/dev/null")?;
                // What open(2) takes: access mode and status flags, not the kernel's own bits.
                let open_flags = flags
                    & (libc::O_ACCMODE
                        | libc::O_APPEND
                        | libc::O_NONBLOCK
                        | libc::O_SYNC
                        | libc::O_DSYNC
                        | libc::O_CLOEXEC
                        | libc::O_NOATIME) as u32;
                let calls = calls()?;
                let mut r = stopped.call("open", calls.open, &[path, open_flags.into()])? as i32;
                if r >= 0 && r != fd {
                    // Not the lowest number free (loading left one open below it?): moved.
                    let cloexec = (flags & O_CLOEXEC).into();
                    let moved =
                        stopped.call("dup3", calls.dup3, &[r as u64, fd as u64, cloexec])?;
                    stopped.call("close", calls.close, &[r as u64])?;
                    r = moved as i32;
                }
                check(pid, fd, "/dev/null", |dir, now| {
                    r == fd
                        && dir.link(fd).as_deref() == Some("/dev/null")
                        && now & !O_LARGEFILE == flags & !O_LARGEFILE
                })
            }
        }
    }
}

impl std::fmt::Display for Room {
    /// What the user is told, once it is done.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Room::Free => write!(f, "an fd was free for loading"),
            Room::Borrowed { fd, twin, .. } => write!(
                f,
                "no fd was free for loading: fd {fd} was borrowed for that moment and made \
                 again from fd {twin}, which shares its open file description"
            ),
            Room::Reopened { fd, .. } => write!(
                f,
                "no fd was free for loading: fd {fd} (/dev/null) was borrowed for that moment \
                 and opened again as it was"
            ),
            Room::Raised { soft } => write!(
                f,
                "no fd was free for loading: the soft fd limit was raised from {soft} for that \
                 moment and put back"
            ),
        }
    }
}

/// `O_LARGEFILE`, which the kernel adds on its own on 64-bit systems.
const O_LARGEFILE: u32 = 0o100000;

/// Checks that fd `fd`, given back, is what it was: `as_it_was` judges it by the process's fd
/// directory and the fd's flags now.
fn check(
    pid: i32,
    fd: i32,
    what: &str,
    as_it_was: impl Fn(&FdDir, u32) -> bool,
) -> Result<(), Failure> {
    let dir = FdDir::open(pid)?;
    let flags = dir.fdinfo(fd).map(|i| parse_fdinfo(&i).flags);
    if flags.is_some_and(|now| as_it_was(&dir, now)) {
        Ok(())
    } else {
        Err(Failure::failed(format!(
            "fd {fd} of pid {pid} was borrowed to load the library and could not be made again \
             from {what} as it was (now: {}); check the program",
            dir.link(fd).unwrap_or_else(|| "closed".into())
        )))
    }
}
