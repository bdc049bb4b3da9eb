//! Why a command could not do what it was asked: one line for the user, and the exit status.

use std::fmt;
use std::io;

/// Exit status for bad input (an argument, a file, a process that is not what it must be).
pub const BAD_INPUT: i32 = 2;
/// Exit status when the work itself failed (no report came, a file could not be written).
pub const FAILED: i32 = 1;

#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl Failure {
    pub fn bad_input(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: BAD_INPUT,
        }
    }

    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: FAILED,
        }
    }

    /// A `/proc/PID/...` file that could not be read: no such process, or not allowed.
    pub fn proc_access(pid: i32, path: &str, e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::NotFound => Failure::bad_input(format!("no process with pid {pid}")),
            io::ErrorKind::PermissionDenied => Failure::bad_input(permission_hint(pid, path)),
            _ => Failure::failed(format!("cannot read {path}: {e}")),
        }
    }
}

/// What reading another user's process needs, said with the owner's uid when it is known.
fn permission_hint(pid: i32, path: &str) -> String {
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok();
    let who = match owner {
        Some(uid) => format!("pid {pid} belongs to uid {uid}"),
        None => format!("pid {pid} belongs to another user"),
    };
    format!(
        "permission denied reading {path}: {who}; run fdguard as that user, or as root \
         (reading another user's fds needs CAP_SYS_PTRACE)"
    )
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Outcome = Result<(), Failure>;
