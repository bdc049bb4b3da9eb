//! Where a finished report goes: the file `FDGUARD_REPORT` names, appended to and opened so
//! that it cannot be turned against the user (`os::path`: no symlink of another user's on the
//! way, the file itself never a symlink, never truncated, only a regular file of this user
//! with one link), or stderr, saying once why not the file; or, for a request of `fdguard
//! report`, the reply file the command made for it (the same checks; never created).
//!
//! # A stderr the program writes to as well
//! When stderr is a pipe, a socket (a service's journal) or a terminal, the program's own
//! writes come between fdguard's. A pipe keeps a write whole only up to `PIPE_BUF` (4096
//! bytes), a stream socket not even that, and reports are larger: so reports are written
//! there line by line, each line one write of at most `PIPE_BUF` bytes. Every line of a text
//! report starts with `==PID==`, so none is torn and a reader can tell them from the program's
//! own; a longer line (a long command line or path) is cut into pieces, each after the first
//! starting with `==PID==+` (`pieces`). A JSON report is a single line, often far longer than
//! `PIPE_BUF`, which nothing can keep whole there (and a terminal is read by a person): JSON
//! reports are written to such a stderr as text, and fdguard says once that JSON needs
//! `FDGUARD_REPORT`.

use std::sync::Mutex;

use fdguard_core::config::Format;
use fdguard_core::published::Destination;
use fdguard_core::report::{BadCloseNotice, Report, text};
use fdguard_core::request::Request;

use crate::child::{self, Once};
use crate::os;
use crate::os::fd::Stream;
use crate::os::path::Refused;
use crate::published;

/// At load: says at once if the report file cannot be written, rather than at the first
/// report, without creating it (the file appears with the first report); or, for JSON reports
/// to a stderr that would tear them, that they will be text.
pub fn init() {
    let json = super::context::config().is_some_and(|c| c.format == Format::Json);
    let as_text = os::fd::stream_kind(2).filter(|_| json);
    match published::destination() {
        Destination::File(path) => {
            if let Err(why) = os::path::check_append(&path) {
                warn_dest(&path, &why, as_text);
            }
        }
        Destination::Stderr | Destination::Unknown => {
            if let Some(stream) = as_text {
                warn_json(stream);
            }
        }
    }
}

/// The text of the JSON report `render` made last in this process, made only when stderr is a
/// stream that would tear JSON: a report's text says more than its JSON holds (where most of a
/// stack's fds point, which are `FILE` streams), so it cannot be made from the JSON later.
static TEXT_OF_JSON: Mutex<Option<String>> = Mutex::new(None);

/// The report in `format`.
pub fn render(format: Format, report: &Report) -> String {
    match format {
        Format::Text => text::report(report),
        Format::Json => {
            if os::fd::stream_kind(2).is_some()
                && let Ok(mut kept) = TEXT_OF_JSON.try_lock()
            {
                *kept = Some(text::report(report));
            }
            report.to_json()
        }
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
    /// stderr, whatever is configured: the exit report made in the program itself when no
    /// report process could be made, which opens no file (every fd number is the program's).
    Stderr,
}

/// Writes a finished report of process `pid` (in a report child: any fd is free).
pub fn deliver(pid: u32, dest: Dest, bytes: &[u8]) {
    if let Dest::Reply(request) = dest
        && request.reply_file
    {
        if let Ok(fd) = os::path::open_append(request.reply_path(pid).as_bytes(), false) {
            write_and_close(fd, bytes);
        }
        return;
    }
    let destination = match dest {
        Dest::Stderr => Destination::Stderr,
        Dest::Configured | Dest::Reply(_) => published::destination(),
    };
    let refused = match destination {
        Destination::File(path) => match os::path::open_append(&path, true) {
            Ok(fd) => return write_and_close(fd, bytes),
            Err(why) => Some((path, why)),
        },
        Destination::Stderr | Destination::Unknown => None,
    };
    let stream = os::fd::stream_kind(2);
    let json = is_json(bytes);
    let as_text = stream.filter(|_| json);
    match &refused {
        Some((path, why)) => warn_dest(path, why, as_text),
        None => {
            if let Some(stream) = as_text {
                warn_json(stream);
            }
        }
    }
    let text = as_text.and_then(|_| text_of_json(bytes));
    let bytes = text.as_deref().map_or(bytes, str::as_bytes);
    if stream.is_some() && !is_json(bytes) {
        write_lines(bytes);
    } else {
        let _ = os::fd::write_all(2, bytes);
    }
}

fn write_and_close(fd: i32, bytes: &[u8]) {
    let _ = os::fd::write_all(fd, bytes);
    os::sys::raw_close(fd);
}

/// Reports and bad-close notices in JSON are objects; text ones start with `==PID==`.
fn is_json(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
}

/// The text of a JSON report or notice, for a stderr that would tear it: the text `render`
/// kept of the same report, or the JSON read back (a bad-close notice, whose JSON holds all
/// its text says). `None` if neither is there: the JSON is then written whole.
fn text_of_json(json: &[u8]) -> Option<String> {
    if let Some(text) = TEXT_OF_JSON.try_lock().ok().and_then(|mut t| t.take()) {
        return Some(text);
    }
    let notice: BadCloseNotice = serde_json::from_slice(json).ok()?;
    (notice.event == BadCloseNotice::EVENT).then(|| text::bad_close(&notice))
}

/// Writes text to stderr one line per write, each at most `PIPE_BUF` bytes (see the module
/// comment).
fn write_lines(text: &[u8]) {
    for line in text.split_inclusive(|b| *b == b'\n') {
        for piece in pieces(line, libc::PIPE_BUF) {
            if os::fd::write_all(2, &piece).is_err() {
                return;
            }
        }
    }
}

/// `line` as lines of at most `max` bytes: itself, or cut where a character starts, each piece
/// after the first starting with the line's `==PID==` and a `+`, then the bytes that follow
/// (joined again, the pieces after their `==PID==+` make the line).
fn pieces(line: &[u8], max: usize) -> Vec<std::borrow::Cow<'_, [u8]>> {
    if line.len() <= max {
        return vec![line.into()];
    }
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let lead = [pid_prefix(body), b"+"].concat();
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let lead = if out.is_empty() { &b""[..] } else { &lead };
        // At least one byte a piece, whatever `max` is.
        let room = max.saturating_sub(lead.len() + 1).max(1);
        let mut cut = rest.len().min(room);
        // Back to the start of a UTF-8 character (bytes that are not UTF-8 are cut anywhere).
        while cut < rest.len() && cut > 0 && rest[cut] & 0xc0 == 0x80 {
            cut -= 1;
        }
        if cut == 0 {
            cut = room;
        }
        out.push([lead, &rest[..cut], b"\n"].concat().into());
        rest = &rest[cut..];
    }
    out
}

