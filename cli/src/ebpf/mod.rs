//! `fdguard attach PID` on a Go or statically linked program, which makes its system calls
//! without libc (no hook of the library's would be called): the kernel records its fds
//! instead, through an eBPF program on the system call exit tracepoint (`load`, the program
//! in `cli/bpf/fdtrack.bpf.c`), with no stop of the program at all.
//!
//! The attach starts a process of this command's, `fdguard ebpf-serve PID` (`serve`), that
//! owns the programs and their maps for as long as it runs, answers report requests and runs
//! the triggers; `fdguard detach PID` ends it, and the kernel unloads them. Nothing is pinned:
//! whatever ends that process, no program is left loaded without an owner. `fdguard report`
//! finds it through the file `serve` writes in `RUN_DIR` (`server_of`).
//!
//! Only the process's own threads are recorded: processes it forks after the attach are not
//! followed. `fdguard run --ebpf -- CMD` does the same from the program's start, for any
//! program (`run`).

mod load;
mod serve;

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fail::{Failure, Outcome};
use crate::os;
use crate::run::GuardOptions;
use crate::target::Target;
use crate::trace::End;

pub use serve::serve;

/// Where the servers say which process they serve (root's: loading eBPF needs root's
/// capabilities, so only root can have written there).
const RUN_DIR: &str = "/run/fdguard";

/// The options of `attach` that an eBPF attach does not honour: there is no exit report (the
/// kernel has closed the fds when the exit is seen), no accept guard (nothing can hold a call),
/// requests come on the server's own signal, and close stacks, the limit and Go's ancestors
/// are not the recorder's to take or change.
fn not_applied(o: &GuardOptions) -> Vec<&'static str> {
    crate::trace::given(&[
        (o.at_exit, "--at-exit"),
        (o.leak_exitcode.is_some(), "--leak-exitcode"),
        (o.signal.is_some(), "--signal"),
        (o.close_stacks, "--close-stacks"),
        (o.raise_nofile, "--raise-nofile"),
        (o.emfile.is_some(), "--emfile"),
        (o.backoff_max_ms.is_some(), "--backoff-max-ms"),
        (o.go_ancestors.is_some(), "--go-ancestors"),
        (o.ignore.is_some(), "--ignore"),
    ])
}

/// The process serving an eBPF attach to `pid`, if there is one.
pub fn server_of(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(serve::run_file(pid)).ok()?;
    let server = serving(pid, &text);
    if server.is_none() {
        // Left by a server that was killed (it removes its file when it ends otherwise).
        let _ = std::fs::remove_file(serve::run_file(pid));
    }
    server
}

/// The server a run file's `text` names, if it runs and serves `pid`.
fn serving(pid: i32, text: &str) -> Option<i32> {
    let server: i32 = text.trim().parse().ok()?;
    let target = Target::open(server).ok()?;
    let exe = std::fs::read_link(format!("/proc/{server}/exe")).ok()?;
    let is_fdguard = exe
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("fdguard"));
    let cmd = target.cmdline();
    let serves = cmd.get(1).map(String::as_str) == Some("ebpf-serve")
        && cmd.get(2) == Some(&pid.to_string());
    (is_fdguard && serves && !target.is_zombie()).then_some(server)
}

/// Attaches to `target` (a Go or static program, `what`) with eBPF: starts its server and
/// says what it found.
pub fn attach(target: &Target, options: &GuardOptions, what: &str) -> Outcome {
    let pid = target.pid;
    if let Some(server) = server_of(pid) {
        return Err(Failure::bad_input(format!(
            "fdguard is already attached to pid {pid} (eBPF, served by fdguard pid {server}): \
             `fdguard report {pid}`, or `fdguard detach {pid}` first"
        )));
    }
    if let Some(tracer) = target.fdguard_tracer() {
        return Err(Failure::bad_input(format!(
            "pid {pid} already runs under fdguard's tracer (fdguard pid {tracer}): `fdguard \
             report {pid}`"
        )));
    }
    say_not_applied(options);
    let (server, before) = start_server(pid, options, false)?;
    println!(
        "fdguard: attached to pid {pid} ({what}) with eBPF, served by fdguard pid {server}: \
         {before} fds open before attach; processes it forks from now on are not followed; \
         `fdguard report {pid}`, `fdguard detach {pid}`"
    );
    Ok(())
}

/// The options' warnings, and those an eBPF recorder does not honour, on stderr.
fn say_not_applied(options: &GuardOptions) {
    crate::trace::say_options(options, &not_applied(options), "an eBPF recorder");
}

