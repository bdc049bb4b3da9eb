//! The process that holds an eBPF attach: it loads the recorder for the process, records the
//! fds open before the attach, and then, until the process ends or `fdguard detach` ends it
//! (SIGTERM), answers report requests (`fdguard report`, on `request::tracer_signal`, as the
//! tracer does) and runs the threshold and EMFILE triggers, making every report with the
//! tracer's `report` from a table read out of the recorder's maps.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fdguard_core::call::Call;
use fdguard_core::report::compact_utc;

use super::load::{BEFORE_ATTACH, Count, Event, Recorded, Recorder};
use crate::fail::{Failure, Outcome};
use crate::os::FdDir;
use crate::run::GuardOptions;
use crate::target::Target;
use crate::trace::calls::creator;
use crate::trace::interned::Interned;
use crate::trace::report::{View, Why};
use crate::trace::stack::Stacks;
use crate::trace::sys;
use crate::trace::table::{Entry, StackKey, Table};
use crate::trace::tracer::Watch;
use crate::trace::triggers::Triggers;

/// How often the server looks whether the process is still there and the threshold re-armed,
/// when nothing else woke it.
const TICK: Duration = Duration::from_secs(1);

/// The most fds a process can have (`fs.nr_open`'s default and usual ceiling): the recorder's
/// room when the hard limit is higher or unlimited.
const MOST_FDS: u64 = 1 << 20;

/// What the server has of the process it records.
struct Served {
    pid: i32,
    /// The process's start time (`/proc/PID/stat`): a pid reused by another process is not it.
    start: u64,
    recorder: Recorder,
    /// What the fds open when the recorder started are: `before attach`, or (`run --ebpf`)
    /// `inherited`.
    found: Call,
    /// The executable the process runs, and its stacks: made again when it changes (`run
    /// --ebpf` starts the recorder before the program's exec; a program may exec another).
    exe: PathBuf,
    depth: usize,
    image: Rc<Stacks>,
    stacks: Interned,
    /// Stack ids of the recorder's map, named once each.
    keys: HashMap<u32, StackKey>,
}

impl Served {
    /// The table of the fds recorded now: made, when, by which thread, from which stack.
    fn table(&mut self) -> Table {
        let exe = executable(self.pid);
        if exe != self.exe {
            self.image = Rc::new(Stacks::for_program(&exe, self.depth));
            self.exe = exe;
            self.keys.clear();
        }
        let now = Instant::now();
        let now_ns = crate::os::monotonic_ns();
        let mut table = Table::default();
        for r in self.recorder.recorded() {
            let call = if r.nr == BEFORE_ATTACH {
                self.found
            } else {
                creator(i64::from(r.nr)).unwrap_or(Call::Untracked)
            };
            let age = Duration::from_nanos(now_ns.saturating_sub(r.created_ns));
            let entry = Entry {
                call,
                cloexec: false,
                tid: r.tid,
                created: now.checked_sub(age).unwrap_or(now),
                stack: self.key(&r),
            };
            table.insert(r.fd, entry);
        }
        table
    }

    fn key(&mut self, r: &Recorded) -> Option<StackKey> {
        let id = r.stack?;
        if let Some(key) = self.keys.get(&id) {
            return Some(*key);
        }
        let pcs = self.recorder.stack(id)?;
        let code = code_ranges(self.pid);
        let captured = self
            .image
            .walked_by_kernel(self.pid, &pcs, |pc| code.iter().any(|r| r.contains(&pc)));
        let key = self.stacks.key(&self.image, captured);
        self.keys.insert(id, key);
        Some(key)
    }

    /// Calls `f` with a view of the process and the table recorded now.
    fn with_view(&mut self, f: impl FnOnce(View<'_>)) {
        let table = self.table();
        f(View {
            tid: self.pid,
            tgid: self.pid,
            table: &table,
            stacks: &self.stacks,
            recorder: Some("ebpf"),
        });
    }

    /// Whether the process is still the one attached to.
    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// Sets the recorder's count of open fds from /proc; returns it.
    fn recount(&mut self) -> u64 {
        let open = FdDir::open(self.pid)
            .and_then(|d| d.numbers())
            .map_or(0, |n| n.len() as u64);
        self.recorder.set_count(Count::Open, open);
        open
    }
}

/// The executable process `pid` runs, named as the process names it when this command sees
/// the same file there.
fn executable(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(format!("/proc/{pid}/exe")))
}

/// The addresses of process `pid`'s executable mappings (read for each new stack: a library
/// loaded since is there).
fn code_ranges(pid: i32) -> Vec<std::ops::Range<u64>> {
    let Ok(maps) = procfs::process::Process::new(pid).and_then(|p| p.maps()) else {
        return Vec::new();
    };
    maps.into_iter()
        .filter(|m| m.perms.contains(procfs::process::MMPermissions::EXECUTE))
        .map(|m| m.address.0..m.address.1)
        .collect()
}

