//! The process a command looks at: its command line, its own fd limit, what kind of program it
//! is, and whether fdguard is loaded in it (and configured how).

use std::collections::HashMap;
use std::path::PathBuf;

use procfs::ProcError;
use procfs::process::{LimitValue, MMapPath, Process};
use serde::Serialize;

use crate::config::{Config, ReportDest};
use crate::fail::Failure;
use crate::program::Program;

/// `RLIMIT_NOFILE` as `/proc/PID/limits` gives it; `None` is unlimited. The report's `limit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// fdguard as loaded in a process.
pub struct Loaded {
    /// The mapped `libfdguard.so`.
    pub library: PathBuf,
    /// Its configuration, read from the process's initial environment exactly as the library
    /// read it when it loaded.
    pub config: Config,
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
        let value = |v: LimitValue| match v {
            LimitValue::Value(n) => Some(n),
            LimitValue::Unlimited => None,
        };
        Ok(Limit {
            soft: value(limits.max_open_files.soft_limit),
            hard: value(limits.max_open_files.hard_limit),
        })
    }

    /// True for a zombie: it has exited, and has no fds any more.
    pub fn is_zombie(&self) -> bool {
        self.process.stat().is_ok_and(|s| s.state == 'Z')
    }

    /// What kind of program runs (static, Go...), from its executable.
    pub fn program(&self) -> Option<Program> {
        Program::examine(&PathBuf::from(format!("/proc/{}/exe", self.pid))).ok()
    }

    /// fdguard, if the process has `libfdguard.so` mapped.
    pub fn fdguard(&self) -> Result<Option<Loaded>, Failure> {
        let maps = self
            .process
            .maps()
            .map_err(|e| proc_failure(self.pid, "maps", e))?;
        let library = maps.into_iter().find_map(|m| match m.pathname {
            MMapPath::Path(p)
                if p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libfdguard") && n.contains(".so")) =>
            {
                Some(p)
            }
            _ => None,
        });
        let Some(library) = library else {
            return Ok(None);
        };
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
        let (config, _warnings_it_printed) = Config::from_lookup(|name| env.get(name).cloned());
        Ok(Some(Loaded { library, config }))
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
