//! The wait loop: every thread and process of the program, each stop handled and the thread
//! restarted at once, so that the program runs as it would untraced.
//!
//! - A seccomp stop is a traced call's entry (`calls::at_entry`): a release is applied to the
//!   table there, before the kernel can give the number to another thread; a creation is
//!   followed to its exit stop (`PTRACE_SYSCALL`), where its result says which fds it made.
//!   No result or errno is ever changed.
//! - A signal is passed on unchanged at its delivery stop; a group stop (SIGSTOP, SIGTSTP,
//!   ...) is left in place with `PTRACE_LISTEN`, so that the program stays stopped until
//!   SIGCONT, as it would untraced.
//! - fork copies the table, a clone sharing the fd table (`CLONE_FILES`, asked of the kernel
//!   with `kcmp`) shares it, `unshare(CLONE_FILES)` copies it, exec keeps what is not
//!   close-on-exec. After a thread other than
//!   the leader exec'd, it has the leader's id (the kernel's `de_thread`).
//! - A new thread or process may stop before its creator's event says where it comes from: it
//!   waits, stopped, until it does.
//! - Before the last thread of the program's first process exits (`PTRACE_EVENT_EXIT`), its
//!   fds are still open: `Watch::exiting` reads them then. Report requests, noted by a signal
//!   handler, are served between stops (`Watch::asked`); each creation's result is told
//!   (`Watch::created`: the threshold and EMFILE reports).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::calls::{self, AtEntry, Change, Cloexec, Syscall, Yields};
use super::interned::Interned;
use super::report::View;
use super::stack::Stacks;
use super::sys;
use super::table::{Entry, StackKey, Table};
use crate::os;
use fdguard_core::call::Call;
use fdguard_core::fdinfo::parse_fdinfo;

/// A table shared by the threads (and `CLONE_FILES` processes) that share the kernel's.
type Files = Rc<RefCell<Table>>;

/// A creation between its entry and its exit stop.
#[derive(Clone, Copy)]
struct Pending {
    call: Call,
    /// The call's first argument (an accept's listener).
    arg0: u64,
    cloexec: bool,
    yields: Yields,
    stack: Option<StackKey>,
}

/// A traced thread.
struct Task {
    tgid: i32,
    files: Files,
    pending: Option<Pending>,
    /// Stopped before its exit (`PTRACE_EVENT_EXIT`), or past it.
    exiting: bool,
}

