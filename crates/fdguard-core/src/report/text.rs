//! The text report, in the style of valgrind and ASan: every line starts with `==PID==`, the
//! first line is the whole story, the stacks follow, largest first.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::{BadCloseNotice, FdRow, Frame, Report, RuntimeInfo, Stack};
use crate::escape::push_line;
use crate::kind::{FdKind, kind_words};
use crate::place::Place;

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

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// "800 sockets, 800 CLOSE_WAIT" for a group of fds, with where they point when most of them
/// point to one place: "sockets to 10.0.0.5:6379, 800 CLOSE_WAIT", or "sockets, 799 to
/// 10.0.0.5:6379, 799 CLOSE_WAIT, 1 CLOSE" when not all do. `first_line`: a TCP state that
/// all of them share follows the place they all point to, without its count, as in
/// `inspect`'s first line ("sockets to 10.0.0.5:6379 CLOSE_WAIT"); the stack's own heading
/// keeps the counts.
fn contents(g: &Stack, first_line: bool) -> String {
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
    let mut states: Vec<String> = g
        .tcp_states
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    match &g.place {
        // All of them: one kind, whose words the place follows.
        Some(p) if p.count == g.count => {
            parts[0] = format!("{} {}", parts[0], p.place.after_kind(p.kind));
            let shared = match g.tcp_states.iter().next() {
                Some((state, n)) if g.tcp_states.len() == 1 && *n == g.count => Some(state),
                _ => None,
            };
            if let Some(state) = shared.filter(|_| first_line) {
                if !p.place.says_state() {
                    parts[0] = format!("{} {state}", parts[0]);
                }
                states.clear();
            }
        }
        Some(p) => parts.push(format!("{} {}", p.count, p.place.after_kind(p.kind))),
        None => {}
    }
    parts.extend(states);
    parts.join(", ")
}

/// How many fds of each kind point to each place.
type ByPlace<'a> = BTreeMap<(FdKind, Option<&'a Place>), usize>;

/// Places named in a line; the others are counted.
const PLACES_SHOWN: usize = 4;

/// What the fds without a stack are, before the first of them are listed: for each call,
/// most first, how many and where they point, as `inspect` groups them ("15000 before
/// attach: 14990 sockets to 10.0.0.5:6379, 10 files in /etc/").
fn unstacked_lines(rows: &[&FdRow]) -> Vec<String> {
    let mut by_call: BTreeMap<&str, ByPlace> = BTreeMap::new();
    for row in rows {
        let places = by_call.entry(&row.call).or_default();
        *places.entry((row.kind, row.place.as_ref())).or_insert(0) += 1;
    }
    let mut calls: Vec<(usize, &str, ByPlace)> = by_call
        .into_iter()
        .map(|(call, places)| (places.values().sum(), call, places))
        .collect();
    calls.sort_by_key(|(n, ..)| std::cmp::Reverse(*n));
    calls
        .into_iter()
        .map(|(total, call, places)| format!("  {total} {call}: {}", places_words(places)))
        .collect()
}

/// "14990 sockets to 10.0.0.5:6379, 10 files in /etc/, 3 more in 2 other places": the
/// places most fds point to first.
fn places_words(places: ByPlace) -> String {
    let mut places: Vec<_> = places.into_iter().collect();
    places.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let shown = places.len().min(PLACES_SHOWN);
    let mut parts: Vec<String> = places[..shown]
        .iter()
        .map(|((kind, place), n)| {
            let at = place.map(|p| p.after_kind(*kind)).unwrap_or_default();
            let part = format!("{n} {} {at}", kind_words(*kind, *n, false));
            part.trim_end().to_string()
        })
        .collect();
    let rest = &places[shown..];
    if !rest.is_empty() {
        let n: usize = rest.iter().map(|(_, n)| n).sum();
        parts.push(format!(
            "{n} more in {} other place{}",
            rest.len(),
            plural(rest.len())
        ));
    }
    parts.join(", ")
}

/// fds whose number is at or above the soft limit: only inherited ones, or ones opened
/// before the limit was lowered, can be (the kernel gives no such number), and they make
/// more fds open than the limit allows.
fn above_limit(r: &Report, soft: u64) -> usize {
    r.fds
        .iter()
        .filter(|row| u64::try_from(row.fd).is_ok_and(|fd| fd >= soft))
        .count()
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
        let _ = write!(s, " ({}%", open as u64 * 100 / soft);
        let above = above_limit(r, soft);
        if above > 0 {
            let _ = write!(
                s,
                "; {above} fd{} at or above the soft limit, inherited or opened before the \
                 limit was lowered",
                plural(above)
            );
        }
        s.push(')');
    }
    let _ = write!(s, " in pid {} ({program})", r.pid);
    if let Some(top) = r.stacks.first() {
        let _ = write!(s, "; {} in 1 stack: {}", top.count, contents(top, true));
        if r.stacks.len() > 1 {
            let _ = write!(s, " ({} stacks in all)", r.stacks.len());
        }
    }
    s
}

