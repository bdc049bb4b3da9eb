//! `fdguard attach` and `detach` for a HotSpot JVM, through the JVM's own door: its attach
//! listener, the mechanism `jcmd` and profilers use. No ptrace, no thread stopped: a JVM whose
//! threads are all parked attaches as well as a busy one.
//!
//! The listener is a thread of the JVM serving a Unix socket, `.java_pid<PID>` in the JVM's
//! `/tmp` (PID as the JVM sees it, in its own pid namespace), that answers only the JVM's own
//! user and root. A JVM starts it on demand: on `SIGQUIT`, when a file `.attach_pid<PID>`
//! exists in its working directory or its `/tmp` (without that file, `SIGQUIT` prints a thread
//! dump); with `-Xrs` it leaves `SIGQUIT` alone and starts the listener at startup instead.
//! Its `load` command (protocol 1: NUL-terminated strings, arguments of at most 1024 bytes)
//! `dlopen`s a library and calls its `Agent_OnAttach` in the listener's thread, at every
//! `load`, the library already loaded or not (seen on HotSpot 17 and 25;
//! `tests/suite/jvm_attach.rs` detaches and attaches again on every JDK installed): the
//! library's `src/attach/jvm.rs` attaches, or detaches when told `detach`. The reply is a result code on a line, then what the JVM said: `return code:
//! N` with the agent's return code, or why it did not call it.
//!
//! Out of fds, the listener's `accept` fails and the listener thread ends, leaving its socket
//! with nobody to answer (`jcmd` hangs on it too): a JVM with too few fds free is refused
//! before anything is sent, and a socket without the listener's thread is treated as no
//! listener (the trigger and `SIGQUIT` start a new one, which replaces the socket).
//!
//! Files are reached through `/proc/PID/root` and `/proc/PID/cwd`, so a JVM in a container is
//! reached in its own file system; as root, the command connects with the JVM's effective user
//! and group, which the listener accepts wherever it runs (root on the host is nobody in a
//! user namespace).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fail::{Failure, Outcome};
use crate::os::{self, FdDir};
use crate::target::Target;

use super::{library_in, said};

/// How long the answer to a `load` is waited for, once the listener took it.
const ANSWER: Duration = Duration::from_secs(30);

/// The longest argument the attach listener takes (HotSpot's `arg_length_max`).
const ARG_MAX: usize = 1024;

/// True if `target` runs a HotSpot JVM: it maps a `libjvm.so` that exports HotSpot's
/// `gHotSpotVMStructs` (the `java` launcher, or a program that embeds the JVM through JNI). An
/// OpenJ9 JVM, which has another attach mechanism, is not one.
pub fn is_hotspot(target: &Target) -> bool {
    target
        .mapped(|name| name == "libjvm.so")
        .ok()
        .flatten()
        .is_some_and(|jvm| jvm.symbol("gHotSpotVMStructs").is_some())
}

/// Attaches the library at `library` (the same file in the JVM's file system) with `options`.
pub fn attach(target: &Target, library: &Path, options: &str, until: Instant) -> Outcome {
    let jvm = Jvm::of(target)?;
    // Connected first: a JVM refused leaves no file behind.
    let socket = jvm.connect(target, until)?;
    let file = OptionsFile::write(&jvm, options)?;
    let reply = jvm.load(socket, library, &file.argument, until);
    // The agent has read it, or never will: the JVM answers once `Agent_OnAttach` returned.
    drop(file);
    outcome(target, &reply?)
}

/// Detaches the library mapped from `library` (its path as the JVM sees it).
pub fn detach(target: &Target, library: &Path, until: Instant) -> Outcome {
    let jvm = Jvm::of(target)?;
    let socket = jvm.connect(target, until)?;
    let reply = jvm.load(socket, library, "detach", until)?;
    outcome(target, &reply)
}

/// A JVM, as its attach listener knows it.
struct Jvm {
    pid: i32,
    /// Its pid in its own pid namespace: the one in the listener's file names.
    nspid: i32,
    /// Its effective user and group: whom the listener answers, who owns the files it reads.
    uid: u32,
    gid: u32,
    /// Whether it handles `SIGQUIT` (with `-Xrs` it does not: the signal would end it).
    handles_quit: bool,
}

impl Jvm {
    fn of(target: &Target) -> Result<Jvm, Failure> {
        let pid = target.pid;
        let status = target
            .process
            .status()
            .map_err(|e| Failure::failed(format!("cannot read /proc/{pid}/status: {e}")))?;
        let nspid = status.nspid.as_ref().and_then(|n| n.last().copied());
        Ok(Jvm {
            pid,
            nspid: nspid.unwrap_or(pid),
            uid: status.euid,
            gid: status.egid,
            handles_quit: status.sigcgt & (1 << (libc::SIGQUIT - 1)) != 0,
        })
    }

