//! The process a command looks at: its command line, its own fd limit, what kind of program it
//! is, and whether fdguard is loaded in it (and configured how).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use procfs::ProcError;
use procfs::process::{LimitValue, Limits, MMapPath, Process};

use fdguard_core::config::{Config, ReportDest};
use fdguard_core::program::{Program, Runtime};
use fdguard_core::published;
use fdguard_core::report::Limit;

use crate::fail::Failure;

/// fdguard as loaded in a process.
pub struct Loaded {
    /// The mapped `libfdguard.so`.
    pub library: PathBuf,
    /// Its configuration, read exactly as the library read it: from the process's initial
    /// environment, or, attached, from the options of the attach.
    pub config: Config,
    /// Read from the library's `fdguard_state`; `None` if it could not be read.
    pub state: Option<LibState>,
    pub mapped: Mapped,
}

/// Where the library stands in a process (the library's `attach::State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibState {
    /// Loaded by an attach that did not finish, or disabled.
    Dormant,
    Preloaded,
    Attached,
    Detached,
}

/// An object mapped in the process.
#[derive(Clone, Debug)]
pub struct Mapped {
    /// Its path, as the process sees it.
    pub path: PathBuf,
    /// The same file, as this command can open it (through `/proc/PID/root`).
    pub file: PathBuf,
    /// Where its first page is mapped.
    pub start: u64,
}

impl Mapped {
    /// The address of its dynamic symbol `name` in the process.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        let (value, first) = fdguard_core::elf::dynamic_symbol(&self.file, name)?;
        Some(self.start - first + value)
    }

    fn read(&self, pid: i32, name: &str, len: usize) -> Option<Vec<u8>> {
        crate::os::read_memory(pid, self.symbol(name)?, len).ok()
    }

    /// The library's `fdguard_state`.
    pub fn state(&self, pid: i32) -> Option<LibState> {
        let b = self.read(pid, "fdguard_state", 4)?;
        Some(match u32::from_ne_bytes(b.try_into().ok()?) {
            1 => LibState::Preloaded,
            2 => LibState::Attached,
            3 => LibState::Detached,
            _ => LibState::Dormant,
        })
    }

    /// A NUL-terminated text buffer of the library's (`fdguard_options`, `fdguard_message`).
    pub fn text(&self, pid: i32, name: &str, len: usize) -> Option<String> {
        let b = self.read(pid, name, len)?;
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        Some(String::from_utf8_lossy(&b[..end]).into_owned())
    }

    fn options(&self, pid: i32) -> Option<String> {
        self.text(pid, "fdguard_options", 8192)
    }

    /// What the library publishes (`fdguard_core::published`), or why it cannot be read.
    pub fn published(&self, pid: i32) -> Result<published::View, String> {
        let Some(at) = self.symbol(published::SYMBOL) else {
            return Err(format!(
                "{} publishes nothing (a library older than this command)",
                self.path.display()
            ));
        };
        for _ in 0..100 {
            let bytes =
                crate::os::read_memory(pid, at, published::Published::SIZE).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        "reading its memory needs its user or root (CAP_SYS_PTRACE)".to_string()
                    } else {
                        format!("cannot read its memory: {e}")
                    }
                })?;
            match published::decode(&bytes) {
                Ok(view) => return Ok(view),
                Err(published::DecodeError::Changing) => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => {
                    return Err(format!(
                        "its library publishes a layout this command does not read ({e:?}): \
                         use the fdguard command that came with it"
                    ));
                }
            }
        }
        Err("its published state kept changing".to_string())
    }
}

/// True for the file name of fdguard's library (`libfdguard.so`, and versioned or renamed
/// copies of it).
pub fn is_fdguard_library(name: &str) -> bool {
    name.starts_with("libfdguard") && name.contains(".so")
}

/// `PF_EXITING` of the flags in `/proc/PID/stat` (`include/linux/sched.h`): the task has begun
/// to exit.
const PF_EXITING: u32 = 0x4;

