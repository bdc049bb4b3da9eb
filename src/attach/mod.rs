//! fdguard loaded into a process that is already running (`fdguard attach PID`), and taken out
//! again (`fdguard detach PID`).
//!
//! The command stops one thread of the process with ptrace, makes it `dlopen` this library,
//! and calls `fdguard_attach` with the options (see `entry`); in a HotSpot JVM, the JVM's
//! attach listener loads it as an agent instead (`jvm`). Loaded that way, the library's
//! constructor does nothing (it was not loaded with the program: see `got::loaded_at_startup`);
//! attaching then does what loading as a preload does, and more:
//! - every fd already open is recorded as `before attach` (the report describes it from the
//!   kernel; it has no stack), found by probing numbers, so that no fd is needed: the process
//!   may be at its limit, which is often why one attaches;
//! - listening sockets are guarded, and their epoll registrations, which the command read from
//!   `/proc/PID/fdinfo` (the same reason), are recorded as if the program had just made them,
//!   so that a loop spinning on EMFILE is un-spun by its next failing `accept`;
//! - the loaded objects' GOT entries for the hooked functions are pointed at the hooks (`got`),
//!   and those for `dlopen` and `dlmopen` at hooks that patch the objects the program loads
//!   later before the call returns to it (`dlopen`, which makes each call as the program's).
//!
//! Detaching puts the GOT entries back (those for `dlopen` and `dlmopen` too: objects loaded
//! after it stay as the loader bound them), ends the accept guard's pauses, gives the report
//! signal back to what it did before, and leaves the library loaded and inert. Where the
//! library stands (preloaded, attached, ...) is kept in `state`, which the command reads too.

#[cfg(target_arch = "x86_64")]
mod dlopen;
mod entry;
mod got;
mod jvm;
mod objects;
mod state;

use std::sync::OnceLock;

use crate::emfile;
use crate::guard::{self, Mode};
use crate::inspect;
use crate::os;
use crate::own::OWN;
use crate::tracker::{self, Birth, Origin};
use fdguard_core::call::Call;
use fdguard_core::config::Config;

use state::State;

/// One epoll registration found by the command: `epoll EPFD FD EVENTS DATA`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpollReg {
    pub epfd: i32,
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

/// What the command passes to `fdguard_attach`: `FDGUARD_NAME=value` lines (the variables of
/// the README), `epoll EPFD FD EVENTS DATA` lines (decimal, events and data in hex), and
/// `fds-below N`, a bound on the open fd numbers (some may be above the soft limit, which
/// probing stops at otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub vars: Vec<(String, Vec<u8>)>,
    pub epoll: Vec<EpollReg>,
    pub fds_below: i32,
}

/// Parses the options text; a line it does not understand is an error naming that line.
pub fn parse_options(text: &str) -> Result<Options, String> {
    let mut o = Options::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(n) = line.strip_prefix("fds-below ") {
            o.fds_below = n.trim().parse().map_err(|_| format!("bad line {line:?}"))?;
        } else if let Some(rest) = line.strip_prefix("epoll ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            let reg = match w.as_slice() {
                [epfd, fd, events, data] => (|| {
                    Some(EpollReg {
                        epfd: epfd.parse().ok()?,
                        fd: fd.parse().ok()?,
                        events: u32::from_str_radix(events, 16).ok()?,
                        data: u64::from_str_radix(data, 16).ok()?,
                    })
                })(),
                _ => None,
            };
            o.epoll
                .push(reg.ok_or_else(|| format!("bad epoll line {line:?}"))?);
        } else if let Some((name, value)) = line.split_once('=') {
            if !name.starts_with("FDGUARD_") {
                return Err(format!("not an fdguard variable: {line:?}"));
            }
            o.vars.push((name.to_string(), value.as_bytes().to_vec()));
        } else {
            return Err(format!("bad option line {line:?}"));
        }
    }
    Ok(o)
}

/// The hooks the GOT entries are pointed at, found once.
static HOOKS: OnceLock<Vec<got::Hook>> = OnceLock::new();

/// The hooks of the interposed functions and of `dlopen`, `dlmopen`.
fn all_hooks() -> Vec<got::Hook> {
    let hooks = got::hooks();
    #[cfg(target_arch = "x86_64")]
    let hooks = [hooks, dlopen::hooks()].concat();
    hooks
}

