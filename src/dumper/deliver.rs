//! Where a finished report goes: the file `FDGUARD_REPORT` names, appended to and opened so
//! that it cannot be turned against the user (never through a symlink, never truncating, only
//! a regular file of this user), or stderr, saying once why not the file; or, for a request of
//! `fdguard report`, the reply file the command made for it.
#![allow(unsafe_code)]

use fdguard_core::config::Format;
use fdguard_core::published::Destination;
use fdguard_core::report::{Report, text};
use fdguard_core::request::Request;

use crate::child::{self, Once};
use crate::os;
use crate::published;

/// At load: says at once if the report file cannot be written, rather than at the first
/// report, without creating it (the file appears with the first report).
pub fn init() {
    if let Destination::File(path) = published::destination()
        && let Err(e) = check_report_file(&path)
    {
        warn_dest(&path, e);
    }
}

/// The report in `format`.
pub fn render(format: Format, report: &Report) -> String {
    match format {
        Format::Text => text::report(report),
        Format::Json => report.to_json(),
    }
}

/// Where one report goes.
#[derive(Clone, Copy)]
pub enum Dest {
    /// Where this process writes its reports (`FDGUARD_REPORT`).
    Configured,
    /// The reply file of a request of `fdguard report` (none when it is gone: the command has
    /// its report or gave up); where the process writes its reports for a request without one
    /// (the command was told where to look: `--file`).
    Reply(Request),
}

/// Writes a finished report of process `pid` (in a report child: any fd is free).
pub fn deliver(pid: u32, dest: Dest, bytes: &[u8]) {
    if let Dest::Reply(request) = dest
        && request.reply_file
    {
        if let Ok(fd) = open_report_file(request.reply_path(pid).as_bytes(), false) {
            write_and_close(fd, bytes);
        }
        return;
    }
    let path = match published::destination() {
        Destination::File(path) => path,
        Destination::Stderr | Destination::Unknown => {
            let _ = os::fd::write_all(2, bytes);
            return;
        }
    };
    match open_report_file(&path, true) {
        Ok(fd) => write_and_close(fd, bytes),
        Err(e) => {
            warn_dest(&path, e);
            let _ = os::fd::write_all(2, bytes);
        }
    }
}

fn write_and_close(fd: i32, bytes: &[u8]) {
    let _ = os::fd::write_all(fd, bytes);
    // SAFETY: closing the fd this report child opened.
    unsafe { libc::close(fd) };
}

fn warn_dest(path: &[u8], errno: i32) {
    if !child::say_once(Once::Destination) {
        return;
    }
    let msg = format!(
        "fdguard: FDGUARD_REPORT: cannot write {}: {}; writing reports to stderr\n",
        String::from_utf8_lossy(path),
        std::io::Error::from_raw_os_error(errno)
    );
    let _ = os::fd::write_all(2, msg.as_bytes());
}

/// Opens (creating with mode 0600 if `create`) a report file for appending: never through a
/// symlink, never truncating, and never into a file that is not a regular file owned by this
/// user.
fn open_report_file(path: &[u8], create: bool) -> Result<i32, i32> {
    let mut c = path.to_vec();
    c.push(0);
    let create = if create { libc::O_CREAT } else { 0 };
    // SAFETY: `c` is NUL-terminated; the mode argument is passed as the variadic int.
    let fd = unsafe {
        libc::open(
            c.as_ptr().cast(),
            libc::O_WRONLY
                | create
                | libc::O_APPEND
                | libc::O_NOFOLLOW
                | libc::O_CLOEXEC
                | libc::O_NOCTTY
                | libc::O_NONBLOCK,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(os::errno::errno());
    }
    if !os::fd::is_own_regular_file(fd) {
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        return Err(libc::EPERM);
    }
    Ok(fd)
}

/// Whether the report file at `path` could be written, asked without creating it: an existing
/// one must be a regular file of this user (not a symlink), a new one needs a directory this
/// user may write in.
fn check_report_file(path: &[u8]) -> Result<(), i32> {
    let mut c = path.to_vec();
    c.push(0);
    match os::fd::lstat_owner(&c) {
        Ok((mode, _)) if mode & libc::S_IFMT == libc::S_IFLNK => Err(libc::ELOOP),
        Ok((mode, uid)) if mode & libc::S_IFMT != libc::S_IFREG || uid != os::process::euid() => {
            Err(libc::EPERM)
        }
        Ok(_) => Ok(()),
        Err(libc::ENOENT) => {
            let dir = match path.iter().rposition(|b| *b == b'/') {
                Some(0) => b"/\0".to_vec(),
                Some(i) => [&path[..i], b"\0"].concat(),
                None => b".\0".to_vec(),
            };
            os::fd::may_create_in(&dir)
        }
        Err(e) => Err(e),
    }
}
