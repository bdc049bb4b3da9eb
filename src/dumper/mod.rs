//! The report pipeline: requests (`signal`, `trigger`) served by copies of the process
//! (`serve`), which gather the facts (`gather`), resolve stacks (`frames`) and write the report
//! where it goes (`deliver`); and the exit path (`exit`).
//!
//! # Where a report is made
//! Building a report reads `/proc`, symbolizes (opens ELF files, allocates) and writes files:
//! none of that is allowed in a signal handler or inside a hook, and any fd opened in the
//! program's process would take the lowest free number (near the limit the program would hit
//! EMFILE one fd early; a daemon's `closefrom` could close it; a `close(0); open(...)` idiom
//! could get another number). So a request only copies the process (`child`), from wherever it
//! was made, and the copy does everything: it describes its copies of the program's fds, drops
//! them (every number is then free, even at EMFILE, and the program's closes are not delayed),
//! symbolizes, renders and writes.

mod context;
mod deliver;
mod exit;
mod frames;
mod gather;
mod serve;
mod signal;

use fdguard_core::config::Config;
use fdguard_core::report::compact_utc;

use crate::child;
use crate::os;
use crate::published;
use crate::symcache;
use crate::trigger::{self, Handlers};
use crate::upkeep;

pub use exit::at_exit;
pub use serve::after_fork;
pub use signal::{handler, owns, program_call, remove_handler, restart};

/// Installs the signal handler and the request handlers, and publishes how to ask for a
/// report (`published`). Returns the line to show when the report signal is not the one
/// configured (the program has its own handler for it).
pub fn start(config: Config) -> Option<String> {
    let config = context::init(config);
    child::init();
    let loaded_at_s = os::clock::realtime_ns() / 1_000_000_000;
    published::start(config, compact_utc(loaded_at_s));
    deliver::init();
    // The symbolizer's library list, built here once: in a report child, the loader lock it
    // needs might be held by a thread that does not exist there.
    backtrace::resolve(std::ptr::null_mut(), |_| {});
    symcache::init();
    upkeep::configure(config.emfile, config.backoff_max_ms);
    trigger::install(Handlers {
        serve: serve::serve,
        wake: upkeep::wake,
    });
    signal::take(config.signal)
}
