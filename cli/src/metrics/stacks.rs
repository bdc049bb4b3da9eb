//! The fds held by the largest creation stacks of the processes under fdguard, for `metrics`:
//! each such process of the top N is asked for a JSON report as `fdguard report PID --json`
//! asks (its report process makes it, into a reply file; nothing goes where the program writes
//! its own reports). A report forks the program's copy and names its stacks, far more than a
//! scrape's reading of `/proc`, so a serving `metrics --listen` asks each process at most once
//! per `--stacks-every` and gives the stacks it had in between, with their age.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use fdguard_core::read::{Document, parse_documents};
use fdguard_core::report::{Frame, Stack};

use crate::host::Proc;
use crate::report::fetch_json;

/// How long a process's report is waited for: a scrape must end (Prometheus's default scrape
/// timeout is 10 s); the processes are asked at once.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames of a stack its label names, innermost first: enough to tell two call sites of one
/// function apart, few enough to read in a dashboard's legend.
const LABEL_FRAMES: usize = 3;

/// Open fds one creation stack of a process holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackFds {
    /// The stack's innermost frames, `open_log < load_config < main`.
    pub stack: String,
    pub open: usize,
}

/// What a process's last report said: its largest stacks (none if it could not be asked).
#[derive(Clone, Debug)]
pub struct Held {
    pub taken: Instant,
    pub stacks: Vec<StackFds>,
}

/// A frame of Go's standard library (`syscall.Open`, `net/http.(*Transport).dial`): a Go
/// source file, in a package whose import path's first element is not a domain and not `main`.
/// A Go program's stacks start in it (the tracer sees the system call), every one alike.
fn is_go_std(f: &Frame) -> bool {
    let in_go = f.file.as_deref().is_some_and(|p| p.ends_with(".go"));
    let Some(name) = f.function.as_deref().filter(|_| in_go) else {
        return false;
    };
    let (dir, base) = name.rsplit_once('/').unwrap_or(("", name));
    let package = match dir {
        "" => base.split('.').next().unwrap_or(base),
        dir => dir.split('/').next().unwrap_or(dir),
    };
    package != "main" && !package.contains('.')
}

/// A stack's label: the names of its innermost frames, callee first, from the first that is
/// the program's own (past Go's standard library, when the stack leaves it).
fn label(s: &Stack) -> String {
    if s.frames.is_empty() {
        return "no frames".to_string();
    }
    let own = s.frames.iter().position(|f| !is_go_std(f)).unwrap_or(0);
    let names: Vec<String> = s.frames[own..]
        .iter()
        .take(LABEL_FRAMES)
        .map(Frame::name)
        .collect();
    names.join(" < ")
}

/// The `per` stacks holding the most fds, as labelled: stacks whose labels coincide (they
/// differ deeper down) are one series, as a series needs labels of its own.
pub fn largest(stacks: &[Stack], per: usize) -> Vec<StackFds> {
    let mut by_label: BTreeMap<String, usize> = BTreeMap::new();
    for s in stacks {
        *by_label.entry(label(s)).or_default() += s.count;
    }
    let mut out: Vec<StackFds> = by_label
        .into_iter()
        .map(|(stack, open)| StackFds { stack, open })
        .collect();
    out.sort_by(|a, b| b.open.cmp(&a.open).then_with(|| a.stack.cmp(&b.stack)));
    out.truncate(per);
    out
}

/// The stacks of `pid`'s report, or why there are none.
fn ask(pid: i32, per: usize) -> Result<Vec<StackFds>, String> {
    let text = fetch_json(pid, ASK_TIMEOUT).map_err(|f| f.to_string())?;
    let docs = parse_documents(&text).map_err(|e| e.describe(&format!("pid {pid}'s report")))?;
    match docs.last() {
        Some(Document::Report(r)) => Ok(largest(&r.stacks, per)),
        _ => Err(format!("pid {pid} answered with no report")),
    }
}

/// The processes' last stacks, kept between scrapes; one per process (pid and start time, so
/// that a reused pid is asked afresh).
pub struct Stacks {
    per: usize,
    every: Duration,
    known: HashMap<(i32, u64), Held>,
}