fn frame_line(i: usize, f: &Frame) -> String {
    let mut s = format!("   #{i:<2}");
    // A runtime's frame has no address: `#0  in read_setting app.py:6 (python)`.
    if f.addr != 0 {
        let _ = write!(s, " {:#x}", f.addr);
    }
    if let Some(func) = &f.function {
        let _ = write!(s, " in {func}");
    }
    if let Some(file) = &f.file {
        let _ = write!(s, " {file}");
        if let Some(line) = f.line {
            let _ = write!(s, ":{line}");
        }
    }
    if let Some(m) = &f.module {
        let _ = match f.offset {
            Some(off) => write!(s, " ({m}+{off:#x})"),
            None => write!(s, " ({m})"),
        };
    }
    s
}

/// `runtime: python 3.10.13, whose frames fdguard cannot read (...): stacks show native frames
/// only`, or that they show its frames.
fn runtime_line(rt: &RuntimeInfo) -> String {
    let name = rt.name.name();
    if rt.frames {
        return format!(
            "runtime: {name} {}; stacks show its frames where it runs",
            rt.version
        );
    }
    let why = rt.why.as_deref().unwrap_or("not known to this fdguard");
    format!(
        "runtime: {name} {}, whose frames fdguard cannot read ({why}): stacks show native \
         frames only",
        rt.version
    )
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

/// The lines, each after `==PID==` and escaped: a path, a command line or a symbol with a
/// newline or an escape sequence stays on its line (`sh -c` and `python3 -c` scripts have
/// newlines), and a file named to look like `==PID== fdguard: end of report` cannot end the
/// report early.
fn prefixed(pid: u32, lines: Vec<String>) -> String {
    let mut out = String::new();
    for l in lines {
        let _ = write!(out, "=={pid}==");
        if !l.is_empty() {
            out.push(' ');
        }
        push_line(&mut out, &l);
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
    if r.reason == "exit" && r.open == 0 {
        // Nothing leaked: the header and an empty count by kind would say only that.
        let mut line = format!("fdguard: no fd left open at exit in {}", r.who());
        if r.suppressed > 0 {
            let _ = write!(
                line,
                "; {} fd{} left out by FDGUARD_IGNORE",
                r.suppressed,
                plural(r.suppressed)
            );
        }
        return prefixed(r.pid, vec![line]);
    }
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
    if let Some(rt) = &r.runtime {
        lines.push(runtime_line(rt));
    }
    if let Some(how) = &r.recorder {
        lines.push(format!(
            "recorded by {how}: the processes it forks are not followed"
        ));
    }
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
    if r.coalesced > 0 {
        lines.push(format!(
            "report requests answered by this report too: {} (made while report processes were \
             busy)",
            r.coalesced
        ));
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
            plural(g.count),
            contents(g, false),
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
            plural(rest.len())
        ));
        // Capped like a stack's rows (an attach to a process with 15,000 fds open lists
        // them all as before attach): what they are comes first.
        let capped = rest.len() > ROWS_PER_STACK;
        if capped {
            lines.extend(unstacked_lines(&rest));
        }
        lines.push(ROW_HEADER.to_string());
        lines.extend(rest.iter().take(ROWS_PER_STACK).map(|row| row_line(row)));
        if capped {
            lines.push(format!(
                "  ... and {} more (the JSON report lists every fd)",
                rest.len() - ROWS_PER_STACK
            ));
        }
    }
    lines.push(String::new());
    lines.push("fdguard: end of report".to_string());
    prefixed(r.pid, lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{Limit, SharedPlace, Word};

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
                place: None,
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
            place: None,
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
            place: None,
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
    fn an_ebpf_recorder_is_named_with_what_it_does_not_follow() {
        let mut r = sample();
        assert!(!r.to_json().contains("recorder"), "no key for the others");
        r.recorder = Some("ebpf".into());
        let text = report(&r);
        assert!(
            text.contains("==4242== recorded by ebpf: the processes it forks are not followed"),
            "{text}"
        );
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back.recorder.as_deref(), Some("ebpf"));
    }

    #[test]
    fn runtime_frames_and_the_runtime_are_shown() {
        let mut r = sample();
        r.stacks[0].frames.insert(
            0,
            Frame {
                module: Some("python".into()),
                function: Some("Pool.dial".into()),
                file: Some("/srv/pool.py".into()),
                line: Some(12),
                ..Frame::default()
            },
        );
        let mut rt = RuntimeInfo {
            name: crate::program::Runtime::Python,
            version: "3.11.7".into(),
            frames: true,
            why: None,
        };
        r.runtime = Some(rt.clone());
        let text = report(&r);
        assert!(
            text.contains("==4242==    #0  in Pool.dial /srv/pool.py:12 (python)\n"),
            "{text}"
        );
        assert!(text.contains("==4242== runtime: python 3.11.7; stacks show its frames"));
        rt.frames = false;
        rt.why = Some("too new".into());
        r.runtime = Some(rt);
        assert!(report(&r).contains(
            "==4242== runtime: python 3.11.7, whose frames fdguard cannot read (too new): \
             stacks show native frames only"
        ));
        let back = crate::read::parse_documents(&r.to_json()).unwrap();
        let crate::read::Document::Report(back) = &back[0] else {
            panic!("{back:?}")
        };
        assert_eq!(back.runtime, r.runtime);
        assert_eq!(back.stacks[0].frames[0], r.stacks[0].frames[0]);
        // Programs without a runtime have no key for it.
        r.runtime = None;
        assert!(!r.to_json().contains("runtime"));
    }

    #[test]
    fn file_streams_are_named_as_such() {
        let mut r = sample();
        r.stacks[0].by_kind = [(FdKind::File, 25)].into();
        r.stacks[0].tcp_states.clear();
        r.stacks[0].streams = 25;
        assert!(summary(&r).ends_with("25 in 1 stack: FILE streams"));
        r.stacks[0].place = Some(shared(FdKind::File, "path", "/etc/hostname", 25));
        assert!(summary(&r).ends_with("25 in 1 stack: FILE streams of /etc/hostname"));
    }

    fn shared(kind: FdKind, by: &'static str, key: &str, count: usize) -> SharedPlace {
        SharedPlace {
            kind,
            place: Place {
                by,
                key: key.into(),
            },
            count,
        }
    }

    /// The first line and the stack's heading.
    fn first_and_heading(r: &Report) -> (String, String) {
        let text = report(r);
        let mut lines = text.lines();
        let first = lines.next().unwrap().to_string();
        let heading = lines.find(|l| l.contains(" fds (")).unwrap().to_string();
        (first, heading)
    }

    #[test]
    fn the_place_all_of_a_stack_shares_follows_its_kind() {
        let mut r = sample();
        let on = "127.0.0.1:9999";
        r.stacks[0].place = Some(shared(FdKind::Socket, "accepted", on, 25));
        let (first, heading) = first_and_heading(&r);
        assert!(
            first.ends_with("; 25 in 1 stack: sockets accepted on 127.0.0.1:9999 CLOSE_WAIT"),
            "{first}"
        );
        assert!(
            heading.ends_with(
                " 25 fds (sockets accepted on 127.0.0.1:9999, 25 CLOSE_WAIT), oldest 1.5s, \
                 newest 1.5s, created at:"
            ),
            "{heading}"
        );
        // Two states: each with its count, in the first line too.
        r.stacks[0].tcp_states = [("CLOSE_WAIT".into(), 24), ("ESTABLISHED".into(), 1)].into();
        let (first, _) = first_and_heading(&r);
        assert!(
            first.ends_with("sockets accepted on 127.0.0.1:9999, 24 CLOSE_WAIT, 1 ESTABLISHED"),
            "{first}"
        );
        // A place that says the state already.
        r.stacks[0].tcp_states = [("CLOSE".into(), 25)].into();
        r.stacks[0].place = Some(shared(FdKind::Socket, "unconnected", "tcp", 25));
        let (first, heading) = first_and_heading(&r);
        assert!(
            first.ends_with("25 in 1 stack: sockets never connected or failed to connect (tcp)"),
            "{first}"
        );
        assert!(heading.contains("(tcp), 25 CLOSE)"), "{heading}");
    }

    #[test]
    fn a_place_most_of_a_stack_shares_comes_with_its_count() {
        let mut r = sample();
        r.stacks[0].place = Some(shared(FdKind::Socket, "peer", "10.0.0.5:6379", 24));
        let (first, heading) = first_and_heading(&r);
        assert!(
            first.ends_with("25 in 1 stack: sockets, 24 to 10.0.0.5:6379, 25 CLOSE_WAIT"),
            "{first}"
        );
        assert!(
            heading.contains("(sockets, 24 to 10.0.0.5:6379, 25 CLOSE_WAIT)"),
            "{heading}"
        );
    }

    #[test]
    fn fds_above_the_soft_limit_are_counted_in_the_first_line() {
        let mut r = sample();
        r.limit.soft = Some(25);
        let first = summary(&r);
        assert!(
            first.contains(
                "26 of 25 fds open (104%; 3 fds at or above the soft limit, inherited or \
                 opened before the limit was lowered) in pid 4242"
            ),
            "{first}"
        );
        r.limit.soft = Some(27);
        assert!(summary(&r).contains(" (96%; 1 fd at or above"));
        r.limit.soft = Some(28);
        assert!(summary(&r).contains(" (92%) in pid"));
    }

    #[test]
    fn an_exit_report_without_leaks_is_one_line() {
        let mut r = Report {
            pid: 9,
            cmdline: vec!["./tests".into()],
            reason: "exit".into(),
            ..Report::default()
        };
        assert_eq!(
            report(&r),
            "==9== fdguard: no fd left open at exit in pid 9 (./tests)\n"
        );
        r.suppressed = 3;
        assert_eq!(
            report(&r),
            "==9== fdguard: no fd left open at exit in pid 9 (./tests); 3 fds left out by \
             FDGUARD_IGNORE\n"
        );
        // A signal's report of nothing keeps its shape.
        r.reason = "signal".into();
        assert!(report(&r).ends_with("fdguard: end of report\n"));
    }

    #[test]
    fn fds_without_a_stack_are_capped_after_what_they_are() {
        let mut r = sample();
        let place = |by, key: &str| {
            Some(Place {
                by,
                key: key.into(),
            })
        };
        for row in &mut r.fds {
            row.stack = None;
            row.call = "before attach".into();
            row.place = place("peer", "10.0.0.5:6379");
        }
        r.fds[0].place = place("peer", "10.0.0.6:6379");
        for (i, by) in ["dir", "local", "listen", "path"].iter().enumerate() {
            r.fds[1 + i].place = place(by, &format!("/x/{i}"));
        }
        r.fds[25].place = place("kind", "pty");
        r.fds[25].call = "inherited".into();
        r.stacks.clear();
        let text = report(&r);
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| {
                l.ends_with(
                    "26 fds without a creation stack (inherited, untracked, or FDGUARD_DEPTH=0):",
                )
            })
            .unwrap();
        assert_eq!(
            lines[at + 1],
            "==4242==   25 before attach: 20 sockets to 10.0.0.5:6379, 1 socket in /x/0, \
             1 socket listening on /x/2, 1 socket on /x/1, 2 more in 2 other places"
        );
        assert_eq!(lines[at + 2], "==4242==   1 inherited: 1 pty");
        assert_eq!(lines[at + 3], format!("=={}== {ROW_HEADER}", r.pid));
        assert_eq!(
            lines[at + 4 + ROWS_PER_STACK],
            "==4242==   ... and 6 more (the JSON report lists every fd)"
        );
        // Up to the cap, the rows alone.
        r.fds.truncate(ROWS_PER_STACK);
        let text = report(&r);
        assert!(
            !text.contains("before attach:") && !text.contains("more"),
            "{text}"
        );
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

    #[test]
    fn a_command_with_newlines_is_one_line() {
        let mut r = sample();
        r.cmdline = vec!["sh".into(), "-c".into(), "ls\ndate".into()];
        let text = report(&r);
        assert!(
            text.contains("==4242== command: sh -c ls\\ndate\n"),
            "{text}"
        );
        assert!(text.lines().all(|l| l.starts_with("==4242==")));
    }

    /// What the process named, wherever the text shows it: each line stays one line, the end
    /// line is the report's own, and no control character reaches the terminal.
    #[test]
    fn what_the_process_named_is_escaped_everywhere() {
        const EVIL: &str = "evil\n==4242== fdguard: end of report\n\x1b[2J\x1b]0;pwn\x07";
        const SHOWN: &str = "evil\\n==4242== fdguard: end of report\\n\\x1b[2J\\x1b]0;pwn\\x07";
        let mut r = sample();
        r.cmdline = vec![format!("./{EVIL}"), EVIL.into()];
        r.fds[0].desc = format!("/tmp/{EVIL}.txt");
        r.stacks[0].place = Some(shared(FdKind::Socket, "peer", EVIL, 25));
        let f = &mut r.stacks[0].frames[0];
        (f.function, f.file, f.module) = (Some(EVIL.into()), Some(EVIL.into()), Some(EVIL.into()));
        let notice = BadCloseNotice {
            pid: 4242,
            stack: vec![f.clone()],
            ..Default::default()
        };
        for text in [report(&r), bad_close(&notice)] {
            assert!(text.lines().all(|l| l.starts_with("==4242==")), "{text}");
            assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text}");
            assert!(text.contains(SHOWN), "{text}");
        }
        let text = report(&r);
        let ends = text.matches("fdguard: end of report\n").count();
        assert_eq!(ends, 1, "{text}");
        assert!(text.contains(&format!("(./{SHOWN})")), "{text}");
        assert!(text.contains(&format!("/tmp/{SHOWN}.txt\n")), "{text}");
        assert!(text.contains(&format!(" in {SHOWN} {SHOWN}:42 ({SHOWN}+0x233)")));
        // An exit report of nothing names the program on its one line.
        r.reason = "exit".into();
        r.open = 0;
        assert_eq!(report(&r).lines().count(), 1);
    }
}
