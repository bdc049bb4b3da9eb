//! Every process a test starts ends with the test, pass or fail.
//!
//! `command` puts the process in a process group of its own and asks the kernel to kill it when
//! the thread that started it ends (`PR_SET_PDEATHSIG`; libtest runs each test on a thread of
//! its own, so a test binary killed by a timeout takes its children with it). `Proc` kills that
//! whole group when it is dropped while the process still runs: a test that panics drops it
//! while unwinding, and what the program forked (http.server's and redis's children, a C
//! program's fork children) goes with it. Commands are made here only: `suite_rules` in
//! `main.rs` checks that no test module calls `Command::new` or `.spawn()` itself.

use std::ffi::OsStr;
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output};

/// A command for `program` whose process ends with the test (see the module's doc). Run it with
/// `output()`/`status()`, which wait for it, or start it with `Proc::spawn`.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    c.process_group(0);
    let test_process = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe, and the closure touches no other state
    // between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The test binary died before prctl: nothing would end this process any more.
            if libc::getppid() as u32 != test_process {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    c
}

/// A process a test started with a `command`, killed with its process group when dropped
/// while it still runs.
pub struct Proc(Option<Child>);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc(Some(child))
    }

    /// Kills the process and its group at once, and reaps it.
    pub fn kill_group(&mut self) {
        let child = self.0.as_mut().expect("a process");
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the group this test made (`command`): its id is the
            // leader's pid, which stays taken until the leader is reaped just below.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// The first line the process writes on its piped stdout (a program saying it is ready),
    /// with its newline; the rest of its output is not read.
    pub fn first_line(&mut self) -> String {
        use std::io::BufRead;
        let out = self.stdout.take().expect("stdout piped");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read the process's first line");
        line
    }

    /// `Child::wait_with_output`: waits for the process and collects its piped output.
    pub fn wait_with_output(mut self) -> Output {
        let child = self.0.take().expect("a process");
        child.wait_with_output().expect("wait for the process")
    }
}

impl Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a process")
    }
}

impl DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a process")
    }
}

/// A process that already ended is left alone: what it started may still be finishing work
/// the test reads next (report copies writing their reports), and they end by themselves.
impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.kill_group();
        }
    }
}
