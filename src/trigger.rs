//! `Triggers`: why fdguard has work to do, handed from hooks and signal handlers to whoever
//! does it.
//!
//! A request sets a bit and calls the installed server at once, from the requesting context
//! (see `dumper::serve`: it only copies the process, which is async-signal-safe and needs no
//! fd). A request made while another is being served is served by that server before it
//! returns.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a report is written (the report's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Signal,
    Threshold,
    Emfile,
    /// Not a report: print the queued bad closes.
    BadClose,
    Exit,
    /// The report signal with a request of `fdguard report` (`dumper::signal`): a `signal`
    /// report into the request's reply file.
    Reply,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Signal | Reason::Reply => "signal",
            Reason::Threshold => "threshold",
            Reason::Emfile => "emfile",
            Reason::BadClose => "bad_close",
            Reason::Exit => "exit",
        }
    }

    /// The reason's bit in a set of requests (`request_bits`).
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// Reasons served on request, in the order they are served.
    pub const QUEUED: [Reason; 5] = [
        Reason::Emfile,
        Reason::Threshold,
        Reason::Signal,
        Reason::Reply,
        Reason::BadClose,
    ];
}

/// Who serves requests: reports, and the accept guard's upkeep.
pub struct Handlers {
    /// Serves pending requests now (async-signal-safe).
    pub serve: fn(),
    /// The accept guard has lines to print or listeners to show again.
    pub wake: fn(),
}

static HANDLERS: OnceLock<Handlers> = OnceLock::new();
static PENDING: AtomicU32 = AtomicU32::new(0);

/// Installs the handlers (at load).
pub fn install(handlers: Handlers) {
    let _ = HANDLERS.set(handlers);
}

/// Asks for a report (or bad-close notices). Async-signal-safe.
pub fn request(reason: Reason) {
    request_bits(reason.bit());
}

/// Asks again for requests that waited (`Reason::bit`s). Async-signal-safe.
pub fn request_bits(bits: u32) {
    PENDING.fetch_or(bits, Ordering::SeqCst);
    if let Some(h) = HANDLERS.get() {
        (h.serve)();
    }
}

/// Wakes the accept guard's upkeep.
pub fn wake() {
    if let Some(h) = HANDLERS.get() {
        (h.wake)();
    }
}

/// What was asked for.
pub struct Work {
    bits: u32,
}

impl Work {
    pub fn wants(&self, reason: Reason) -> bool {
        self.bits & reason.bit() != 0
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }
}

/// Takes every pending request.
pub fn take() -> Work {
    Work {
        bits: PENDING.swap(0, Ordering::AcqRel),
    }
}

/// Whether a request is pending.
pub fn pending() -> bool {
    PENDING.load(Ordering::SeqCst) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_taken_once() {
        request(Reason::Signal);
        request(Reason::Threshold);
        assert!(pending());
        let w = take();
        assert!(w.wants(Reason::Signal) && w.wants(Reason::Threshold));
        assert!(!w.wants(Reason::Emfile));
        assert!(!pending() && take().is_empty());
    }
}