    /// `/tmp/NAME` as the JVM sees it, as this command reaches it.
    fn tmp(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/tmp/{name}", self.pid))
    }

    /// Sends `load LIBRARY true ARGUMENT` (an absolute path) to the attach listener on
    /// `socket`, and returns the reply.
    fn load(
        &self,
        mut socket: UnixStream,
        library: &Path,
        argument: &str,
        until: Instant,
    ) -> Result<String, Failure> {
        let library = library.as_os_str().as_encoded_bytes();
        if library.len() > ARG_MAX {
            return Err(Failure::bad_input(format!(
                "the path of libfdguard.so is longer than the {ARG_MAX} bytes a JVM's attach \
                 listener takes: set FDGUARD_LIB to a shorter one"
            )));
        }
        let mut request = b"1\0load\0".to_vec();
        for arg in [library, b"true", argument.as_bytes()] {
            request.extend_from_slice(arg);
            request.push(0);
        }
        let pid = self.pid;
        let late = || {
            Failure::failed(format!(
                "pid {pid}'s attach listener took the request but did not answer within {} s \
                 (a JVM short of CPU, or busy with another tool's request?); the load may still \
                 complete: `fdguard report {pid}` tells whether fdguard is attached",
                ANSWER.as_secs()
            ))
        };
        // The listener has the request: once sent, it loads the library whatever the command
        // does, so its answer is waited for longer than the --timeout, which bounds the start.
        let left = until.saturating_duration_since(Instant::now()).max(ANSWER);
        let left = Some(left);
        let mut reply = Vec::new();
        socket
            .set_read_timeout(left)
            .and_then(|()| socket.set_write_timeout(left))
            .and_then(|()| socket.write_all(&request))
            .and_then(|()| socket.read_to_end(&mut reply))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => late(),
                _ => Failure::failed(format!("talking to pid {pid}'s attach listener: {e}")),
            })?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// A connection to the attach listener; when none runs, it is started with its trigger
    /// file and `SIGQUIT`, and waited for until `until`.
    fn connect(&self, target: &Target, until: Instant) -> Result<UnixStream, Failure> {
        let socket = self.tmp(&format!(".java_pid{}", self.nspid));
        let found = inode(&socket);
        let running = found.is_some() && self.has_listener_thread();
        // Its socket (to start), a connection, an fd to load the library with.
        self.check_room(target, if running { 2 } else { 3 })?;
        if running && let Some(s) = self.try_connect(&socket)? {
            return Ok(s);
        }
        self.check_startable()?;
        let _trigger = Trigger::create(self)?;
        os::send_signal(self.pid, libc::SIGQUIT).map_err(|e| {
            Failure::failed(format!("cannot send SIGQUIT to pid {}: {e}", self.pid))
        })?;
        loop {
            std::thread::sleep(Duration::from_millis(5));
            // The new listener's socket, not one that nothing answers on any more.
            let new = inode(&socket).is_some_and(|i| Some(i) != found);
            if new && let Some(s) = self.try_connect(&socket)? {
                return Ok(s);
            }
            if !os::exists(self.pid) {
                return Err(Failure::failed(format!(
                    "pid {} exited while its attach listener was starting",
                    self.pid
                )));
            }
            if Instant::now() >= until {
                return Err(Failure::bad_input(format!(
                    "pid {}'s JVM started no attach listener within the --timeout (no new \
                     /tmp/.java_pid{} in its file system): it runs with \
                     -XX:+DisableAttachMechanism, or is too busy to answer SIGQUIT",
                    self.pid, self.nspid
                )));
            }
        }
    }

    /// Whether the JVM has its attach listener's thread (HotSpot names it `Attach Listener`).
    /// A socket without it answers nobody: an earlier process left it, or the listener stopped
    /// when its `accept` failed (out of fds); a trigger and `SIGQUIT` start a new one.
    fn has_listener_thread(&self) -> bool {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid));
        tasks.into_iter().flatten().flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.trim_end() == "Attach Listener")
        })
    }

    /// Refuses a JVM with fewer than `needed` fds free below its soft limit: out of fds, its
    /// listener's `accept` fails and the listener stops, leaving a socket nobody answers on
    /// (`jcmd` then hangs on it too).
    fn check_room(&self, target: &Target, needed: u64) -> Result<(), Failure> {
        let pid = self.pid;
        let limit = target.limit()?;
        let Some(soft) = limit.soft else {
            return Ok(());
        };
        let numbers = FdDir::open(pid)?.numbers()?;
        let open = numbers.iter().filter(|fd| (**fd as u64) < soft).count() as u64;
        let free = soft.saturating_sub(open);
        if free >= needed {
            return Ok(());
        }
        let raise = match limit.hard {
            Some(hard) if hard <= soft => format!(
                "its soft limit is its hard limit, which only root raises (`prlimit --pid \
                 {pid} --nofile=N:N`)"
            ),
            hard => {
                let to = hard.map_or_else(|| "N".to_string(), |h| h.to_string());
                format!("raise its soft limit first (`prlimit --pid {pid} --nofile={to}:{to}`)")
            }
        };
        Err(Failure::bad_input(format!(
            "pid {pid}'s JVM has {open} fds open of its soft limit of {soft}: its attach \
             listener needs {needed} free to load fdguard, and stops answering when it runs \
             out; {raise}, then attach"
        )))
    }

    /// Connects to `socket` as the JVM's user; `None` when nothing listens there.
    fn try_connect(&self, socket: &Path) -> Result<Option<UnixStream>, Failure> {
        let connected =
            os::as_user(self.uid, self.gid, || UnixStream::connect(socket)).map_err(|e| {
                Failure::bad_input(format!(
                    "pid {}'s attach listener answers only its user (uid {}, gid {}) and root, \
                     and this command cannot act as them ({e}): run fdguard as that user, or \
                     as root",
                    self.pid, self.uid, self.gid
                ))
            })?;
        match connected {
            Ok(s) => Ok(Some(s)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {
                Ok(None)
            }
            Err(e) => Err(Failure::failed(format!(
                "cannot connect to {}: {e}",
                socket.display()
            ))),
        }
    }

    /// Refuses, before anything is sent, a JVM that cannot start its attach listener: one
    /// started with `-XX:+DisableAttachMechanism` (as its performance data says), or one that
    /// leaves `SIGQUIT` to its default action (`-Xrs`), which would end it.
    fn check_startable(&self) -> Result<(), Failure> {
        let pid = self.pid;
        if self.attach_supported() == Some(false) {
            return Err(Failure::bad_input(format!(
                "pid {pid} is a JVM started with -XX:+DisableAttachMechanism: it has no attach \
                 listener to load fdguard with; start it without that option, or under \
                 `fdguard run`"
            )));
        }
        if !self.handles_quit {
            return Err(Failure::bad_input(format!(
                "pid {pid} is a JVM that does not handle SIGQUIT (started with -Xrs, or still \
                 starting) and has no attach listener (no /tmp/.java_pid{} in its file \
                 system): the signal that starts one would end it, so fdguard sent none",
                self.nspid
            )));
        }
        Ok(())
    }

    /// What the JVM's performance data (`hsperfdata_USER/PID` in its `/tmp`) says of its
    /// attach mechanism; `None` when it keeps none (`-XX:-UsePerfData`) or it cannot be read.
    fn attach_supported(&self) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        let name = self.nspid.to_string();
        std::fs::read_dir(self.tmp(""))
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().as_encoded_bytes().starts_with(b"hsperfdata_"))
            .map(|e| e.path().join(&name))
            .filter(|p| {
                std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.uid() == self.uid)
            })
            .find_map(|p| attach_capability(&std::fs::read(p).ok()?))
    }
}

