//! fdguard: an `LD_PRELOAD` shim that finds and survives file-descriptor exhaustion.
//!
//! Layers, from the entry points down; each uses only its own line and the lines below it, and
//! no module uses one that uses it back:
//! - this file (the constructor, the exit check), `attach` (`fdguard attach`/`detach`: entry
//!   points, state, GOT patching, and the `dlopen` and `dlmopen` hooks that patch what the
//!   program loads while attached), `setup` (what starting needs, preloaded or attached);
//! - `hooks`: the exported libc entry points (thin), calling libc's own through `real`;
//! - `fork` (what a fork child resets); `dumper`: the report pipeline (`signal`, `serve`,
//!   `gather`, `frames`, `deliver`, `exit`); `upkeep`: the accept guard's thread;
//! - `tracker`: what a hook means for the fd table; `emfile`: what it means for the accept
//!   guard (`policy`, the `listeners` table, shed mode's `reserve`, and `effects`, which act
//!   through `kernel`; the operator's `lines`);
//! - `stack` (capture, with the `unwind`er and the `runtime`'s own frames), `symbolize` (with
//!   `perfmap`: JIT code named from the runtime's perf map; `symtab`: functions of libraries
//!   loaded after fdguard started),
//!   `symcache`, `child` (report processes), `alloc`, `published` (the block the command
//!   reads);
//! - core, unit-tested without preloading: `table`, `intern`, `limits`, `trigger`,
//!   `own` (fdguard's own fds), `badclose`, `guard` (per-thread mode and errno);
//! - `os`, one file per concern (`errno`, `thread`, `process`, `clock`, `env`, `futex`, `mem`,
//!   `loader`, `fd`, `sys`, `signal`), `real` (libc's own functions, which `os::signal` also
//!   uses, past fdguard's `sigaction` hook), `inspect` (fds as the kernel describes them), and
//!   the pure `origin` (what the table keeps of a path and a call's details).
//!
//! What the command means the same way (the `FDGUARD_*` variables, fd kinds and calls, socket
//! descriptions, program detection, the report model and its JSON and text) is the
//! `fdguard_core` crate (`crates/fdguard-core`), which this library links.
//!
//! `unsafe` only where fdguard meets libc, the kernel or raw memory (`hooks`, `real`, `attach`,
//! `os`, `intern`, `unwind`, `runtime`, `inspect`, `symbolize`, `symcache`, `alloc`, `child`, `dumper`,
//! `published`), each block with a `// SAFETY:` line.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod alloc;
#[allow(unsafe_code)]
mod attach;
mod badclose;
mod child;
mod dumper;
mod emfile;
mod fork;
mod guard;
// Compiled into unit tests too, where fdguard is never activated: the hooks pass through.
mod hooks;
mod inspect;
mod intern;
mod limits;
mod origin;
mod os;
mod own;
mod perfmap;
mod published;
mod real;
mod runtime;
mod setup;
mod stack;
mod symbolize;
mod symcache;
mod symtab;
mod table;
mod tracker;
mod trigger;
#[allow(unsafe_code)]
mod unwind;
mod upkeep;

use std::ffi::CString;

/// The system allocator, except in a report child (see `alloc`).
#[global_allocator]
static ALLOCATOR: alloc::FdguardAlloc = alloc::FdguardAlloc;

use fdguard_core::call::Call;
use fdguard_core::config::Config;
use tracker::{Birth, Origin};

/// Runs before `main` (from `.init_array`). Hooks that run earlier, from other libraries'
/// constructors, pass calls through; the fds they created are recorded as inherited here.
#[cfg(not(test))]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;

/// Runs at normal exit, after the program's own `atexit` handlers: the exit leak check.
#[cfg(not(test))]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".fini_array")]
static FINI: extern "C" fn() = fini;

#[cfg_attr(test, allow(dead_code))]
extern "C" fn fini() {
    if guard::is_active() {
        guard::contained(dumper::at_exit);
    }
}

#[cfg_attr(test, allow(dead_code))]
extern "C" fn init() {
    real::resolve_all();
    os::thread::locate_descriptor_tid();
    os::clock::locate_vdso_clock();
    // `dlopen`ed by `fdguard attach`: nothing happens until it calls `fdguard_attach`.
    if !attach::loaded_at_startup() {
        return;
    }
    if guard::contained(start).is_none() {
        guard::internal_failure("initialization failed");
    }
}

fn start() {
    let lookup = |name: &str| {
        let c = CString::new(name).ok()?;
        os::env::getenv(&c).map(<[u8]>::to_vec)
    };
    let (config, warnings) = Config::from_lookup(lookup);
    let names = os::env::env_names_with_prefix(b"FDGUARD_");
    let names: Vec<String> = names
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    for line in warnings
        .iter()
        .chain(&Config::unknown_names(names.iter().map(String::as_str)))
    {
        setup::print_line(line);
    }
    if config.disabled || os::env::secure_execution() {
        return;
    }
    warn_if_go_program();
    setup::prepare(&config);
    record_inherited();
    if let Some(line) = dumper::start(config) {
        setup::print_line(&line);
    }
    guard::activate();
    attach::started(true);
}

/// Go programs make their system calls without libc: say so once, rather than let reports that
/// list every fd as `untracked` look like fdguard's failure.
fn warn_if_go_program() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    if fdguard_core::program::is_go_program(&exe) {
        let exe = exe.to_string_lossy();
        setup::print_line(&format!(
            "fdguard: {exe} is a Go program: the Go runtime opens and closes fds with system \
             calls of its own, not through libc, so fdguard cannot tell who created them \
             (reports list them as untracked); use the runtime's own tools (pprof, \
             GODEBUG) for Go code"
        ));
    }
}

/// fds open before fdguard started: inherited from the parent, or opened by constructors.
/// Listening sockets among them (socket activation, a re-executed server) are guarded too.
fn record_inherited() {
    if let Some(fds) = inspect::list_fds() {
        for fd in fds {
            // The listing's own directory fd is closed by now; the accept guard's reserve
            // (placed just before) is fdguard's.
            if os::fd::fd_is_open(fd) && !own::OWN.contains(fd) {
                tracker::record(fd, Origin::new(Call::Inherited), None, Birth::found_open());
                if os::fd::is_listening(fd) {
                    emfile::listening(guard::Mode::Track, fd);
                }
            }
        }
    }
}
