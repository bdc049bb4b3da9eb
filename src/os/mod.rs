//! Thin, allocation-free wrappers over what fdguard needs from the kernel, libc and the loader,
//! one file per concern.
//!
//! # Why
//! The core (`table`, `intern`, `tracker`, `report`) is safe Rust. Everything that talks to the
//! kernel or to raw memory lives here, so that each `unsafe` block can state once why it is sound.
//! Every function here is async-signal-safe unless its doc says otherwise.
//!
//! # Files
//! - `errno`: the thread's `errno`, located once, and the names of its values;
//! - `thread`: the kernel thread id (from glibc's thread descriptor when glibc says where);
//! - `process`: the pid, `RLIMIT_NOFILE`, ending a report child at once;
//! - `clock`: the coarse clock (fd ages), the precise one (deadlines), wall time, sleeping;
//! - `env`: the environment, at load;
//! - `futex`: waiting on a word and waking its waiters;
//! - `mem`: the page size, zeroed mappings that live for the rest of the process, raw views;
//! - `loader`: the loaded objects (`dl_iterate_phdr`; not from a hook);
//! - `fd`: questions about an fd, and writing to one;
//! - `path`: opening the report file by a path no other user can redirect (allocates);
//! - `sys`: raw system calls on fds, which no hook sees (the accept guard's, a report child's);
//! - `signal`: the thread's signal mask; dispositions set and read past fdguard's `sigaction` hook.
#![allow(unsafe_code)]

pub mod clock;
pub mod env;
pub mod errno;
pub mod fd;
pub mod futex;
pub mod loader;
pub mod mem;
pub mod path;
pub mod process;
pub mod signal;
pub mod sys;
pub mod thread;