/// Attaches: see the module's documentation. Returns the lines to show the user.
pub fn attach(text: &str) -> Result<Vec<String>, String> {
    match state::state() {
        State::Preloaded => return Err("fdguard is already preloaded in this process".into()),
        State::Attached => return Err("fdguard is already attached to this process".into()),
        State::Dormant | State::Detached => {}
    }
    let first = state::state() == State::Dormant;
    let options = parse_options(text)?;
    let lookup = |name: &str| {
        let v = options.vars.iter().find(|(n, _)| n == name);
        v.map(|(_, v)| v.clone())
    };
    let (config, mut lines) = Config::from_lookup(lookup);
    let hooks = HOOKS.get_or_init(all_hooks);
    if first {
        crate::setup::prepare(&config);
    } else {
        // Detaching turned the accept guard off.
        emfile::configure(config.emfile, config.backoff_max_ms);
    }
    let (before, listeners) = record_open_fds(options.fds_below);
    for r in &options.epoll {
        emfile::registered(r.epfd, r.fd, r.events, r.data);
    }
    let signal_line = if first {
        crate::dumper::start(config)
    } else {
        crate::dumper::restart()
    };
    lines.extend(signal_line);
    guard::activate();
    let (slots, objects) = got::patch_all(hooks, got::own_address());
    state::set_state(State::Attached);
    lines.push(format!(
        "fdguard: attached to pid {}: {before} fds open before attach, {listeners} listening \
         ({} epoll registrations), {slots} call sites in {objects} objects now reach fdguard",
        os::process::getpid(),
        options.epoll.len()
    ));
    Ok(lines)
}

/// Records every open fd as `before attach`; returns (fds, listeners among them).
fn record_open_fds(fds_below: i32) -> (usize, usize) {
    let (upto, batch) = tracker::probe_bounds();
    let upto = upto.max(fds_below.min(1 << 24));
    let (mut fds, mut listeners) = (0, 0);
    for fd in inspect::probe_fds(upto, batch) {
        if OWN.contains(fd) {
            continue;
        }
        tracker::record(
            fd,
            Origin::new(Call::BeforeAttach),
            None,
            Birth::found_open(),
        );
        fds += 1;
        if os::fd::is_listening(fd) {
            emfile::listening(Mode::Track, fd);
            listeners += 1;
        }
    }
    (fds, listeners)
}

/// Detaches: see the module's documentation.
pub fn detach() -> Result<Vec<String>, String> {
    if state::state() != State::Attached {
        return Err("fdguard is not attached to this process".into());
    }
    state::set_state(State::Detached);
    let restored = got::restore_all();
    guard::deactivate();
    emfile::stop();
    crate::dumper::remove_handler();
    Ok(vec![format!(
        "fdguard: detached from pid {}: {restored} call sites restored, the accept guard \
         stopped; the library stays loaded, inert",
        os::process::getpid()
    )])
}

/// For the library's constructor: true if it was loaded with the program (preloaded), false if
/// `dlopen`ed later (by `fdguard attach`), when it must wait for `fdguard_attach`.
pub fn loaded_at_startup() -> bool {
    let libc_close = crate::real::close.get().map_or(0, |f| f as usize);
    got::loaded_at_startup(got::own_address(), libc_close)
}

/// The constructor's part: which state the library starts in.
pub fn started(preloaded: bool) {
    if preloaded {
        state::set_state(State::Preloaded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_variables_and_epoll_registrations() {
        let o = parse_options(
            "FDGUARD_DEPTH=8\n FDGUARD_REPORT=/tmp/r.%p \nepoll 5 3 80000001 7f00\nfds-below 300\n",
        )
        .unwrap();
        assert_eq!(
            o.vars,
            vec![
                ("FDGUARD_DEPTH".to_string(), b"8".to_vec()),
                ("FDGUARD_REPORT".to_string(), b"/tmp/r.%p".to_vec()),
            ]
        );
        assert_eq!(
            o.epoll,
            vec![EpollReg {
                epfd: 5,
                fd: 3,
                events: 0x8000_0001,
                data: 0x7f00
            }]
        );
        assert_eq!(o.fds_below, 300);
        assert!(
            parse_options("epoll 5 3 zz 1")
                .unwrap_err()
                .contains("bad epoll line")
        );
        assert!(
            parse_options("PATH=/bin")
                .unwrap_err()
                .contains("not an fdguard variable")
        );
        assert!(
            parse_options("hello")
                .unwrap_err()
                .contains("bad option line")
        );
    }
}
