//! Room to load the library in a process that may have no fd free.

use crate::fail::Failure;
use fdguard_core::snapshot::FdEntry;

/// fds loading the library will open one at a time (the library and its dependencies).
const ROOM: u64 = 8;

fn lowest_free(fds: &[FdEntry]) -> u64 {
    let gap = fds.iter().enumerate().find(|(i, e)| e.fd != *i as i32);
    gap.map_or(fds.len(), |(i, _)| i) as u64
}

pub fn limits(pid: i32) -> Result<(u64, u64), Failure> {
    crate::os::set_soft_nofile(pid, None)
        .map_err(|e| Failure::failed(format!("cannot read pid {pid}'s fd limit: {e}")))
}

/// True if loading would find no fd free below the soft limit.
pub fn needs_room(pid: i32, fds: &[FdEntry]) -> Result<bool, Failure> {
    Ok(lowest_free(fds) + ROOM > limits(pid)?.0)
}

/// `dlopen` needs an fd, and a process at its limit has none: its soft limit is raised a
/// little for the moment of loading (while every thread of the process is stopped, so that
/// none takes the room), then put back. Returns the soft limit to put back.
pub fn make_room(pid: i32, fds: &[FdEntry]) -> Result<Option<u64>, Failure> {
    let (soft, hard) = limits(pid)?;
    let lowest_free = lowest_free(fds);
    let room = (lowest_free + ROOM).min(hard);
    if room <= soft {
        return Err(Failure::bad_input(format!(
            "pid {pid} has no fd free to load the library with, and its soft limit ({soft}) \
             is its hard limit: run fdguard as root with CAP_SYS_RESOURCE, or free an fd"
        )));
    }
    crate::os::set_soft_nofile(pid, Some(room)).map_err(|e| {
        Failure::bad_input(format!(
            "pid {pid} has no fd free to load the library with, and its soft limit cannot be \
             raised for that moment: {e}"
        ))
    })?;
    Ok(Some(soft))
}
