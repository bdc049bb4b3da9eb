//! How the `fdguard` command asks a process for a report: it creates an empty reply file the
//! process can write (`reply_path`), then sends the report signal with `sigqueue` and a value
//! (`Request::value`) that names the file and the format it wants. The library recognises the
//! value in its `SA_SIGINFO` handler, and its report process writes the report into that file.
//! A plain `kill` (no value) asks for a report where the process writes its reports.
//!
//! The library runs at most a few report processes at a time; a request that finds them all
//! busy waits for a free one: the report process that ends wakes the process with its report
//! signal and `WAKE`. The command still sends the same request again (the same value) until its
//! reply comes, in case that wake is lost; the library keeps one of each.
//!
//! # Why a reply file
//! A report request must work whatever the process does with its reports: its stderr is often a
//! terminal, a pipe or the journal, which the command cannot read, and its report file may hold
//! another format than the one asked for. A signal carries one word, so the word names a file in
//! a fixed directory that both sides can reach: `/tmp`, as the process sees it (the command goes
//! through `/proc/PID/root`, which also reaches a container's or a `PrivateTmp=` service's).

use crate::config::Format;

/// The top 16 bits of a request's value: a value without them is not fdguard's.
const MAGIC: u64 = 0xfd9d;
const FORMAT_BIT: u64 = 1 << 47;
const REPLY_FILE_BIT: u64 = 1 << 46;
const NONCE_BITS: u64 = REPLY_FILE_BIT - 1;

/// The signal requests for a traced program (`fdguard run` of a static or Go program) are sent
/// on, to its tracer, the `fdguard` command itself: the tracer passes the usual signals sent to
/// it (TERM, INT, HUP, QUIT, USR1, USR2) on to the program, so requests take a real-time one.
pub fn tracer_signal() -> i32 {
    libc::SIGRTMAX()
}

/// The value a report process sends with the report signal to the process it reports on, when
/// requests wait for a free report process: serve them now. Not a request.
pub const WAKE: u64 = 0xfd9e << 48;

/// A report request from the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub format: Format,
    /// The command made a reply file: the report goes there or nowhere (once the command has
    /// its report, or gave up, the file is gone and a report for it is not wanted). Without
    /// one, the report goes where the process writes its reports (`fdguard report --file`).
    pub reply_file: bool,
    /// Names the reply file; random, so that a request cannot be answered into another's file.
    pub nonce: u64,
}

impl Request {
    pub fn new(format: Format, reply_file: bool, nonce: u64) -> Request {
        Request {
            format,
            reply_file,
            nonce: nonce & NONCE_BITS,
        }
    }

    /// The value sent with the signal (`sigval`, pointer-sized).
    pub fn value(&self) -> u64 {
        let bit = |set: bool, bit: u64| if set { bit } else { 0 };
        MAGIC << 48
            | bit(self.format == Format::Json, FORMAT_BIT)
            | bit(self.reply_file, REPLY_FILE_BIT)
            | self.nonce
    }

    /// The request a signal's value carries, if it is one of fdguard's.
    pub fn from_value(v: u64) -> Option<Request> {
        if v >> 48 != MAGIC {
            return None;
        }
        let format = if v & FORMAT_BIT != 0 {
            Format::Json
        } else {
            Format::Text
        };
        Some(Request::new(format, v & REPLY_FILE_BIT != 0, v))
    }

    /// The reply file of process `pid`, as that process sees the file system.
    pub fn reply_path(&self, pid: u32) -> String {
        let ext = match self.format {
            Format::Text => "txt",
            Format::Json => "json",
        };
        format!("/tmp/fdguard-reply.{pid}.{:012x}.{ext}", self.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_others_are_not_requests() {
        for format in [Format::Text, Format::Json] {
            for reply_file in [false, true] {
                let r = Request::new(format, reply_file, 0x1234_5678_9abc_def0);
                assert_eq!(Request::from_value(r.value()), Some(r));
            }
        }
        assert_eq!(Request::from_value(0), None);
        assert_eq!(Request::from_value(42), None);
        assert_eq!(Request::from_value(WAKE), None);
        let r = Request::new(Format::Json, true, 0xabc);
        assert_eq!(r.reply_path(77), "/tmp/fdguard-reply.77.000000000abc.json");
    }
}