/// The inode of the file at `path`, if there is one.
fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// The first character of `sun.rt.jvmCapabilities` in a HotSpot performance data file: `1`
/// when the JVM has an attach mechanism (`jps` and `jcmd` read the same). The layout, of
/// HotSpot's `perfMemory.hpp`: a prologue starting with the magic `ca fe c0 c0` and a byte
/// order (1: little-endian), the offset of the first entry at 24 and the number of entries
/// at 28; each entry starts with its length, the offset of its name (NUL-terminated) from the
/// entry at 4, and the offset of its data at 16.
fn attach_capability(data: &[u8]) -> Option<bool> {
    let word = |at: usize| -> Option<usize> {
        let bytes = data.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
    };
    if data.get(..5)? != [0xca, 0xfe, 0xc0, 0xc0, 1] {
        return None;
    }
    let mut entry = word(24)?;
    for _ in 0..word(28)?.min(100_000) {
        let name = data.get(entry.checked_add(word(entry + 4)?)?..)?;
        let name = &name[..name.iter().position(|b| *b == 0)?];
        if name == b"sun.rt.jvmCapabilities" {
            return match data.get(entry.checked_add(word(entry + 16)?)?)? {
                b'1' => Some(true),
                b'0' => Some(false),
                _ => None,
            };
        }
        entry = entry.checked_add(word(entry).filter(|n| *n > 0)?)?;
    }
    None
}

/// The file that makes a JVM take `SIGQUIT` as a request to start its attach listener,
/// `.attach_pid<PID>`, which HotSpot looks for in its working directory, then in its `/tmp`;
/// owned by the JVM's user (HotSpot accepts only that user's or root's). Removed when dropped.
struct Trigger(PathBuf);

