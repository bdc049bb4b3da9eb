//! `fdguard inspect PID`: every open fd of any process the user may read, described like the
//! report does, grouped, against the process's own limit. No preload, no injection.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use fdguard_core::escape::push_line;
use fdguard_core::fdinfo::EpollWatch;
use fdguard_core::kind::FdKind;
use fdguard_core::program::Runtime;
use fdguard_core::snapshot::{self, CpuUse, FdEntry, Group, ProgramFacts, Snapshot, SocketFacts};

use crate::fail::{Failure, Outcome};
use crate::fds::read_fds;
use crate::os::FdDir;
use crate::summary::{headline, place, summarize};
use crate::target::{LibState, Target};
use crate::units::count;

/// Rows listed in text unless `--all`.
const ROWS_SHOWN: usize = 50;

/// Reads a whole snapshot of the process, or fails if it exited meanwhile: what was read of
/// it may then be anything from all of its fds to none, and an error reading it (the process
/// gone) is that exit too.
pub fn snapshot(pid: i32) -> Result<Snapshot, Failure> {
    let target = Target::open(pid)?;
    if target.is_zombie() {
        return Err(Failure::bad_input(format!(
            "pid {pid} has exited (a zombie its parent has not reaped): it has no fds"
        )));
    }
    let mut read = read_snapshot(&target);
    if let Ok(snap) = &mut read
        && near_limit(snap)
    {
        snap.cpu = cpu_use(&target);
    }
    if target.has_exited() {
        return Err(Failure::failed(format!(
            "pid {pid} exited while it was being read"
        )));
    }
    read
}

/// fds from the soft limit within which a process counts as at its limit: a server's accept
/// fails with EMFILE once the lowest free number reaches it, and a few fds above the lowest
/// free one (inherited, or fdguard's) do not change that.
const NEAR: u64 = 4;
/// How long the CPU use of a process at its limit is sampled.
const CPU_WINDOW: Duration = Duration::from_millis(200);
/// Share of the sample (percent) its busiest thread was runnable, from which a process at its
/// limit with a listener is said to spin: a loop retrying a failing accept is runnable all the
/// time (its CPU use depends on what else runs: 15 to 24% of a core was measured while the
/// tests held both cores), a calm server waits in the kernel nearly all the time.
const SPINNING: u32 = 50;

fn near_limit(s: &Snapshot) -> bool {
    s.limit
        .soft
        .is_some_and(|soft| s.open as u64 + NEAR >= soft)
}

/// The process's CPU use over `CPU_WINDOW`.
fn cpu_use(target: &Target) -> Option<CpuUse> {
    let (t0, before, runnable) = (Instant::now(), target.cpu_time()?, target.runnable_times());
    std::thread::sleep(CPU_WINDOW);
    let used = target.cpu_time()?.saturating_sub(before);
    let busiest = target
        .runnable_times()
        .iter()
        .filter_map(|(tid, ns)| Some(ns.saturating_sub(*runnable.get(tid)?)))
        .max()
        .unwrap_or(0);
    let window = t0.elapsed();
    let share = |part: f64| (part * 100.0 / window.as_secs_f64()).round() as u32;
    Some(CpuUse {
        percent: share(used.as_secs_f64()),
        runnable_percent: share(busiest as f64 / 1e9).min(100),
        window_ms: window.as_millis() as u32,
    })
}

fn read_snapshot(target: &Target) -> Result<Snapshot, Failure> {
    let pid = target.pid;
    let dir = FdDir::open(pid)?;
    let fds = read_fds(&target.process, &dir)?;
    let loaded = target.fdguard().ok().flatten();
    let program = target.program();
    let runtime = program.map_or(Runtime::Native, |p| p.runtime);
    let runtime = match runtime {
        Runtime::Native => target.mapped_runtime().unwrap_or(runtime),
        r => r,
    };
    Ok(Snapshot {
        pid,
        cmdline: target.cmdline(),
        reason: snapshot::REASON.into(),
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        limit: target.limit()?,
        open: fds.len(),
        summary: summarize(&fds),
        program: ProgramFacts {
            is_static: program.is_some_and(|p| p.is_static),
            go: runtime == Runtime::Go,
            runtime,
        },
        fdguard_library: loaded
            .as_ref()
            .map(|l| l.library.to_string_lossy().into_owned()),
        fdguard_state: loaded.as_ref().map(|l| {
            match l.state {
                _ if l.config.disabled => "disabled",
                Some(LibState::Attached) => "attached",
                Some(LibState::Detached) => "detached",
                Some(LibState::Dormant) => "dormant",
                Some(LibState::Preloaded) | None => "preloaded",
            }
            .into()
        }),
        name: target.name(),
        fds,
        ..Snapshot::default()
    })
}

