//! `fdguard attach PID` and `fdguard detach PID`: fdguard into a process that is already
//! running, without restarting it, and out again.
//!
//! One thread of the process is stopped with ptrace (`PTRACE_SEIZE` and `PTRACE_INTERRUPT`:
//! no signal is sent), preferably one inside a system call that waits (`epoll_wait`, `accept`,
//! `read`, ...), where it holds none of libc's locks. Its registers and vector state are saved;
//! it is made to call `dlopen(libfdguard.so)` (found in the process's libc) and then the
//! library's `fdguard_attach(options)`, each call returning to address 0, where the fault
//! stops it again; then every register is put back and the thread let go: the system call it
//! was in starts again as after any ptrace stop. What the library does then is in its
//! `src/attach`. A HotSpot JVM is attached through its own door instead, with no ptrace
//! (`jvm`).

mod jvm;
mod options;
mod room;
mod thread;

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;

use crate::fail::{Failure, Outcome};
use crate::fds::read_fds;
use crate::os::FdDir;
use crate::run::{GuardOptions, library};
use crate::target::{LibState, Mapped, Target};
use fdguard_core::escape::escaped;
use room::{make_room, needs_room};
use thread::{Stopped, ptrace_failure, release, stop_others};

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The process id
    pub pid: i32,
    #[command(flatten)]
    pub options: GuardOptions,
    /// Seconds to wait for a thread of the process to stop in a system call (for a JVM:
    /// for its attach listener and its answer)
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// The process id
    pub pid: i32,
    /// Seconds to wait for a thread of the process to stop in a system call (for a JVM:
    /// for its attach listener and its answer)
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

/// Refuses what cannot be attached to, saying why.
fn check_target(target: &Target) -> Result<(), Failure> {
    let pid = target.pid;
    if !cfg!(target_arch = "x86_64") {
        return Err(Failure::bad_input("fdguard attach works on x86-64 only"));
    }
    if target.is_zombie() {
        return Err(Failure::bad_input(format!("pid {pid} has exited")));
    }
    if target
        .process
        .stat()
        .is_ok_and(|s| s.state == 'T' || s.state == 't')
    {
        return Err(Failure::bad_input(format!(
            "pid {pid} is stopped (by a signal or a debugger): continue it first (kill -CONT {pid})"
        )));
    }
    if let Some(p) = target.program().filter(|p| p.is_static || p.is_go()) {
        let what = if p.is_go() {
            "a Go program"
        } else {
            "statically linked"
        };
        return Err(Failure::bad_input(format!(
            "pid {pid} is {what}: it makes its system calls without libc, so fdguard's \
             hooks would never be called; `fdguard inspect {pid}` and `fdguard watch {pid}` \
             see its fds from outside"
        )));
    }
    Ok(())
}