/// True if `stat`, read after something else of the process, says that what was read may be
/// partial (see `Target::has_exited`).
pub fn exiting(stat: &procfs::process::Stat) -> bool {
    matches!(stat.state, 'Z' | 'X') || stat.flags & PF_EXITING != 0
}

/// Its `RLIMIT_NOFILE` from `/proc/PID/limits` (`None` for unlimited).
pub fn nofile_limit(limits: &Limits) -> Limit {
    let value = |v: LimitValue| match v {
        LimitValue::Value(n) => Some(n),
        LimitValue::Unlimited => None,
    };
    Limit {
        soft: value(limits.max_open_files.soft_limit),
        hard: value(limits.max_open_files.hard_limit),
    }
}

/// True if `exe` (a process's `/proc/PID/exe`) is an `fdguard` executable, the tracer of
/// `fdguard run` for static and Go programs (` (deleted)` once replaced on disk).
pub fn is_fdguard_program(exe: &Path) -> bool {
    let name = exe.file_name().map(|n| n.to_string_lossy().into_owned());
    name.is_some_and(|n| n.split(' ').next() == Some("fdguard"))
}

pub struct Target {
    pub pid: i32,
    pub process: Process,
}

fn proc_failure(pid: i32, what: &str, e: ProcError) -> Failure {
    let path = format!("/proc/{pid}/{what}");
    match e {
        ProcError::NotFound(_) => Failure::bad_input(format!("no process with pid {pid}")),
        ProcError::PermissionDenied(_) => Failure::proc_access(
            pid,
            &path,
            &std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        ),
        other => Failure::failed(format!("cannot read {path}: {other}")),
    }
}

impl Target {
    pub fn open(pid: i32) -> Result<Target, Failure> {
        if pid <= 0 {
            return Err(Failure::bad_input(format!("{pid} is not a process id")));
        }
        let process = Process::new(pid).map_err(|e| proc_failure(pid, "", e))?;
        Ok(Target { pid, process })
    }

    pub fn cmdline(&self) -> Vec<String> {
        self.process.cmdline().unwrap_or_default()
    }

    /// The program's name for a summary line: its first argument, or the kernel's name.
    pub fn name(&self) -> String {
        self.cmdline()
            .into_iter()
            .next()
            .or_else(|| self.process.stat().ok().map(|s| s.comm))
            .unwrap_or_else(|| "?".to_string())
    }

    pub fn limit(&self) -> Result<Limit, Failure> {
        let limits = self
            .process
            .limits()
            .map_err(|e| proc_failure(self.pid, "limits", e))?;
        Ok(nofile_limit(&limits))
    }

    /// Its effective user and group: who a file it must write has to belong to.
    pub fn owner(&self) -> Option<(u32, u32)> {
        let status = self.process.status().ok()?;
        Some((status.euid, status.egid))
    }

    /// True for a zombie: it has exited, and has no fds any more.
    pub fn is_zombie(&self) -> bool {
        self.process.stat().is_ok_and(|s| s.state == 'Z')
    }

    /// True once the process has begun to exit, or is gone: what was read of it since then
    /// may be partial. An exiting process loses its memory, fd table and namespaces one
    /// after the other, and `/proc` shows each of them empty or unreadable from then on
    /// (fewer fds listed, links that no longer resolve, no socket tables) while the process
    /// still shows as running, without an error that says why. The kernel marks it first
    /// (`PF_EXITING`, set before any of it is released), so this, asked after a read, says
    /// whether the read can be trusted. A pid taken again by another process counts as gone:
    /// `process` reads the `/proc` directory of the one it opened (ESRCH once it is reaped).
    pub fn has_exited(&self) -> bool {
        self.process.stat().map_or(true, |s| exiting(&s))
    }