pub fn run(pid: i32, json: bool, all: bool) -> Outcome {
    let snap = snapshot(pid)?;
    if json {
        println!("{}", serde_json::to_string(&snap).expect("serializable"));
    } else {
        print!("{}", render_text(&snap, all));
    }
    Ok(())
}

/// The limit, and how to raise it in place when the process is close to it.
fn limit_lines(s: &Snapshot, lines: &mut Vec<String>) {
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_string(), |n| count(n as usize));
    let mut line = format!(
        "limit: soft {}, hard {} (the process's own, from /proc/{}/limits)",
        show(s.limit.soft),
        show(s.limit.hard),
        s.pid
    );
    let mut raise = None;
    if let Some(soft) = s.limit.soft {
        let left = soft.saturating_sub(s.open as u64);
        let _ = write!(line, "; {} left before EMFILE", count(left as usize));
        let room = s.limit.hard.is_none_or(|h| h > soft);
        if s.open as u64 * 100 >= soft * 80 && room {
            let hard = s
                .limit
                .hard
                .map_or("unlimited".to_string(), |h| h.to_string());
            raise = Some(format!(
                "       the soft limit can be raised to the hard one in place: \
                 prlimit --pid {} --nofile={hard}:{hard}",
                s.pid
            ));
        }
    }
    lines.push(line);
    lines.extend(raise);
}

/// `text` cut to `max` characters (before it is escaped, so that no escape is cut in two).
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// `by kind: socket 999, file 4`: largest first, then by name.
fn counts_line<'a>(title: &str, counts: impl Iterator<Item = (&'a str, usize)>) -> String {
    let mut v: Vec<(&str, usize)> = counts.collect();
    v.sort_by_key(|e| (std::cmp::Reverse(e.1), e.0));
    let parts: Vec<String> = v
        .iter()
        .map(|(k, n)| format!("{k} {}", count(*n)))
        .collect();
    format!("{title}: {}", parts.join(", "))
}

fn group_line(g: &Group) -> String {
    let mut line = format!("{:>9}  {:<8} {}", count(g.count), g.kind.name(), place(g))
        .trim_end()
        .to_string();
    if !g.tcp_states.is_empty() && g.by != "unconnected" {
        let states: Vec<String> = g
            .tcp_states
            .iter()
            .map(|(s, n)| format!("{s} {}", count(*n)))
            .collect();
        let _ = write!(line, " ({})", states.join(", "));
    }
    line
}

fn watches(w: &[EpollWatch], open: &[FdEntry]) -> String {
    let parts: Vec<String> = w
        .iter()
        .map(|w| {
            let gone = if open.binary_search_by_key(&w.fd, |e| e.fd).is_err() {
                "; not open: the registration outlived the fd"
            } else {
                ""
            };
            format!("{} ({}{gone})", w.fd, w.events.join(","))
        })
        .collect();
    format!("  watching {}", parts.join(", "))
}

fn fd_line(e: &FdEntry, all: &[FdEntry]) -> String {
    let mut line = format!("{:>8}  {:<9} {}", e.fd, e.kind.name(), e.desc);
    if let Some(queue) = e.socket.as_ref().and_then(accept_queue) {
        let _ = write!(line, "  {queue}");
    }
    if !e.watches.is_empty() {
        line.push_str(&watches(&e.watches, all));
    } else if e.kind == FdKind::Epoll {
        line.push_str("  watching nothing");
    }
    if !e.other_ends.is_empty() {
        let ends: Vec<String> = e.other_ends.iter().map(i32::to_string).collect();
        let _ = write!(line, "  (also open here as fd {})", ends.join(", "));
    }
    line
}

/// `accept queue 129 of 128: full, the program is not accepting` for a listener whose queue
/// holds connections (an empty one says nothing worth a word).
fn accept_queue(s: &SocketFacts) -> Option<String> {
    let queue = s.accept_queue.filter(|q| *q > 0)?;
    let mut words = format!("accept queue {}", count(queue as usize));
    if let Some(backlog) = s.backlog {
        let _ = write!(words, " of {}", count(backlog as usize));
    }
    if s.accept_queue_full() {
        words.push_str(": full, the program is not accepting");
    }
    Some(words)
}

/// Full listeners shown at the top, before the fd rows: at most this many.
const FULL_SHOWN: usize = 5;

