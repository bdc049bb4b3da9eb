//! The text report, in the style of valgrind and ASan: every line starts with `==PID==`, the
//! first line is the whole story, the stacks follow, largest first.

use std::fmt::Write as _;

use super::model::{BadCloseNotice, FdRow, Frame, Report, Stack};
use crate::kind::kind_words;

/// Rows shown per stack in text (JSON has all of them).
pub const ROWS_PER_STACK: usize = 20;

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_string(), |v| v.to_string())
}

fn age(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 120_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 7_200_000 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}h", ms / 3_600_000)
    }
}

/// "800 sockets, 800 CLOSE_WAIT" for a group of fds.
fn contents(g: &Stack) -> String {
    let all_streams = g.streams > 0;
    let mut parts: Vec<String> = match g.by_kind.keys().next() {
        Some(kind) if g.by_kind.len() == 1 => {
            vec![kind_words(*kind, g.count, g.streams == g.count)]
        }
        _ => g
            .by_kind
            .iter()
            .map(|(k, n)| format!("{n} {}", kind_words(*k, *n, all_streams && g.streams == *n)))
            .collect(),
    };
    parts.extend(g.tcp_states.iter().map(|(s, n)| format!("{n} {s}")));
    parts.join(", ")
}

/// The first line: how bad it is and where to look.
pub fn summary(r: &Report) -> String {
    let open = r.open;
    let program = r
        .cmdline
        .first()
        .map_or_else(|| "?".to_string(), |p| p.clone());
    let what = if r.reason == "exit" {
        "still open at exit"
    } else {
        "open"
    };
    let mut s = format!("fdguard: {open} of {} fds {what}", limit(r.limit.soft));
    if let Some(soft) = r.limit.soft.filter(|s| *s > 0) {
        let _ = write!(s, " ({}%)", open as u64 * 100 / soft);
    }
    let _ = write!(s, " in pid {} ({program})", r.pid);
    if let Some(top) = r.stacks.first() {
        let _ = write!(s, "; {} in 1 stack: {}", top.count, contents(top));
        if r.stacks.len() > 1 {
            let _ = write!(s, " ({} stacks in all)", r.stacks.len());
        }
    }
    s
}

fn frame_line(i: usize, f: &Frame) -> String {
    let mut s = format!("   #{i:<2} {:#x}", f.addr);
    if let Some(func) = &f.function {
        let _ = write!(s, " in {func}");
    }
    match (&f.file, f.line) {
        (Some(file), Some(line)) => {
            let _ = write!(s, " {file}:{line}");
        }
        (Some(file), None) => {
            let _ = write!(s, " {file}");
        }
        _ => {}
    }
    if let (Some(m), Some(off)) = (&f.module, f.offset) {
        let _ = write!(s, " ({m}+{off:#x})");
    }
    s
}

fn row_line(row: &FdRow) -> String {
    format!(
        "  {:>5}  {:<8} {:>7}  {:>7}  {:<12} {}",
        row.fd,
        row.kind.name(),
        row.age_ms.map_or_else(|| "-".to_string(), age),
        row.tid.map_or_else(|| "-".to_string(), |t| t.to_string()),
        row.call,
        row.desc
    )
}

const ROW_HEADER: &str = "     fd  kind         age      tid  call         description";

fn prefixed(pid: u32, lines: Vec<String>) -> String {
    let mut out = String::new();
    for l in lines {
        let _ = write!(out, "=={pid}==");
        if !l.is_empty() {
            out.push(' ');
            out.push_str(&l);
        }
        out.push('\n');
    }
    out
}

