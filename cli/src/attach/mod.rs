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
mod stack;
mod thread;

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;

use crate::ebpf;
use crate::fail::{Failure, Outcome};
use crate::fds::read_fds;
use crate::os::FdDir;
use crate::run::{GuardOptions, library};
use crate::target::{LibState, Mapped, Target};
use fdguard_core::escape::escaped;
use room::Room;
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
    Ok(())
}

/// What a program that makes its system calls without libc is (fdguard's hooks would never
/// be called in it: the kernel records it, `crate::ebpf`), or `None` for others.
fn without_libc(target: &Target) -> Option<&'static str> {
    let p = target.program().filter(|p| p.is_static || p.is_go())?;
    Some(if p.is_go() {
        "a Go program"
    } else {
        "statically linked"
    })
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
    if let Some(what) = without_libc(&target) {
        return ebpf::attach(&target, &args.options, what);
    }
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
    if let Some((uid, part)) = unreadable_by_its_user(&target, &lib) {
        return Err(Failure::bad_input(format!(
            "pid {pid} runs as uid {uid}, which cannot read {} ({} is not open to it): put \
             libfdguard.so where uid {uid} can read it and set FDGUARD_LIB to that path",
            lib.display(),
            part.display()
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

    let open: Vec<i32> = fds.iter().map(|e| e.fd).collect();
    let plenty = room::plenty(&target, &open)?;

    let mut stopped = Stopped::begin(pid, until)?;
    let mut others = Vec::new();
    let room = if plenty {
        Ok(Room::Free)
    } else {
        stop_others(pid, stopped.tracee.tid, until).and_then(|held| {
            others = held;
            room::find(&target)
        })
    };
    let loaded = room.and_then(|room| {
        let calls = match room {
            Room::Borrowed { .. } | Room::Reopened { .. } => Some(room_calls(&target)?),
            Room::Free | Room::Raised { .. } => None,
        };
        if let Some(calls) = &calls {
            room.take(&mut stopped, calls)?;
        }
        let loaded = match dlopen {
            Some(dlopen) => load(&mut stopped, pid, &lib, dlopen, dlerror),
            None => Ok(()),
        };
        let back = room.give_back(&target, &mut stopped, calls.as_ref());
        match (loaded, back) {
            (Ok(()), Ok(())) => Ok(room),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(load), Err(back)) => Err(Failure::failed(format!(
                "{}; {}",
                back.message, load.message
            ))),
        }
    });
    // The fd table is as it was: the other threads may go on.
    release(others);
    let result = loaded.and_then(|room| {
        if room != Room::Free {
            println!("fdguard: {room}");
        }
        let opts_at = stopped.put(options.as_bytes())?;
        let mapped = library_in(&target)?
            .map(|(m, _)| m)
            .ok_or_else(|| Failure::failed("libfdguard.so is not mapped after dlopen"))?;
        let entry = mapped
            .symbol("fdguard_attach")
            .ok_or_else(|| Failure::failed("libfdguard.so has no fdguard_attach: an old build?"))?;
        let code = stopped.call("fdguard_attach", entry, &[opts_at])?;
        Ok((mapped, code))
    });
    end_and_show(stopped, pid, result)
}

/// The libc functions `Room` calls in the process.
fn room_calls(target: &Target) -> Result<room::Calls, Failure> {
    let find = |names: &[&'static str]| {
        libc_function(target, names)?
            .map(|(_, at)| at)
            .ok_or_else(|| Failure::failed(format!("no {} in pid {}'s libc", names[0], target.pid)))
    };
    Ok(room::Calls {
        close: find(&["close"])?,
        dup3: find(&["dup3"])?,
        open: find(&["open64", "open"])?,
    })
}

/// Loads the library with `dlopen` (`name`, at its address) in the stopped thread.
fn load(
    stopped: &mut Stopped,
    pid: i32,
    lib: &Path,
    (name, dlopen): (&str, u64),
    dlerror: Option<(&str, u64)>,
) -> Result<(), Failure> {
    let lib_at = stopped.put(lib.as_os_str().as_encoded_bytes())?;
    // RTLD_NOW, and for glibc's internal __libc_dlopen_mode the __RTLD_DLOPEN flag.
    let internal = if name == "__libc_dlopen_mode" {
        0x8000_0000
    } else {
        0
    };
    let handle = stopped.call(name, dlopen, &[lib_at, libc::RTLD_NOW as u64 | internal])?;
    if handle != 0 {
        return Ok(());
    }
    let why = match dlerror {
        Some((_, f)) => match stopped.call("dlerror", f, &[])? {
            0 => String::new(),
            msg => stopped.string_at(msg, 512),
        },
        None => String::new(),
    };
    Err(Failure::failed(format!(
        "dlopen in pid {pid} failed: {why}"
    )))
}

pub fn detach(args: DetachArgs) -> Outcome {
    let pid = args.pid;
    let until = deadline(args.timeout)?;
    let target = Target::open(pid)?;
    check_access(pid)?;
    if let Some(server) = ebpf::server_of(pid) {
        return ebpf::detach(pid, server, until);
    }
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
    let called = stopped.call("fdguard_detach", entry, &[]);
    end_and_show(stopped, pid, called.map(|code| (mapped, code)))
}

/// Puts the thread back and lets it go, then shows what the library's entry point in
/// `mapped` said and returned (`called`), or why it was not called.
fn end_and_show(stopped: Stopped, pid: i32, called: Result<(Mapped, u64), Failure>) -> Outcome {
    let shown = called.and_then(|(mapped, code)| show_message(&mapped, pid, code, &stopped));
    stopped.end()?;
    shown
}

/// The process loads the library with its own credentials: its effective uid, and the part
/// of `lib`'s path (as it sees it) that the uid cannot search or read, if one cannot.
fn unreadable_by_its_user(target: &Target, lib: &Path) -> Option<(u32, std::path::PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let status = target.process.status().ok()?;
    let (uid, gid) = (status.euid, status.egid);
    if uid == 0 {
        return None;
    }
    let open_to = |m: &std::fs::Metadata, bits: u32| {
        let shift = if m.uid() == uid {
            6
        } else if m.gid() == gid || status.groups.contains(&m.gid()) {
            3
        } else {
            0
        };
        (m.mode() >> shift) & bits == bits
    };
    let root = target.root();
    let mut seen = std::path::PathBuf::from("/");
    for part in lib.components().skip(1) {
        let m = std::fs::metadata(root.join(seen.strip_prefix("/").ok()?)).ok()?;
        if !open_to(&m, 0o1) {
            return Some((uid, seen));
        }
        seen.push(part);
    }
    let m = std::fs::metadata(root.join(seen.strip_prefix("/").ok()?)).ok()?;
    (!open_to(&m, 0o4)).then_some((uid, seen))
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