/// What the tracer tells of the program's first process as it runs: the reports' triggers.
pub trait Watch {
    /// Its last thread, stopped before a normal exit, its fds still open.
    fn exiting(&mut self, view: View<'_>);
    /// A report was asked (`fdguard report`): the request's value (`u64::MAX`: none).
    fn asked(&mut self, request: u64, view: View<'_>);
    /// A creation (its first argument `arg0`) returned `result` (an fd or 0, or -errno); its
    /// fds are in the table. Returns how long to hold the thread before the call returns
    /// (none: at once): the accept guard's backoff.
    fn created(&mut self, call: Call, arg0: u64, result: i64, view: View<'_>) -> Option<Duration>;
}

/// How the program's first process ended: what fdguard's own end is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Killed(i32),
}

pub struct Tracer {
    main: i32,
    started: Instant,
    tasks: HashMap<i32, Task>,
    /// New tasks that stopped before their creator's event, with that stop's status.
    early: HashMap<i32, i32>,
    /// The first process has exec'd the program (its table is then read from /proc).
    execd: bool,
    end: Option<End>,
    /// Frames captured per creation stack (`FDGUARD_DEPTH`; 0: none).
    depth: usize,
    /// The executable image each process runs, by process id: a fork shares its parent's,
    /// an exec makes a new one.
    images: HashMap<i32, Rc<Stacks>>,
    stacks: Interned,
    /// Threads held at a call's exit stop (the accept guard), each until its time.
    held: Vec<(i32, Instant)>,
}

impl Tracer {
    /// The tracer of the program `main` (seized, not yet exec'd), started at `started`,
    /// capturing `depth` frames per creation stack.
    pub fn new(main: i32, started: Instant, depth: usize) -> Tracer {
        let mut tasks = HashMap::new();
        let files = Rc::new(RefCell::new(Table::default()));
        tasks.insert(
            main,
            Task {
                tgid: main,
                files,
                pending: None,
                exiting: false,
            },
        );
        Tracer {
            main,
            started,
            tasks,
            early: HashMap::new(),
            execd: false,
            end: None,
            depth,
            images: HashMap::new(),
            stacks: Interned::default(),
            held: Vec::new(),
        }
    }

    /// Whether the first process ran the program (its exec succeeded).
    pub fn execd(&self) -> bool {
        self.execd
    }

    /// Calls `f` with a thread of the first process that is not exiting, and its table.
    fn with_view(&self, f: impl FnOnce(View<'_>)) {
        let Some((tid, task)) = self
            .tasks
            .iter()
            .filter(|(_, t)| t.tgid == self.main && !t.exiting)
            .min_by_key(|(tid, _)| **tid)
        else {
            return;
        };
        let table = task.files.borrow();
        f(View {
            tid: *tid,
            tgid: task.tgid,
            table: &table,
            stacks: &self.stacks,
            recorder: None,
        });
    }

    /// Follows the program until every traced thread is gone, telling `watch` what happens
    /// to its first process. Returns how the first process ended.
    pub fn run(mut self, watch: &mut impl Watch) -> (Self, Option<End>) {
        loop {
            for request in sys::requests() {
                self.with_view(|view| watch.asked(request, view));
            }
            self.release_due();
            let (tid, status) = match sys::wait_any() {
                Ok(stop) => stop,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // ECHILD: nothing left to wait for.
                Err(_) => break,
            };
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.tasks.remove(&tid);
                self.early.remove(&tid);
                if tid == self.main {
                    self.end = Some(if libc::WIFEXITED(status) {
                        End::Exited(libc::WEXITSTATUS(status))
                    } else {
                        End::Killed(libc::WTERMSIG(status))
                    });
                }
            } else if libc::WIFSTOPPED(status) {
                self.stopped(tid, status, watch);
            }
        }
        let end = self.end;
        (self, end)
    }

    /// Restarts the held threads whose time has come; the timer wakes the wait for the next.
    fn release_due(&mut self) {
        let now = Instant::now();
        self.held.retain(|(tid, until)| {
            let due = *until <= now;
            if due {
                sys::cont(*tid, 0);
            }
            !due
        });
        if let Some(next) = self.held.iter().map(|(_, until)| *until).min() {
            sys::wake_within(next.saturating_duration_since(now));
        }
    }

    fn stopped(&mut self, tid: i32, status: i32, watch: &mut impl Watch) {
        // A held thread stops again only when something ended its hold (SIGKILL, the
        // process's exit): it is not restarted a second time.
        self.held.retain(|(held, _)| *held != tid);
        if !self.tasks.contains_key(&tid) {
            self.early.insert(tid, status);
            return;
        }
        let sig = libc::WSTOPSIG(status);
        match status >> 16 {
            libc::PTRACE_EVENT_SECCOMP => self.entry(tid),
            0 if sig == libc::SIGTRAP | 0x80 => self.exit_of_call(tid, watch),
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                self.new_task(tid, watch)
            }
            libc::PTRACE_EVENT_EXEC => self.exec(tid),
            libc::PTRACE_EVENT_EXIT => self.exiting(tid, watch),
            libc::PTRACE_EVENT_STOP => match sig {
                libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => sys::listen(tid),
                _ => sys::cont(tid, 0),
            },
            // A signal about to be delivered: passed on as it is.
            0 => sys::cont(tid, sig),
            _ => sys::cont(tid, 0),
        }
    }

    /// A traced call's entry.
    fn entry(&mut self, tid: i32) {
        let Some(regs) = sys::regs(tid) else {
            return; // killed meanwhile
        };
        let call = Syscall {
            nr: regs.orig_rax as i64,
            args: [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
        };
        let task = self.tasks.get_mut(&tid).expect("known task");
        let image = self.images.get(&task.tgid);
        match calls::at_entry(&call) {
            AtEntry::Change(change) => {
                if let Change::CloseRange { unshare: true, .. } | Change::Unshare = change {
                    let own = task.files.borrow().clone();
                    task.files = Rc::new(RefCell::new(own));
                }
                task.files.borrow_mut().apply(change);
                sys::cont(tid, 0);
            }
            AtEntry::Creates(c) => {
                let cloexec = match c.cloexec {
                    Cloexec::Is(on) => on,
                    Cloexec::OpenHow(at) => {
                        os::read_memory(tid, at, 8).is_ok_and(|b| calls::open_how_cloexec(&b))
                    }
                };
                // Where the call was made from: its thread is stopped at the call's entry.
                let stack = image.map(|image| self.stacks.key(image, image.capture(tid, &regs)));
                task.pending = Some(Pending {
                    call: c.call,
                    arg0: call.args[0],
                    cloexec,
                    yields: c.yields,
                    stack,
                });
                sys::to_exit(tid);
            }
            AtEntry::Nothing => sys::cont(tid, 0),
        }
    }

    /// A creation's exit: the fds it made go into the table.
    fn exit_of_call(&mut self, tid: i32, watch: &mut impl Watch) {
        let task = self.tasks.get_mut(&tid).expect("known task");
        let (Some(p), Some(regs)) = (task.pending.take(), sys::regs(tid)) else {
            sys::cont(tid, 0);
            return;
        };
        let mut read = |at: u64, len: usize| {
            os::read_memory(tid, at, len)
                .ok()
                .filter(|b| b.len() == len)
        };
        let result = regs.rax as i64;
        let fds = calls::made(p.yields, result, &mut read);
        let created = Instant::now();
        let mut table = task.files.borrow_mut();
        for fd in fds {
            let entry = Entry {
                call: p.call,
                cloexec: p.cloexec,
                tid: tid as u32,
                created,
                stack: p.stack,
            };
            table.insert(fd, entry);
        }
        drop(table);
        let hold = (task.tgid == self.main)
            .then(|| {
                let table = task.files.borrow();
                watch.created(
                    p.call,
                    p.arg0,
                    result,
                    View {
                        tid,
                        tgid: self.main,
                        table: &table,
                        stacks: &self.stacks,
                        recorder: None,
                    },
                )
            })
            .flatten();
        match hold {
            Some(d) => {
                self.held.push((tid, Instant::now() + d));
                self.release_due();
            }
            None => sys::cont(tid, 0),
        }
    }

    /// A fork, vfork or clone: the new task's table is the creator's (shared) or a copy.
    fn new_task(&mut self, tid: i32, watch: &mut impl Watch) {
        let Some(new) = sys::event_msg(tid).and_then(|m| i32::try_from(m).ok()) else {
            sys::cont(tid, 0);
            return;
        };
        let parent = self.tasks.get(&tid).expect("known task");
        let files = match sys::same_files(tid, new) {
            Some(true) => parent.files.clone(),
            Some(false) => Rc::new(RefCell::new(parent.files.borrow().clone())),
            // Without kcmp: threads share, processes copy.
            None if thread_group(new) == Some(parent.tgid) => parent.files.clone(),
            None => Rc::new(RefCell::new(parent.files.borrow().clone())),
        };
        let task = Task {
            tgid: thread_group(new).unwrap_or(new),
            files,
            pending: None,
            exiting: false,
        };
        if task.tgid != parent.tgid
            && let Some(image) = self.images.get(&parent.tgid).cloned()
        {
            self.images.insert(task.tgid, image);
        }
        self.tasks.insert(new, task);
        if let Some(status) = self.early.remove(&new) {
            self.stopped(new, status, watch);
        }
        sys::cont(tid, 0);
    }

    /// An exec: the thread now has the process's id; other threads of it are gone; the table
    /// keeps the fds without close-on-exec (the program's first exec: what it inherited).
    fn exec(&mut self, tid: i32) {
        let former = sys::event_msg(tid)
            .and_then(|m| i32::try_from(m).ok())
            .unwrap_or(tid);
        if former != tid
            && let Some(task) = self.tasks.remove(&former)
        {
            self.tasks.insert(tid, task);
        }
        let tgid = tid;
        self.tasks.retain(|t, task| *t == tid || task.tgid != tgid);
        if let Ok(exe) = std::fs::read_link(format!("/proc/{tid}/exe")) {
            let image = Stacks::for_program(&exe, self.depth);
            self.images.insert(tgid, Rc::new(image));
        }
        let task = self.tasks.get_mut(&tid).expect("known task");
        task.tgid = tgid;
        task.pending = None;
        let table = if tid == self.main && !self.execd {
            self.execd = true;
            Table::inherited(open_fds(tid), self.started)
        } else {
            task.files.borrow().exec()
        };
        task.files = Rc::new(RefCell::new(table));
        sys::cont(tid, 0);
    }

    /// A thread about to exit. The first process's last one, on a normal exit, gets the exit
    /// report while its fds are still open.
    fn exiting(&mut self, tid: i32, watch: &mut impl Watch) {
        let task = self.tasks.get_mut(&tid).expect("known task");
        task.exiting = true;
        let tgid = task.tgid;
        let last = tgid == self.main && !self.tasks.values().any(|t| t.tgid == tgid && !t.exiting);
        let status = sys::event_msg(tid).map(|s| s as i32);
        if let (true, Some(status)) = (last, status)
            && libc::WIFEXITED(status)
        {
            let table = self.tasks[&tid].files.borrow();
            watch.exiting(View {
                tid,
                tgid,
                table: &table,
                stacks: &self.stacks,
                recorder: None,
            });
        }
        sys::cont(tid, 0);
    }
}

/// The thread group (process) of task `tid`, from `/proc`.
fn thread_group(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The fds task `tid` has open, each with its close-on-exec flag (`/proc/TID/fdinfo`).
fn open_fds(tid: i32) -> Vec<(i32, bool)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{tid}/fdinfo")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: i32 = e.file_name().to_str()?.parse().ok()?;
        let info = parse_fdinfo(&std::fs::read_to_string(e.path()).ok()?);
        Some((fd, info.flags & libc::O_CLOEXEC as u32 != 0))
    })
    .collect()
}
