//! Setting fdguard up, the same way whether it was preloaded (the constructor in `lib.rs`) or
//! attached to a running process (`attach`).

use crate::emfile;
use crate::fork;
use crate::guard;
use crate::os;
use crate::stack;
use crate::tracker;
use crate::unwind;
use fdguard_core::config::Config;

/// One line of fdguard's on stderr (load time: allocates).
pub fn print_line(line: &str) {
    let _ = os::fd::write_all(2, format!("{line}\n").as_bytes());
}

/// What starting needs, preloaded or attached: the panic hook, `FDGUARD_RAISE_NOFILE`, the fork
/// child's reset, stack capture and the unwinder, the tracker's and the accept guard's settings.
pub fn prepare(config: &Config) {
    std::panic::set_hook(Box::new(|info| {
        let msg = format!(
            "internal error at {}",
            info.location()
                .map_or_else(|| "?".to_string(), |l| l.to_string())
        );
        guard::internal_failure(&msg);
    }));
    if config.raise_nofile {
        print_line(&raise_nofile());
    }
    fork::install();
    stack::init();
    unwind::init();
    tracker::configure(config.depth, config.close_stacks, config.emfile_interval_s);
    emfile::configure(config.emfile, config.backoff_max_ms);
    tracker::THRESHOLD.configure(config.threshold, os::process::nofile_limit().0);
}

/// `FDGUARD_RAISE_NOFILE`: the soft limit up to the hard one, for programs that never do it.
fn raise_nofile() -> String {
    match os::process::raise_nofile() {
        Ok((old, new)) if old == new => {
            format!(
                "fdguard: FDGUARD_RAISE_NOFILE: the soft RLIMIT_NOFILE is already the hard limit, {new}"
            )
        }
        Ok((old, new)) => {
            format!(
                "fdguard: FDGUARD_RAISE_NOFILE: raised the soft RLIMIT_NOFILE from {old} to {new} (the hard limit)"
            )
        }
        Err(e) => format!(
            "fdguard: FDGUARD_RAISE_NOFILE: cannot raise the soft RLIMIT_NOFILE: {}",
            std::io::Error::from_raw_os_error(e)
        ),
    }
}
