//! The accept guard: what fdguard does when `accept` fails for lack of fds (seed 003).
//!
//! # Why
//! When fds run out, `accept` fails with `EMFILE` while the pending connection stays queued. A
//! loop that logs and retries spins at 100% CPU, and so does a level-triggered event loop, which
//! the kernel wakes at once because the listener is still readable. Sleeping inside `accept`
//! stops the spin of a thread that only accepts, but stalls every client of an event loop.
//!
//! # How
//! Per listening socket, a backoff period: 5 ms after the first failure, doubling up to
//! `FDGUARD_BACKOFF_MAX_MS`, reset by the next successful accept (Go's `net/http` schedule).
//! What happens during the period depends on how the failing thread waits, which this module
//! infers from what the hooks tell it (`policy::decide`):
//! - a thread that calls `accept` again without waiting in between (a blocking accept loop, an
//!   edge-triggered accept-until-`EAGAIN` loop) sleeps in `accept`: it serves nobody meanwhile
//!   anyway, so the sleep costs nothing but the spin;
//! - a thread that waits (epoll, poll, select) between failures gets its error at once, and the
//!   listener is *hidden* from the program's waits until the period ends: its epoll
//!   registrations are set to no events and restored afterwards (through `Kernel`), and poll/select
//!   calls leave it out. Every other fd of the loop is served as before;
//! - a non-blocking listener never seen in a wait call gets a short sleep (at most 10 ms).
//!
//! The program always gets the real result and `errno`. Everything here is fixed-size and
//! lock-free for the hooks: a listener's own small lock is only ever *tried* by fdguard's
//! operations, and only the program's own `epoll_ctl` on a listener waits for it (briefly, and
//! never for its own thread). `Lines` (the operator's stderr lines) runs on the accept guard's
//! thread. OS calls go through `Kernel`, so that the unit tests run without preloading anything.
//!
//! # Files
//! `policy` is the whole policy: the backoff schedule, which errors mean "out of fds", `decide`, and
//! where shed mode's reserve fd sits. `listeners` is the table of guarded listeners that
//! carries the policy out; `reserve` holds shed mode's reserve fd and sheds with it; `effects`
//! does what the hooks, the accept guard's thread and `fdguard detach` ask of the guard, through
//! `Kernel` (`kernel`: the trait and the real kernel; the tests' fake is in `fixtures`); `lines`
//! tells the operator about it, from the accept guard's thread.

mod effects;
#[cfg(test)]
mod fixtures;
mod kernel;
mod lines;
mod listeners;
mod policy;
mod reserve;

pub use effects::{
    accept_failed, accepted, closing, closing_range, configure, each_listener_below,
    epoll_hidden_until, hidden_until, limit_changed, listener_ctl, listening, maybe_listener,
    registered, reserve_fd, stop, upkeep, wait_starting,
};
pub use lines::{LineContext, Lines, NoticeKind, render};
pub use listeners::GUARD;