/// A bad close, as valgrind would print an invalid free.
pub fn bad_close(n: &BadCloseNotice) -> String {
    let mut lines = vec![format!(
        "fdguard: {}({}) failed with EBADF: fd {} is not open (a double close?) in thread {}",
        n.call, n.fd, n.fd, n.tid
    )];
    lines.extend(n.stack.iter().enumerate().map(|(i, f)| frame_line(i, f)));
    match &n.released_by {
        Some(frames) if !frames.is_empty() => {
            lines.push(format!(" fd {} was last released at:", n.fd));
            lines.extend(frames.iter().enumerate().map(|(i, f)| frame_line(i, f)));
        }
        Some(_) => lines.push(format!(" fd {} was never released before", n.fd)),
        None => lines.push(format!(
            " set FDGUARD_CLOSE_STACKS=1 to see where fd {} was released before",
            n.fd
        )),
    }
    if n.not_shown > 0 {
        lines.push(format!(" ({} more bad closes not shown)", n.not_shown));
    }
    prefixed(n.pid, lines)
}

/// The whole report.
pub fn report(r: &Report) -> String {
    let mut lines: Vec<String> = Vec::new();
    lines.push(summary(r));
    let mut reason = format!("reason: {}", r.reason);
    if let Some(call) = &r.trigger_call {
        let _ = write!(
            reason,
            " ({call} failed with {})",
            r.trigger_errno.as_deref().unwrap_or("EMFILE")
        );
    }
    let _ = write!(
        reason,
        " at {}; RLIMIT_NOFILE soft {}, hard {}",
        r.time,
        limit(r.limit.soft),
        limit(r.limit.hard)
    );
    lines.push(reason);
    lines.push(format!("command: {}", r.cmdline.join(" ")));
    let mut kinds: Vec<String> = r
        .by_kind
        .iter()
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    if r.untracked > 0 {
        kinds.push(format!("(untracked {})", r.untracked));
    }
    lines.push(format!("open by kind: {}", kinds.join(", ")));
    if r.reason == "exit" {
        lines.push(format!(
            "not counted: inherited fds and standard streams; {} fds left out by FDGUARD_IGNORE",
            r.suppressed
        ));
    }
    if r.bad_closes > 0 {
        lines.push(format!("bad closes (EBADF) so far: {}", r.bad_closes));
    }
    if r.open >= 8 && r.untracked * 2 > r.open {
        lines.push(
            "note: most fds were not created through libc calls fdguard sees (a Go program, raw \
             system calls, or libc-internal ones such as getaddrinfo's): they are listed as \
             untracked, without a creator"
                .to_string(),
        );
    }
    if r.missed_closes > 0 || r.skipped > 0 {
        lines.push(format!(
            "note: {} closes not seen by fdguard, {} updates skipped",
            r.missed_closes, r.skipped
        ));
    }
    if r.emfile.accept_failures > 0 || r.emfile.shed > 0 {
        lines.push(format!(
            "accept guard: {} accept failures, paused {} ms, {} connections shed",
            r.emfile.accept_failures, r.emfile.paused_ms, r.emfile.shed
        ));
    }
    let rows_by_stack = r.rows_by_stack();
    for g in &r.stacks {
        lines.push(String::new());
        lines.push(format!(
            "{} fd{} ({}), oldest {}, newest {}, created at:",
            g.count,
            if g.count == 1 { "" } else { "s" },
            contents(g),
            age(g.oldest_ms),
            age(g.newest_ms)
        ));
        if g.frames.is_empty() {
            lines.push("   (no frames)".to_string());
        }
        lines.extend(g.frames.iter().enumerate().map(|(i, f)| frame_line(i, f)));
        lines.push(ROW_HEADER.to_string());
        let rows = rows_by_stack.get(&g.id).map_or(&[][..], Vec::as_slice);
        lines.extend(rows.iter().take(ROWS_PER_STACK).map(|row| row_line(row)));
        if rows.len() > ROWS_PER_STACK {
            lines.push(format!("  ... and {} more", rows.len() - ROWS_PER_STACK));
        }
    }
    let rest: Vec<&FdRow> = r.fds.iter().filter(|row| row.stack.is_none()).collect();
    if !rest.is_empty() {
        lines.push(String::new());
        lines.push(format!(
            "{} fd{} without a creation stack (inherited, untracked, or FDGUARD_DEPTH=0):",
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ));
        lines.push(ROW_HEADER.to_string());
        lines.extend(rest.iter().map(|row| row_line(row)));
    }
    lines.push(String::new());
    lines.push("fdguard: end of report".to_string());
    prefixed(r.pid, lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::FdKind;
    use crate::report::model::{Limit, Word};

    fn sample() -> Report {
        let mut fds = Vec::new();
        for fd in 3..28 {
            fds.push(FdRow {
                fd,
                kind: FdKind::Socket,
                desc: format!("tcp 127.0.0.1:9999 -> 127.0.0.1:{} CLOSE_WAIT", 40000 + fd),
                call: "accept4".into(),
                age_ms: Some(1500),
                tid: Some(77),
                stack: Some(0),
            });
        }
        fds.push(FdRow {
            fd: 0,
            kind: FdKind::Pty,
            desc: "/dev/pts/0".into(),
            call: "inherited".into(),
            age_ms: Some(2000),
            tid: None,
            stack: None,
        });
        let stacks = vec![Stack {
            id: 0,
            count: 25,
            by_kind: [(FdKind::Socket, 25)].into(),
            tcp_states: [(Word::Borrowed("CLOSE_WAIT"), 25)].into(),
            oldest_ms: 1500,
            newest_ms: 1500,
            frames: vec![Frame {
                addr: 0x1234,
                module: Some("/srv/server".into()),
                offset: Some(0x233),
                function: Some("handle_client".into()),
                file: Some("server.c".into()),
                line: Some(42),
            }],
            streams: 0,
        }];
        Report {
            pid: 4242,
            cmdline: vec!["./server".into(), "--port".into(), "9999".into()],
            reason: "signal".into(),
            time: "1970-01-01T00:00:00.000Z".into(),
            limit: Limit {
                soft: Some(32),
                hard: Some(4096),
            },
            open: fds.len(),
            by_kind: [(FdKind::Socket, 25), (FdKind::Pty, 1)].into(),
            fds,
            stacks,
            ..Default::default()
        }
    }

    #[test]
    fn first_line_tells_the_story() {
        let text = report(&sample());
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "==4242== fdguard: 26 of 32 fds open (81%) in pid 4242 (./server); \
             25 in 1 stack: sockets, 25 CLOSE_WAIT"
        );
    }

    #[test]
    fn file_streams_are_named_as_such() {
        let mut r = sample();
        r.stacks[0].by_kind = [(FdKind::File, 25)].into();
        r.stacks[0].tcp_states.clear();
        r.stacks[0].streams = 25;
        assert!(summary(&r).ends_with("25 in 1 stack: FILE streams"));
    }

    #[test]
    fn bad_close_notice_names_both_stacks() {
        let f = Frame {
            addr: 0x10,
            function: Some("cleanup".into()),
            ..Frame::default()
        };
        let mut n = BadCloseNotice {
            pid: 7,
            fd: 5,
            call: "close".into(),
            tid: 8,
            stack: vec![f.clone()],
            released_by: Some(vec![f]),
            ..Default::default()
        };
        let t = bad_close(&n);
        assert!(t.starts_with("==7== fdguard: close(5) failed with EBADF: fd 5 is not open"));
        assert!(t.contains("fd 5 was last released at:"));
        n.released_by = None;
        assert!(bad_close(&n).contains("FDGUARD_CLOSE_STACKS=1"));
    }

    #[test]
    fn stacks_then_capped_rows_then_the_rest() {
        let text = report(&sample());
        assert!(text.contains("   #0  0x1234 in handle_client server.c:42 (/srv/server+0x233)"));
        assert!(text.contains("... and 5 more"));
        assert!(text.contains("1 fd without a creation stack"));
        assert!(text.contains("inherited"));
        assert!(text.contains(
            "reason: signal at 1970-01-01T00:00:00.000Z; RLIMIT_NOFILE soft 32, hard 4096"
        ));
        assert!(text.ends_with("==4242== fdguard: end of report\n"));
        assert!(text.lines().all(|l| l.starts_with("==4242==")));
    }
}