/// The `==PID==` a text report's line starts with, or nothing.
fn pid_prefix(line: &[u8]) -> &[u8] {
    let Some(after) = line.strip_prefix(b"==") else {
        return b"";
    };
    let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && after[digits..].starts_with(b"==") {
        &line[..digits + 4]
    } else {
        b""
    }
}

/// "stderr is a pipe, ..." for the line saying JSON reports go there as text.
fn why_text(stream: Stream) -> &'static str {
    match stream {
        Stream::Pipe => {
            "stderr is a pipe, where the program's own output would cut into JSON reports (a \
             write there is whole only up to 4096 bytes)"
        }
        Stream::Socket => {
            "stderr is a socket, where the program's own output would cut into JSON reports"
        }
        Stream::Terminal => "stderr is a terminal, read by a person",
    }
}

fn warn_json(stream: Stream) {
    if child::say_once(Once::Destination) {
        say(&format!(
            "fdguard: FDGUARD_FORMAT=json: {}; writing reports there as text, line by line \
             (FDGUARD_REPORT=FILE for JSON)\n",
            why_text(stream)
        ));
    }
}

/// The report file cannot be written: one line, once; `as_text` when the reports then go to
/// stderr as text.
fn warn_dest(path: &[u8], why: &Refused, as_text: Option<Stream>) {
    if !child::say_once(Once::Destination) {
        return;
    }
    let then = match as_text {
        Some(stream) => format!(", as text ({})", why_text(stream)),
        None => String::new(),
    };
    say(&format!(
        "fdguard: FDGUARD_REPORT: cannot write {}: {}; writing reports to stderr{then}\n",
        String::from_utf8_lossy(path),
        refusal_words(why)
    ));
}

fn say(line: &str) {
    let _ = os::fd::write_all(2, line.as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_line_is_one_piece() {
        let line = b"==42== fdguard: end of report\n";
        assert_eq!(pieces(line, 4096), vec![std::borrow::Cow::from(&line[..])]);
    }

    #[test]
    fn a_long_line_is_cut_into_prefixed_pieces_that_join_again() {
        let body = format!("==42== command: {}", "java -cp /a.jar ".repeat(700));
        let line = format!("{body}\n");
        let cut = pieces(line.as_bytes(), 4096);
        assert!(cut.len() >= 3, "{}", cut.len());
        for p in &cut {
            assert!(p.len() <= 4096 && p.ends_with(b"\n"), "{}", p.len());
        }
        assert!(cut[0].starts_with(b"==42== command: java"));
        let mut back = String::from_utf8(cut[0].to_vec()).unwrap();
        back.pop();
        for p in &cut[1..] {
            let p = std::str::from_utf8(p).unwrap();
            back.push_str(
                p.strip_prefix("==42==+")
                    .unwrap()
                    .strip_suffix('\n')
                    .unwrap(),
            );
        }
        assert_eq!(back, body);
    }

    #[test]
    fn pieces_end_where_characters_end() {
        // 3-byte characters: a cut at any byte count would split one.
        let line = format!("==7== desc: {}\n", "€".repeat(100));
        for max in [20, 21, 22, 64] {
            for p in pieces(line.as_bytes(), max) {
                assert!(p.len() <= max, "{max}: {}", p.len());
                assert!(std::str::from_utf8(&p).is_ok(), "{max}: {p:?}");
            }
        }
    }

    #[test]
    fn lines_without_a_pid_are_cut_too() {
        let line = [vec![0xff; 50], b"\n".to_vec()].concat();
        let cut = pieces(&line, 20);
        assert!(cut.iter().all(|p| p.len() <= 20));
        assert!(cut[1].starts_with(b"+"));
        assert_eq!(pid_prefix(b"==12x== a"), b"");
        assert_eq!(pid_prefix(b"==12== a"), b"==12==");
        assert_eq!(pid_prefix(b"==12=="), b"==12==");
    }
}