impl Trigger {
    fn create(jvm: &Jvm) -> Result<Trigger, Failure> {
        let name = format!(".attach_pid{}", jvm.nspid);
        let cwd = PathBuf::from(format!("/proc/{}/cwd", jvm.pid)).join(&name);
        let mut refused = Vec::new();
        for path in [cwd, jvm.tmp(&name)] {
            match os::create_owned_file(&path, jvm.uid, jvm.gid) {
                Ok(_) => return Ok(Trigger(path)),
                Err(e) => refused.push(format!("{}: {e}", path.display())),
            }
        }
        Err(Failure::bad_input(format!(
            "cannot create the file that starts pid {}'s attach listener ({})",
            jvm.pid,
            refused.join("; ")
        )))
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The options of an attach, in a file of the JVM's user in the JVM's `/tmp`, which the agent
/// reads (the attach listener takes no argument longer than 1024 bytes). Removed when dropped.
struct OptionsFile {
    path: PathBuf,
    /// The agent's argument: `@` and the file's path as the JVM sees it.
    argument: String,
}

impl OptionsFile {
    fn write(jvm: &Jvm, text: &str) -> Result<OptionsFile, Failure> {
        let name = format!("fdguard-attach.{}.{:016x}", jvm.nspid, os::random_u64());
        let path = jvm.tmp(&name);
        let failed = |e: std::io::Error| {
            Failure::failed(format!(
                "cannot write the options file {}: {e}",
                path.display()
            ))
        };
        let mut f = os::create_owned_file(&path, jvm.uid, jvm.gid).map_err(failed)?;
        f.write_all(text.as_bytes()).map_err(failed)?;
        Ok(OptionsFile {
            path,
            argument: format!("@/tmp/{name}"),
        })
    }
}

impl Drop for OptionsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the JVM answered: the library's own lines when its `Agent_OnAttach` returned 0, its
/// refusal otherwise, or why the JVM did not call it.
fn outcome(target: &Target, reply: &str) -> Outcome {
    let pid = target.pid;
    let code = reply
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("return code: "))
        .and_then(|c| c.trim().parse::<i32>().ok());
    let Some(code) = code else {
        // The JVM did not call the agent: after its result code, it says why.
        let why: Vec<&str> = reply.lines().skip(1).filter(|l| !l.is_empty()).collect();
        let why = if why.is_empty() {
            format!("its attach listener answered {:?}", reply.trim())
        } else {
            why.join("; ")
        };
        return Err(Failure::failed(format!(
            "the JVM in pid {pid} did not run libfdguard.so: {why}"
        )));
    };
    let message = library_in(target)?.and_then(|(lib, _)| lib.text(pid, "fdguard_message", 4096));
    match message.filter(|m| !m.is_empty()) {
        Some(m) => said(&m, pid, code as u32),
        None if code == 0 => {
            println!(
                "fdguard: done in pid {pid}: its JVM ran libfdguard.so (what the library said \
                 cannot be read from its memory)"
            );
            Ok(())
        }
        None => said("", pid, code as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A performance data file with the two entries HotSpot writes first and `caps`.
    fn perf_data(caps: &[u8]) -> Vec<u8> {
        let mut d = vec![0xca, 0xfe, 0xc0, 0xc0, 1, 2, 0, 1];
        d.resize(32, 0);
        let entries: [(&[u8], &[u8]); 2] = [
            (b"sun.rt.createVmBeginTime", &[0; 8]),
            (b"sun.rt.jvmCapabilities", caps),
        ];
        for (name, data) in entries {
            let name_at = 20;
            let data_at = name_at + name.len() + 1;
            let len = data_at + data.len() + 1;
            let mut e = Vec::new();
            for w in [len, name_at, data.len(), 0, data_at] {
                e.extend((w as u32).to_le_bytes());
            }
            e.extend(name);
            e.push(0);
            e.extend(data);
            e.push(0);
            d.extend(e);
        }
        d[24..28].copy_from_slice(&32u32.to_le_bytes());
        d[28..32].copy_from_slice(&2u32.to_le_bytes());
        d
    }

    #[test]
    fn the_attach_capability_of_performance_data() {
        assert_eq!(attach_capability(&perf_data(b"1100")), Some(true));
        assert_eq!(attach_capability(&perf_data(b"0100")), Some(false));
        let mut big_endian = perf_data(b"1100");
        big_endian[4] = 0;
        assert_eq!(attach_capability(&big_endian), None);
        let whole = perf_data(b"0100");
        assert_eq!(attach_capability(&whole[..whole.len() - 8]), None, "cut");
        assert_eq!(attach_capability(b"not a perf data file"), None);
    }
}