/// The libc function `name` in the process (glibc 2.34+ has `dlopen` there; older ones in
/// libdl, if the program loaded it).
fn libc_function(
    target: &Target,
    names: &[&'static str],
) -> Result<Option<(&'static str, u64)>, Failure> {
    let is_libc =
        |n: &str| n.starts_with("libc.so") || n.starts_with("libc-2.") || n.starts_with("ld-musl");
    let is_libdl = |n: &str| n.starts_with("libdl.so") || n.starts_with("libdl-2.");
    for lib in [target.mapped(is_libc)?, target.mapped(is_libdl)?]
        .into_iter()
        .flatten()
    {
        if let Some(found) = names.iter().find_map(|n| Some((*n, lib.symbol(n)?))) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Where fdguard stands in the process, and its mapping when it is loaded.
fn library_in(target: &Target) -> Result<Option<(Mapped, Option<LibState>)>, Failure> {
    Ok(target.fdguard()?.map(|l| (l.mapped, l.state)))
}

fn show_message(lib: &Mapped, pid: i32, code: u64, stopped: &Stopped) -> Outcome {
    let message = lib
        .symbol("fdguard_message")
        .map(|a| stopped.string_at(a, 4096))
        .unwrap_or_default();
    said(&message, pid, code as u32)
}

/// What an entry point of the library in `pid` said (`message`, its `fdguard_message`) and
/// returned (`code`): its lines printed, or its refusal as the failure.
fn said(message: &str, pid: i32, code: u32) -> Outcome {
    // Read from the target's memory: shown escaped, like any name it chose.
    if code == 0 {
        for line in message.lines() {
            println!("{}", escaped(line));
        }
        Ok(())
    } else {
        let why = message.trim_start_matches("fdguard: ").replace('\n', "; ");
        Err(Failure::failed(if why.is_empty() {
            format!("fdguard in pid {pid} refused (code {code})")
        } else {
            why
        }))
    }
}

fn deadline(timeout: f64) -> Result<Instant, Failure> {
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(Failure::bad_input(
            "--timeout must be a positive number of seconds",
        ));
    }
    Ok(Instant::now() + Duration::from_secs_f64(timeout))
}

/// Reading the process's memory map needs what ptrace needs: say so in ptrace's terms.
fn check_access(pid: i32) -> Result<(), Failure> {
    match std::fs::read(format!("/proc/{pid}/maps")) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(ptrace_failure(
            pid,
            &std::io::Error::from_raw_os_error(libc::EPERM),
        )),
        _ => Ok(()),
    }
}

pub fn attach(args: AttachArgs) -> Outcome {
    let pid = args.pid;
    let until = deadline(args.timeout)?;
    let target = Target::open(pid)?;
    check_access(pid)?;
    check_target(&target)?;
    let loaded = library_in(&target)?;
    match loaded.as_ref().map(|(_, s)| *s) {
        Some(Some(LibState::Preloaded)) => {
            return Err(Failure::bad_input(format!(
                "pid {pid} already runs under fdguard (preloaded): `fdguard report {pid}`"
            )));
        }
        Some(Some(LibState::Attached)) => {
            return Err(Failure::bad_input(format!(
                "fdguard is already attached to pid {pid}: `fdguard report {pid}`, or \
                 `fdguard detach {pid}` first"
            )));
        }
        _ => {}
    }
    let lib = library()?;
    let seen = target.root().join(lib.strip_prefix("/").unwrap_or(&lib));
    if !same_file(&lib, &seen) {
        return Err(Failure::bad_input(format!(
            "{} is not the same file in pid {pid}'s filesystem (another mount namespace?): \
             put libfdguard.so where the process sees it and set FDGUARD_LIB to that path",
            lib.display()
        )));
    }
    let fds = read_fds(&target.process, &FdDir::open(pid)?)?;
    let options = options::text(&args.options, &fds);
    if jvm::is_hotspot(&target) {
        return jvm::attach(&target, &lib, &options, until);
    }
    let dlopen = if loaded.is_some() {
        None
    } else {
        Some(
            libc_function(&target, &["dlopen", "__libc_dlopen_mode"])?.ok_or_else(|| {
                Failure::bad_input(format!(
                    "no dlopen in pid {pid}'s libc (glibc before 2.34 without libdl loaded?)"
                ))
            })?,
        )
    };
    let dlerror = libc_function(&target, &["dlerror"])?;

    let mut stopped = Stopped::begin(pid, until)?;
    let mut others = Vec::new();
    let restore_soft = match needs_room(pid, &fds).and_then(|need| {
        if need {
            others = stop_others(pid, stopped.tracee.tid, until)?;
            make_room(pid, &fds)
        } else {
            Ok(None)
        }
    }) {
        Ok(r) => r,
        Err(e) => {
            release(others);
            stopped.end()?;
            return Err(e);
        }
    };
    let result = (|| {
        let lib_at = stopped.put(lib.as_os_str().as_encoded_bytes())?;
        let opts_at = stopped.put(options.as_bytes())?;
        if let Some((name, dlopen)) = dlopen {
            // RTLD_NOW, and for glibc's internal __libc_dlopen_mode the __RTLD_DLOPEN flag.
            let internal = if name == "__libc_dlopen_mode" {
                0x8000_0000
            } else {
                0
            };
            let handle = stopped.call(dlopen, &[lib_at, libc::RTLD_NOW as u64 | internal])?;
            if handle == 0 {
                let why = match dlerror {
                    Some((_, f)) => {
                        let msg = stopped.call(f, &[])?;
                        if msg == 0 {
                            String::new()
                        } else {
                            stopped.string_at(msg, 512)
                        }
                    }
                    None => String::new(),
                };
                return Err(Failure::failed(format!(
                    "dlopen in pid {pid} failed: {why}"
                )));
            }
        }
        let mapped = library_in(&target)?
            .map(|(m, _)| m)
            .ok_or_else(|| Failure::failed("libfdguard.so is not mapped after dlopen"))?;
        let entry = mapped
            .symbol("fdguard_attach")
            .ok_or_else(|| Failure::failed("libfdguard.so has no fdguard_attach: an old build?"))?;
        let code = stopped.call(entry, &[opts_at])?;
        Ok((mapped, code))
    })();
    if let Some(soft) = restore_soft {
        let _ = crate::os::set_soft_nofile(pid, Some(soft));
    }
    release(others);
    let (mapped, code) = match result {
        Ok(r) => r,
        Err(e) => {
            stopped.end()?;
            return Err(e);
        }
    };
    let shown = show_message(&mapped, pid, code, &stopped);
    stopped.end()?;
    shown
}

pub fn detach(args: DetachArgs) -> Outcome {
    let pid = args.pid;
    let until = deadline(args.timeout)?;
    let target = Target::open(pid)?;
    check_access(pid)?;
    let (mapped, state) = library_in(&target)?.ok_or_else(|| {
        Failure::bad_input(format!(
            "fdguard is not loaded in pid {pid}: nothing to detach"
        ))
    })?;
    match state {
        Some(LibState::Attached) => {}
        Some(LibState::Preloaded) => {
            return Err(Failure::bad_input(format!(
                "pid {pid} was started under fdguard (preloaded): it cannot be detached"
            )));
        }
        _ => {
            return Err(Failure::bad_input(format!(
                "fdguard is not attached to pid {pid} (loaded, inert)"
            )));
        }
    }
    if jvm::is_hotspot(&target) {
        return jvm::detach(&target, &mapped.path, until);
    }
    let entry = mapped
        .symbol("fdguard_detach")
        .ok_or_else(|| Failure::failed("libfdguard.so has no fdguard_detach"))?;
    let mut stopped = Stopped::begin(pid, until)?;
    let code = match stopped.call(entry, &[]) {
        Ok(c) => c,
        Err(e) => {
            stopped.end()?;
            return Err(e);
        }
    };
    let shown = show_message(&mapped, pid, code, &stopped);
    stopped.end()?;
    shown
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