    /// User and system CPU time of all its threads so far (`/proc/PID/stat`).
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        let s = self.process.stat().ok()?;
        let ticks = s.utime + s.stime;
        Some(std::time::Duration::from_secs_f64(
            ticks as f64 / procfs::ticks_per_second() as f64,
        ))
    }

    /// Each thread's time running and waiting to run so far (`/proc/PID/task/TID/schedstat`:
    /// nanoseconds on a CPU, then on a run queue), by thread id.
    pub fn runnable_times(&self) -> std::collections::BTreeMap<i32, u64> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return Default::default();
        };
        tasks
            .filter_map(|t| {
                let t = t.ok()?;
                let tid: i32 = t.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
                let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().ok());
                let (run, wait) = (fields.next()??, fields.next()??);
                Some((tid, run + wait))
            })
            .collect()
    }

    /// What kind of program runs (static, Go...), from its executable.
    pub fn program(&self) -> Option<Program> {
        Program::examine(&PathBuf::from(format!("/proc/{}/exe", self.pid))).ok()
    }

    /// The runtime a shared object it has mapped brings (a JVM embedded through JNI, CPython
    /// in a server), when its executable alone does not say.
    pub fn mapped_runtime(&self) -> Option<Runtime> {
        let maps = self.process.maps().ok()?;
        maps.into_iter().find_map(|m| match m.pathname {
            MMapPath::Path(p) => Runtime::of_library(&p.to_string_lossy()),
            _ => None,
        })
    }

    /// fdguard, if the process has `libfdguard.so` mapped.
    pub fn fdguard(&self) -> Result<Option<Loaded>, Failure> {
        let Some(library) = self.mapped(is_fdguard_library)? else {
            return Ok(None);
        };
        let state = library.state(self.pid);
        // Attached: configured by the options of the attach, not by the environment.
        let attached = matches!(state, Some(LibState::Attached | LibState::Detached));
        let options = attached.then(|| library.options(self.pid)).flatten();
        let config = match &options {
            Some(text) => {
                let env: HashMap<&str, Vec<u8>> = text
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k, v.as_bytes().to_vec()))
                    .collect();
                Config::from_lookup(|name| env.get(name).cloned()).0
            }
            None => self.environment_config(),
        };
        Ok(Some(Loaded {
            library: library.path.clone(),
            config,
            state,
            mapped: library,
        }))
    }

    /// fdguard's configuration as the process's initial environment gives it (the parser's
    /// warnings were the process's to print).
    pub fn environment_config(&self) -> Config {
        let env: HashMap<String, Vec<u8>> = self
            .process
            .environ()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| {
                Some((
                    k.into_string().ok()?,
                    std::os::unix::ffi::OsStringExt::into_vec(v),
                ))
            })
            .collect();
        Config::from_lookup(|name| env.get(name).cloned()).0
    }

    /// The pid of the `fdguard run` that traces this process (a static or Go program), if one
    /// does: its tracer is an `fdguard` executable.
    pub fn fdguard_tracer(&self) -> Option<i32> {
        let tracer = self.process.status().ok()?.tracerpid;
        let exe = std::fs::read_link(format!("/proc/{tracer}/exe")).ok()?;
        (tracer > 0 && is_fdguard_program(&exe)).then_some(tracer)
    }

    /// The object mapped from a file whose name satisfies `is`, with its load bias.
    pub fn mapped(&self, is: impl Fn(&str) -> bool) -> Result<Option<Mapped>, Failure> {
        let maps = self
            .process
            .maps()
            .map_err(|e| proc_failure(self.pid, "maps", e))?;
        let mut found: Option<(PathBuf, u64)> = None;
        for m in maps {
            let MMapPath::Path(p) = m.pathname else {
                continue;
            };
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is(name) || m.offset != 0 {
                continue;
            }
            // Maps are sorted by address: the first such mapping is the object's first page.
            found = Some((p, m.address.0));
            break;
        }
        let Some((path, start)) = found else {
            return Ok(None);
        };
        let file = self.root().join(path.strip_prefix("/").unwrap_or(&path));
        Ok(Some(Mapped { path, file, start }))
    }

    /// The process's root directory (its files as it sees them, in a container too).
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    /// The directory a relative report path is relative to.
    pub fn cwd(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/cwd", self.pid))
    }
}

impl Loaded {
    /// Where reports go: `None` for the process's stderr.
    pub fn report_template(&self) -> Option<&[u8]> {
        match &self.config.report {
            ReportDest::Stderr => None,
            ReportDest::Path(t) => Some(t),
        }
    }
}