/// When `pid` started, in clock ticks since boot; `None` once it is gone.
fn started(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    fdguard_core::procstat::start_ticks(&stat)
}

impl Stacks {
    /// `per` stacks a process (0: none asked), each process asked at most once per `every`.
    pub fn new(per: usize, every: Duration) -> Stacks {
        Stacks {
            per,
            every,
            known: HashMap::new(),
        }
    }

    /// Asks those of `shown` that run under fdguard and were not asked within `every`, all at
    /// once, and forgets the processes no longer shown. A process that cannot be asked is said
    /// so on stderr, once each time it is asked.
    pub fn refresh(&mut self, shown: &[Proc]) {
        let now = Instant::now();
        let ours: Vec<(i32, u64)> = shown
            .iter()
            .filter(|p| self.per > 0 && p.under.is_some())
            .filter_map(|p| Some((p.pid, started(p.pid)?)))
            .collect();
        self.known.retain(|key, _| ours.contains(key));
        let due: Vec<(i32, u64)> = ours
            .into_iter()
            .filter(|key| {
                self.known
                    .get(key)
                    .is_none_or(|h| now.duration_since(h.taken) >= self.every)
            })
            .collect();
        let per = self.per;
        let answers: Vec<_> = std::thread::scope(|s| {
            let asked: Vec<_> = due
                .iter()
                .map(|&key| (key, s.spawn(move || ask(key.0, per))))
                .collect();
            asked
                .into_iter()
                .map(|(key, h)| (key, h.join().unwrap_or_else(|_| Err("panicked".into()))))
                .collect()
        });
        for (key, answer) in answers {
            let stacks = answer.unwrap_or_else(|why| {
                eprintln!(
                    "fdguard: metrics: no creation stacks for pid {}: {why}",
                    key.0
                );
                Vec::new()
            });
            self.known.insert(key, Held { taken: now, stacks });
        }
    }

    /// What `pid`'s last report said, if it was asked.
    pub fn of(&self, pid: i32) -> Option<&Held> {
        self.known
            .iter()
            .find_map(|((p, _), held)| (*p == pid).then_some(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack of functions in `file`.
    fn stack_in(file: &str, count: usize, names: &[&str]) -> Stack {
        Stack {
            count,
            frames: names
                .iter()
                .map(|n| Frame {
                    function: Some(n.to_string()),
                    file: Some(file.to_string()),
                    ..Frame::default()
                })
                .collect(),
            ..Stack::default()
        }
    }

    fn stack(count: usize, names: &[&str]) -> Stack {
        stack_in("app.c", count, names)
    }

    #[test]
    fn go_stacks_are_named_past_the_standard_library() {
        let go = |names: &[&str]| label(&stack_in("/src/x.go", 1, names));
        assert_eq!(
            go(&[
                "syscall.openat",
                "os.openFileNolog",
                "main.leakFiles",
                "main.main"
            ]),
            "main.leakFiles < main.main"
        );
        assert_eq!(
            go(&["net/http.(*Transport).dial", "github.com/acme/api.(*C).Get"]),
            "github.com/acme/api.(*C).Get"
        );
        assert_eq!(
            go(&["runtime.pipe2", "runtime.netpollinit"]),
            "runtime.pipe2 < runtime.netpollinit"
        );
        // Not Go: a C function is the program's, dots or not.
        assert_eq!(label(&stack(1, &["syscall.x", "main"])), "syscall.x < main");
    }

    #[test]
    fn largest_stacks_by_their_innermost_frames() {
        let stacks = [
            stack(5, &["open_log", "load", "main", "start"]),
            stack(7, &["open_log", "load", "main", "other_start"]),
            stack(9, &["dial", "serve", "main"]),
            stack(1, &[]),
            stack(2, &["tiny"]),
        ];
        let want = |stack: &str, open| StackFds {
            stack: stack.to_string(),
            open,
        };
        assert_eq!(
            largest(&stacks, 3),
            [
                want("open_log < load < main", 12),
                want("dial < serve < main", 9),
                want("tiny", 2),
            ]
        );
        assert_eq!(largest(&stacks, 0), []);
        assert_eq!(largest(&stacks, 9).last(), Some(&want("no frames", 1)));
    }
}