fn start_time(pid: i32) -> Option<u64> {
    let target = Target::open(pid).ok()?;
    let stat = target.process.stat().ok()?;
    (!crate::target::exiting(&stat)).then_some(stat.starttime)
}

/// The file naming the server of process `pid`, which `fdguard report` and `fdguard detach`
/// read (`super::server_of`).
pub fn run_file(pid: i32) -> PathBuf {
    PathBuf::from(format!("{}/ebpf.{pid}", super::RUN_DIR))
}

/// `fdguard ebpf-serve PID`, started by `fdguard attach PID`: its first line on stdout says
/// whether it attached (`ready FDS`, or `error CODE MESSAGE`: the exit status `attach` ends
/// with, and why); then it serves until the process ends or it is told to end.
pub fn serve(pid: i32, from_start: bool) -> Outcome {
    let found = if from_start {
        Call::Inherited
    } else {
        Call::BeforeAttach
    };
    let started = match start(pid, found) {
        Ok(s) => s,
        Err(f) => {
            println!("error {} {}", f.code, f.message);
            return Err(f);
        }
    };
    let (mut served, before) = started;
    // Before the run file and the ready line, which `fdguard report` may act on at once: its
    // signal's default would end this process.
    sys::ignore_sigpipe();
    sys::end_on(&[libc::SIGTERM, libc::SIGINT]);
    sys::take_requests_on(fdguard_core::request::tracer_signal());
    let (config, _) = GuardOptions::default().config();
    let file = run_file(pid);
    forget_stale();
    let written = std::fs::create_dir_all(super::RUN_DIR)
        .and_then(|()| std::fs::write(&file, format!("{}\n", std::process::id())));
    if let Err(e) = written {
        let f = Failure::failed(format!("cannot write {}: {e}", file.display()));
        println!("error {} {}", f.code, f.message);
        return Err(f);
    }
    println!("ready {before}");
    let _ = std::io::stdout().flush();
    let stamp = compact_utc(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let mut triggers = Triggers::new(&config, &stamp);
    while !sys::ending() && served.alive() {
        for request in sys::requests() {
            served.with_view(|view| triggers.asked(request, view));
        }
        let mut open = served.recorder.count(Count::Open);
        for event in served.recorder.events() {
            match event {
                Event::Failed { nr, errno } => {
                    if triggers.emfile_due(Instant::now()) {
                        let call = creator(i64::from(nr)).unwrap_or(Call::Untracked);
                        served
                            .with_view(|view| triggers.report(&view, Why::Emfile { call, errno }));
                    }
                }
                Event::Recovered => triggers.creation_succeeded(),
                Event::Recount | Event::Threshold => open = served.recount(),
            }
        }
        if triggers.threshold_due(open as usize, pid) {
            served.with_view(|view| triggers.report(&view, Why::Threshold));
        }
        // The recorder tells when the count reaches the threshold, once per arming: armed
        // again while the count is below it (the report itself re-arms 10 points below,
        // which this loop's count shows the triggers).
        let level = triggers.threshold_level(pid).unwrap_or(u64::MAX);
        if open < level {
            served.recorder.set_count(Count::NotifyAt, level);
        }
        served.recorder.wait(TICK);
    }
    // Unloaded before the file goes: `fdguard detach` waits for the file.
    drop(served);
    let _ = std::fs::remove_file(&file);
    Ok(())
}

/// Removes the run files of servers that were killed (`super::server_of` does).
fn forget_stale() {
    let Ok(dir) = std::fs::read_dir(super::RUN_DIR) else {
        return;
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix("ebpf."));
        if let Some(pid) = pid.and_then(|p| p.parse().ok()) {
            super::server_of(pid);
        }
    }
}

/// Loads the recorder for `pid` and records the fds it has open; also returns how many.
fn start(pid: i32, found: Call) -> Result<(Served, usize), Failure> {
    let target = Target::open(pid)?;
    let start = start_time(pid).ok_or_else(|| Failure::bad_input(format!("pid {pid} exited")))?;
    let (config, _) = GuardOptions::default().config();
    let hard = target.limit()?.hard.unwrap_or(MOST_FDS);
    let room = hard.clamp(1024, MOST_FDS) as u32;
    let mut recorder = Recorder::load(pid, config.depth > 0, room)?;
    // After the programs are attached: an fd made from now on is recorded by them, one made
    // before is in /proc.
    let before = FdDir::open(pid)?.numbers()?;
    recorder.before_attach(&before, crate::os::monotonic_ns());
    recorder.set_count(Count::Open, before.len() as u64);
    recorder.set_count(Count::NotifyAt, u64::MAX);
    let exe = executable(pid);
    let served = Served {
        pid,
        start,
        recorder,
        found,
        image: Rc::new(Stacks::for_program(&exe, config.depth)),
        exe,
        depth: config.depth,
        stacks: Interned::default(),
        keys: HashMap::new(),
    };
    Ok((served, before.len()))
}
