//! `fdguard run` for programs a preload cannot see into (statically linked ones, Go programs,
//! which make their system calls without libc): the program runs traced by this command
//! (ptrace, with a seccomp filter that stops it only on the system calls that create or
//! release fds), which keeps its fd table and makes the library's reports from it.
//!
//! Layers: `mod` (start, end) → `tracer` (the wait loop, which tells a `Watch` what happens)
//! → `calls` and `table` (pure: what a call does to a table), `interned` and `stack` (creation
//! stacks: captured at a call's entry, named at report time); `triggers` (the `Watch`: when a
//! report is due, and `guard`, the accept guard's holds) → `report` (through fdguard-core);
//! `seccomp` (the filter); `sys` holds every `unsafe` call of the tracer's. `attach` through
//! eBPF (`crate::ebpf`) records the same table from the kernel and makes its reports with the
//! same `report`, `triggers`, `interned` and `stack`.
//!
//! The program is killed if fdguard dies (`PTRACE_O_EXITKILL`): without its tracer, every call
//! the filter traces would fail with ENOSYS. A program it executes, static or dynamic, stays
//! traced (the library is not loaded into it).

pub mod calls;
mod guard;
pub mod interned;
pub mod report;
mod seccomp;
pub mod stack;
pub mod sys;
pub mod table;
pub mod tracer;
pub mod triggers;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::fail::Failure;
use crate::run::GuardOptions;
use fdguard_core::config::Config;
use fdguard_core::report::compact_utc;
pub use tracer::End;
use tracer::Tracer;

impl End {
    /// Ends fdguard as the program ended: its exit status, or death by its signal.
    pub fn finish(self) -> ! {
        match self {
            End::Exited(code) => std::process::exit(code),
            End::Killed(sig) => sys::die_by(sig),
        }
    }
}

/// The signals sent to fdguard that are passed on to the program: those a shell or a
/// supervisor sends to the pid it started to stop it or to ask something of it.
pub const FORWARDED: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The options given that the tracer does not honour, as the user wrote them: its report
/// requests come on its own signal (`request::tracer_signal`), it captures no stack at a close,
/// and it does not raise the program's limit.
fn not_applied(o: &GuardOptions) -> Vec<&'static str> {
    given(&[
        (o.signal.is_some(), "--signal"),
        (o.close_stacks, "--close-stacks"),
        (o.raise_nofile, "--raise-nofile"),
    ])
}

/// The names of the `options` given (each: whether it was, its name).
pub fn given(options: &[(bool, &'static str)]) -> Vec<&'static str> {
    options
        .iter()
        .filter_map(|(given, name)| given.then_some(*name))
        .collect()
}

/// `GODEBUG` for a program (`go`: a Go program): the user's, with `tracebackancestors=N` so that a goroutine
/// keeps where its ancestors were created (a socket net/http's dial goroutine makes is then
/// named after the code that called `http.Get`); `None` for other programs, with 0 ancestors,
/// or when the user's `GODEBUG` already says.
fn go_debug(go: bool, ancestors: u8, user: Option<String>) -> Option<String> {
    let user = user.filter(|u| !u.is_empty());
    if !go
        || ancestors == 0
        || user
            .as_deref()
            .is_some_and(|u| u.contains("tracebackancestors"))
    {
        return None;
    }
    let ours = format!("tracebackancestors={ancestors}");
    Some(user.map_or(ours.clone(), |u| format!("{u},{ours}")))
}

/// The configuration `options` give, after saying on stderr their warnings and those of them
/// that `ignored` names (what a recorder from outside, `who`, does not honour).
pub fn say_options(options: &GuardOptions, ignored: &[&str], who: &str) -> Config {
    let (config, warnings) = options.config();
    for w in warnings {
        eprintln!("{w}");
    }
    if !ignored.is_empty() {
        eprintln!("fdguard: not for {who}, ignored: {}", ignored.join(", "));
    }
    config
}

/// Runs `path` (`command` is its argv, the first word as the user gave it) traced, until it
/// and every process it started are gone; the exit report as `options` say.
pub fn run(path: &Path, command: &[OsString], options: &GuardOptions) -> Result<End, Failure> {
    let config = say_options(options, &not_applied(options), "a traced program");
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Failure::bad_input(format!("{} has a NUL byte", path.display())))?;
    let argv = command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Failure::bad_input("an argument has a NUL byte"))?;
    let started = Instant::now();
    let stamp = compact_utc(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    // The program's environment names the options, as under the library: `fdguard report`
    // reads its format and report file there.
    for (name, value) in options.variables() {
        sys::set_env(name, &value);
    }
    let go = fdguard_core::program::Program::examine(path).is_ok_and(|p| p.is_go());
    if let Some(godebug) = go_debug(go, config.go_ancestors, std::env::var("GODEBUG").ok()) {
        sys::set_env("GODEBUG", &godebug);
    }
    // Report requests are taken before the program exists: `fdguard report` finds this
    // process as the program's tracer as soon as it runs, and the request signal's default
    // action would end fdguard, and the program with it (PTRACE_O_EXITKILL).
    sys::take_requests_on(fdguard_core::request::tracer_signal());
    sys::ignore_sigpipe();
    let spawned = sys::spawn(&c_path, &argv, &seccomp::filter()).map_err(|e| {
        Failure::failed(format!(
            "cannot trace {}: {e} (ptrace may be forbidden here: \
             /proc/sys/kernel/yama/ptrace_scope, a container's seccomp profile)",
            path.display()
        ))
    })?;
    sys::forward(FORWARDED, spawned.pid);
    let mut triggers = triggers::Triggers::new(&config, &stamp);
    let (tracer, end) = Tracer::new(spawned.pid, started, config.depth).run(&mut triggers);
    let leaked = triggers.leaked;
    if !tracer.execd()
        && let Some((step, e)) = spawned.exec_error()
    {
        return Err(Failure {
            message: format!("cannot run {}: {step}: {e}", path.display()),
            code: 126,
        });
    }
    match end {
        Some(End::Exited(code)) => Ok(match (config.leak_exitcode, leaked) {
            (Some(code), true) => End::Exited(i32::from(code)),
            _ => End::Exited(code),
        }),
        Some(killed) => Ok(killed),
        None => Err(Failure::failed(format!(
            "lost track of {} (pid {})",
            path.display(),
            spawned.pid
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_programs_keep_their_goroutines_ancestors() {
        let ours = Some("tracebackancestors=5".to_string());
        assert_eq!(go_debug(true, 5, None), ours);
        assert_eq!(go_debug(true, 5, Some(String::new())), ours);
        assert_eq!(
            go_debug(true, 5, Some("madvdontneed=1".into())).as_deref(),
            Some("madvdontneed=1,tracebackancestors=5")
        );
        assert_eq!(go_debug(true, 5, Some("tracebackancestors=2".into())), None);
        assert_eq!(go_debug(true, 0, None), None);
        assert_eq!(go_debug(false, 5, None), None);
    }

    #[test]
    fn options_that_do_not_apply_are_named() {
        assert!(not_applied(&GuardOptions::default()).is_empty());
        let o = GuardOptions {
            at_exit: true,
            close_stacks: true,
            raise_nofile: true,
            ..Default::default()
        };
        assert_eq!(not_applied(&o), ["--close-stacks", "--raise-nofile"]);
    }
}