/// Starts `fdguard ebpf-serve PID` with `options` and waits until it recorded the fds open
/// now (`from_start`: the program's inherited ones, `run --ebpf`): its pid, and how many
/// there were.
fn start_server(
    pid: i32,
    options: &GuardOptions,
    from_start: bool,
) -> Result<(u32, String), Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot find this command's file: {e}")))?;
    // The server's own lines (a report it could not write, a report sent to stderr) go where
    // the library's would: to the program's stderr, when it can be opened.
    let stderr = std::fs::OpenOptions::new()
        .append(true)
        .open(format!("/proc/{pid}/fd/2"))
        .map_or_else(|_| Stdio::null(), Stdio::from);
    let mut server = Command::new(exe);
    // In the program's working directory: a relative report path means there what it means
    // for the library (and `fdguard report` looks for it there).
    let cwd = Path::new("/proc").join(pid.to_string()).join("cwd");
    if cwd.is_dir() {
        server.current_dir(cwd);
    }
    let mut server = server
        .arg("ebpf-serve")
        .arg(pid.to_string())
        .args(from_start.then_some("--from-start"))
        .envs(options.variables())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        // Its own group: a Ctrl-C meant for the shell's next command does not end it.
        .process_group(0)
        .spawn()
        .map_err(|e| Failure::failed(format!("cannot start fdguard's eBPF server: {e}")))?;
    let mut line = String::new();
    if let Some(out) = server.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    match line.trim_end().split_once(' ') {
        Some(("ready", before)) => Ok((server.id(), before.to_string())),
        answer => {
            let _ = server.wait();
            Err(match answer {
                Some(("error", said)) => {
                    let (code, message) = said.split_once(' ').unwrap_or(("1", said));
                    Failure {
                        message: message.to_string(),
                        code: code.parse().unwrap_or(crate::fail::FAILED),
                    }
                }
                _ => Failure::failed(format!(
                    "fdguard's eBPF server for pid {pid} ended without a word"
                )),
            })
        }
    }
}

/// `fdguard run --ebpf -- CMD`: runs `path` (`command` is its argv) recorded through eBPF
/// from its first instruction: a child of this command's stops itself, the server is started
/// for its pid, and it then executes the program (the same pid). Ends as the program ends.
pub fn run(path: &Path, command: &[OsString], options: &GuardOptions) -> Result<End, Failure> {
    say_not_applied(options);
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot find this command's file: {e}")))?;
    let mut child = Command::new(exe)
        .args(["ebpf-exec", "--"])
        .arg(path)
        .args(command)
        // As under the library: the program's environment names the options.
        .envs(options.variables())
        .spawn()
        .map_err(|e| Failure::failed(format!("cannot start {}: {e}", path.display())))?;
    let pid = child.id() as i32;
    let stopped = wait_stopped(pid);
    let started = stopped.and_then(|()| start_server(pid, options, true));
    if let Err(f) = started {
        let _ = child.kill();
        let _ = child.wait();
        return Err(f);
    }
    crate::trace::sys::forward(crate::trace::FORWARDED, pid);
    os::send_signal(pid, libc::SIGCONT)
        .map_err(|e| Failure::failed(format!("cannot continue pid {pid}: {e}")))?;
    let status = child
        .wait()
        .map_err(|e| Failure::failed(format!("cannot wait for pid {pid}: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => End::Exited(code),
        (None, Some(sig)) => End::Killed(sig),
        (None, None) => End::Exited(1),
    })
}

/// Waits until the child `pid` has stopped itself (`ebpf_exec`).
fn wait_stopped(pid: i32) -> Result<(), Failure> {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let state = Target::open(pid)?.process.stat().map(|s| s.state);
        match state {
            Ok('T') => return Ok(()),
            Ok('Z') | Err(_) => break,
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    Err(Failure::failed(format!(
        "pid {pid} did not stop before its exec"
    )))
}

/// `fdguard ebpf-exec -- PATH ARGV...`, the child of `run --ebpf`: stops itself until the
/// recorder is attached to its pid, then becomes the program.
pub fn exec(path: &Path, argv: &[OsString]) -> Outcome {
    os::send_signal(std::process::id() as i32, libc::SIGSTOP)
        .map_err(|e| Failure::failed(format!("cannot stop before the exec: {e}")))?;
    let mut cmd = Command::new(path);
    if let Some((first, rest)) = argv.split_first() {
        cmd.arg0(first).args(rest);
    }
    let e = cmd.exec();
    Err(Failure {
        message: format!("cannot run {}: {e}", path.display()),
        code: 126,
    })
}

/// Ends the server of the eBPF attach to `pid` (`server`): the kernel unloads its programs;
/// the program runs on as it was.
pub fn detach(pid: i32, server: i32, until: Instant) -> Outcome {
    os::send_signal(server, libc::SIGTERM)
        .map_err(|e| Failure::failed(format!("cannot signal fdguard pid {server}: {e}")))?;
    // Its file goes once the programs are unloaded; then the process ends.
    let running = || Target::open(server).is_ok_and(|t| !t.is_zombie());
    while server_of(pid) == Some(server) || running() {
        if Instant::now() >= until {
            return Err(Failure::failed(format!(
                "fdguard pid {server}, which holds the eBPF attach to pid {pid}, did not end"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("fdguard: detached from pid {pid}: its eBPF programs are unloaded");
    Ok(())
}
