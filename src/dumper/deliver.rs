//! Where a finished report goes: the file `FDGUARD_REPORT` names, appended to and opened so
//! that it cannot be turned against the user (never through a symlink, never truncating, only
//! a regular file of this user), or stderr, saying once why not the file.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use fdguard_core::config::{Config, Format, ReportDest, expand_report_path};
use fdguard_core::report::{Report, compact_utc, text};

use crate::child::{self, Once};
use crate::os;

/// When fdguard loaded (wall clock, seconds): the `%t` of `FDGUARD_REPORT`.
static LOADED_AT_S: AtomicU64 = AtomicU64::new(0);

/// At load: notes the time for `%t`, and says at once if the report file cannot be written
/// (before `main`, so the fd this takes for a moment is nobody's), rather than at the first
/// report.
pub fn init(config: &Config) {
    LOADED_AT_S.store(os::clock::realtime_ns() / 1_000_000_000, Ordering::Relaxed);
    if let ReportDest::Path(t) = &config.report {
        let path = report_path(t, os::process::getpid());
        match open_report_file(&path) {
            // SAFETY: closing the fd just opened.
            Ok(fd) => unsafe {
                libc::close(fd);
            },
            Err(e) => warn_dest(&path, e),
        }
    }
}

/// The report in the configured format.
pub fn render(config: &Config, report: &Report) -> String {
    match config.format {
        Format::Text => text::report(report),
        Format::Json => report.to_json(),
    }
}

/// Writes a finished report of process `pid` where the user asked (in a report child: any fd
/// is free); falls back to stderr, saying why once.
pub fn deliver(config: &Config, pid: u32, bytes: &[u8]) {
    let ReportDest::Path(template) = &config.report else {
        let _ = os::fd::write_all(2, bytes);
        return;
    };
    let path = report_path(template, pid);
    let written = open_report_file(&path).and_then(|fd| {
        let r = os::fd::write_all(fd, bytes);
        // SAFETY: closing the fd opened just above.
        unsafe { libc::close(fd) };
        r
    });
    if let Err(e) = written {
        warn_dest(&path, e);
        let _ = os::fd::write_all(2, bytes);
    }
}

fn report_path(template: &[u8], pid: u32) -> Vec<u8> {
    expand_report_path(
        template,
        pid,
        &compact_utc(LOADED_AT_S.load(Ordering::Relaxed)),
    )
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

/// Opens (creating with mode 0600) a report file for appending: never through a symlink, never
/// truncating, and never into a file that is not a regular file owned by this user.
fn open_report_file(path: &[u8]) -> Result<i32, i32> {
    let mut c = path.to_vec();
    c.push(0);
    // SAFETY: `c` is NUL-terminated; the mode argument is passed as the variadic int.
    let fd = unsafe {
        libc::open(
            c.as_ptr().cast(),
            libc::O_WRONLY
                | libc::O_CREAT
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
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable; it is read only after fstat succeeded.
    let ok = unsafe {
        libc::fstat(fd, st.as_mut_ptr()) == 0 && {
            let st = st.assume_init();
            st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == libc::geteuid()
        }
    };
    if !ok {
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        return Err(libc::EPERM);
    }
    Ok(fd)
}
