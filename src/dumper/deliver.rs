//! Where a finished report goes: the file `FDGUARD_REPORT` names, appended to and opened so
//! that it cannot be turned against the user (`os::path`: no symlink of another user's on the
//! way, the file itself never a symlink, never truncated, only a regular file of this user
//! with one link), or stderr, saying once why not the file; or, for a request of `fdguard
//! report`, the reply file the command made for it (the same checks; never created).

use fdguard_core::config::Format;
use fdguard_core::published::Destination;
use fdguard_core::report::{Report, text};
use fdguard_core::request::Request;

use crate::child::{self, Once};
use crate::os;
use crate::os::path::Refused;
use crate::published;

/// At load: says at once if the report file cannot be written, rather than at the first
/// report, without creating it (the file appears with the first report).
pub fn init() {
    if let Destination::File(path) = published::destination()
        && let Err(why) = os::path::check_append(&path)
    {
        warn_dest(&path, &why);
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
    /// The reply file of a request of `fdguard report`; where the process writes its reports
    /// if there is none (the command was told where to look instead: `--file`).
    Reply(Request),
}

/// Writes a finished report of process `pid` (in a report child: any fd is free).
pub fn deliver(pid: u32, dest: Dest, bytes: &[u8]) {
    if let Dest::Reply(request) = dest
        && let Ok(fd) = os::path::open_append(request.reply_path(pid).as_bytes(), false)
    {
        write_and_close(fd, bytes);
        return;
    }
    let path = match published::destination() {
        Destination::File(path) => path,
        Destination::Stderr | Destination::Unknown => {
            let _ = os::fd::write_all(2, bytes);
            return;
        }
    };
    match os::path::open_append(&path, true) {
        Ok(fd) => write_and_close(fd, bytes),
        Err(why) => {
            warn_dest(&path, &why);
            let _ = os::fd::write_all(2, bytes);
        }
    }
}

fn write_and_close(fd: i32, bytes: &[u8]) {
    let _ = os::fd::write_all(fd, bytes);
    os::sys::raw_close(fd);
}

/// The report file cannot be written: one line, once.
fn warn_dest(path: &[u8], why: &Refused) {
    if !child::say_once(Once::Destination) {
        return;
    }
    let msg = format!(
        "fdguard: FDGUARD_REPORT: cannot write {}: {}; writing reports to stderr\n",
        String::from_utf8_lossy(path),
        refusal_words(why)
    );
    let _ = os::fd::write_all(2, msg.as_bytes());
}

/// Why a report file was refused, for the line that says so.
fn refusal_words(why: &Refused) -> String {
    match why {
        Refused::Errno(e) => std::io::Error::from_raw_os_error(*e).to_string(),
        Refused::ForeignSymlink { at, uid } => format!(
            "{} is a symlink owned by uid {uid}, who may have planted it (fdguard follows only \
             root's symlinks and this user's)",
            String::from_utf8_lossy(at)
        ),
        Refused::Symlink => "it is a symlink (a report file is never opened through one)".into(),
        Refused::NotRegular => "it is not a regular file".into(),
        Refused::Owner(uid) => format!(
            "it belongs to uid {uid}, not to this process's user (uid {})",
            os::process::euid()
        ),
        Refused::Links(n) => format!(
            "it has {n} links (a report file must have no other name, which could be another \
             user's file)"
        ),
    }
}