/// What needs a look first: listeners whose accept queue is full, and the CPU use of a process
/// at its limit, with what stops a spin.
fn triage_lines(s: &Snapshot, lines: &mut Vec<String>) {
    let full: Vec<&FdEntry> = s
        .fds
        .iter()
        .filter(|e| {
            e.socket
                .as_ref()
                .is_some_and(SocketFacts::accept_queue_full)
        })
        .collect();
    for e in full.iter().take(FULL_SHOWN) {
        let queue = e.socket.as_ref().and_then(accept_queue).unwrap_or_default();
        lines.push(format!("listener fd {} ({}): {queue}", e.fd, e.desc));
    }
    if full.len() > FULL_SHOWN {
        lines.push(format!(
            "     ... and {} more full listeners",
            full.len() - FULL_SHOWN
        ));
    }
    let Some(cpu) = s.cpu else {
        return;
    };
    let mut line = format!(
        "cpu: {}% of a core over {} ms, at its limit",
        cpu.percent, cpu.window_ms
    );
    let listens = s.summary.tcp_states.contains_key("LISTEN");
    let guarded = matches!(s.fdguard_state.as_deref(), Some("preloaded" | "attached"));
    if cpu.runnable_percent < SPINNING {
        line.push_str(": not spinning");
    } else if listens && !guarded {
        line.push_str(": a loop retrying accept as it fails with EMFILE spins like this");
        lines.push(line);
        line = if s.program.is_static || s.program.go {
            "       fdguard's library cannot be attached to it (static or Go); \
             `fdguard run` starts it under fdguard's tracer, whose accept guard holds a \
             failing accept instead"
                .to_string()
        } else {
            format!(
                "       `fdguard attach {}` stops the spin: its accept guard makes a failing \
                 accept wait (5 ms doubling to 1 s) until an fd is free",
                s.pid
            )
        };
    }
    lines.push(line);
}

/// The runtimes whose code a native stack does not name.
fn runtime_words(r: Runtime) -> Option<&'static str> {
    match r {
        Runtime::Jvm => Some("runs on a JVM (Java)"),
        Runtime::Python => Some("runs on CPython"),
        Runtime::Node => Some("runs on node (JavaScript)"),
        Runtime::Native | Runtime::Go => None,
    }
}

