//! What a fork child resets before anything else runs in it: the threads other than the
//! forking one are gone, and with them whatever they held (a table slot being written, the
//! accept guard's thread, a request being served, the shared symbol cache's mapping, a JVM's
//! VM thread); and its reports go to a path with its own pid (`published`).
#![allow(unsafe_code)]

use crate::{child, dumper, guard, published, runtime, symcache, tracker, upkeep};

/// Registers the reset with `pthread_atfork` (once, at start).
pub fn install() {
    // SAFETY: registering a plain extern "C" function with no preconditions.
    unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
}

extern "C" fn in_child() {
    tracker::after_fork_in_child();
    guard::after_fork_in_child();
    symcache::unshare_after_fork();
    child::after_fork();
    upkeep::after_fork();
    dumper::after_fork();
    published::after_fork();
    runtime::java::after_fork();
}