/// The snapshot as text, line by line, each line escaped as it is written: paths, socket
/// names and the command line are the process's to choose.
pub fn render_text(s: &Snapshot, all: bool) -> String {
    let mut lines = vec![headline(s.pid, &s.name, s.limit, s.open, &s.summary)];
    limit_lines(s, &mut lines);
    triage_lines(s, &mut lines);
    if !s.cmdline.is_empty() {
        lines.push(format!("command: {}", cut(&s.cmdline.join(" "), 200)));
    }
    if let (Some(lib), Some(state)) = (&s.fdguard_library, s.fdguard_state.as_deref()) {
        let pid = s.pid;
        lines.push(match state {
            "preloaded" | "attached" => format!(
                "fdguard is {} ({lib}): `fdguard report {pid}` names the code that created \
                 each fd{}",
                if state == "attached" {
                    "attached to it"
                } else {
                    "loaded in it"
                },
                if state == "attached" {
                    " since the attach"
                } else {
                    ""
                }
            ),
            "disabled" => format!("fdguard is loaded in it ({lib}) but disabled (FDGUARD_DISABLE)"),
            other => format!(
                "fdguard is loaded in it ({lib}) but {other}: `fdguard attach {pid}` starts it"
            ),
        });
    }
    if s.program.is_static {
        lines.push(
            "program: statically linked: fdguard's library cannot be loaded into it \
             (inspect and watch see all its fds)"
                .into(),
        );
    } else if s.program.go {
        lines.push(
            "program: a Go program: it makes its system calls without libc, so fdguard's \
             library would not see its fds being created (inspect and watch see them all)"
                .into(),
        );
    } else if let Some(runtime) = runtime_words(s.program.runtime) {
        lines.push(format!(
            "program: {runtime}: under fdguard's library, creation stacks show the runtime's \
             own native frames, not the program's methods"
        ));
    }
    lines.push(counts_line(
        "by kind",
        s.summary.by_kind.iter().map(|(k, n)| (k.name(), *n)),
    ));
    if !s.summary.tcp_states.is_empty() {
        lines.push(counts_line(
            "by TCP state",
            s.summary.tcp_states.iter().map(|(k, n)| (&**k, *n)),
        ));
    }
    if !s.summary.groups.is_empty() {
        lines.extend(["".into(), "groups, largest first:".into()]);
        lines.extend(s.summary.groups.iter().map(group_line));
    }
    if !s.fds.is_empty() {
        lines.push(String::new());
        lines.push(format!("{:>8}  {:<9} description", "fd", "kind"));
        let shown = if all { s.fds.len() } else { ROWS_SHOWN };
        lines.extend(s.fds.iter().take(shown).map(|e| fd_line(e, &s.fds)));
        if s.fds.len() > shown {
            lines.push(format!(
                "     ... and {} more: --all lists every fd, --json all of them with details",
                count(s.fds.len() - shown)
            ));
        }
    }
    let mut o = String::new();
    for l in &lines {
        push_line(&mut o, l);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::summarize;

    fn listener(queue: u32, backlog: u32) -> FdEntry {
        FdEntry {
            fd: 3,
            kind: FdKind::Socket,
            desc: "tcp 0.0.0.0:80 LISTEN".into(),
            socket: Some(SocketFacts {
                desc: fdguard_core::sockdesc::SocketDesc {
                    proto: "tcp".into(),
                    tcp_state: Some("LISTEN".into()),
                    ..Default::default()
                },
                in_tables: true,
                accept_queue: Some(queue),
                backlog: Some(backlog),
            }),
            ..FdEntry::default()
        }
    }

    #[test]
    fn a_full_accept_queue_and_a_spin_at_the_limit() {
        let fds = vec![listener(129, 128)];
        let mut s = Snapshot {
            pid: 9,
            open: 1021,
            limit: fdguard_core::report::Limit {
                soft: Some(1024),
                hard: Some(1024),
            },
            summary: summarize(&fds),
            cpu: Some(CpuUse {
                percent: 98,
                runnable_percent: 100,
                window_ms: 201,
            }),
            fds,
            ..Snapshot::default()
        };
        assert!(near_limit(&s));
        let text = render_text(&s, false);
        for line in [
            "listener fd 3 (tcp 0.0.0.0:80 LISTEN): accept queue 129 of 128: full, the \
             program is not accepting",
            "cpu: 98% of a core over 201 ms, at its limit: a loop retrying accept as it fails \
             with EMFILE spins like this",
            "       `fdguard attach 9` stops the spin: its accept guard makes a failing accept \
             wait (5 ms doubling to 1 s) until an fd is free",
            "       3  socket    tcp 0.0.0.0:80 LISTEN  accept queue 129 of 128: full, the \
             program is not accepting",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // Under fdguard already, or calm: no attach.
        s.fdguard_state = Some("attached".into());
        assert!(!render_text(&s, false).contains("stops the spin"));
        s.fdguard_state = None;
        s.cpu = Some(CpuUse {
            percent: 20,
            runnable_percent: 1,
            window_ms: 200,
        });
        assert!(render_text(&s, false).contains("at its limit: not spinning"));
        // A queue with room: on its row only, without "full".
        s.fds = vec![listener(3, 128)];
        let text = render_text(&s, false);
        assert!(
            !text.contains("listener fd") && !text.contains("full"),
            "{text}"
        );
        assert!(text.contains("LISTEN  accept queue 3 of 128\n"), "{text}");
        s.open = 1000;
        assert!(!near_limit(&s));
    }

    /// A path, a program name and a command line chosen to forge lines and drive the terminal
    /// stay on their lines, escaped.
    #[test]
    fn what_the_process_named_is_escaped() {
        let evil = "evil\n1 file      /etc/passwd\n\x1b[2J\x1b]0;pwn\x07";
        let shown = r"evil\n1 file      /etc/passwd\n\x1b[2J\x1b]0;pwn\x07";
        let fds = vec![FdEntry {
            fd: 3,
            kind: FdKind::File,
            desc: format!("/tmp/{evil}"),
            path: Some(format!("/tmp/{evil}")),
            ..FdEntry::default()
        }];
        let s = Snapshot {
            pid: 7,
            cmdline: vec![evil.into(), evil.into()],
            name: evil.into(),
            open: 1,
            summary: summarize(&fds),
            fdguard_library: Some(format!("/{evil}/libfdguard.so")),
            fdguard_state: Some("preloaded".into()),
            fds,
            ..Snapshot::default()
        };
        let text = render_text(&s, false);
        for line in [
            format!("1 fds open (no limit) in pid 7 ({shown}); 1 file, 1 of /tmp/{shown}"),
            format!("command: {shown} {shown}"),
            format!("fdguard is loaded in it (/{shown}/libfdguard.so): `fdguard report 7`"),
            format!("        1  file     of /tmp/{shown}"),
            format!("       3  file      /tmp/{shown}"),
        ] {
            assert!(text.lines().any(|l| l.starts_with(&line)), "{line}\n{text}");
        }
        assert!(
            !text.contains('\x1b') && !text.contains("\n1 file"),
            "{text}"
        );
    }
}
