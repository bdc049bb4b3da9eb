//! How the `fdguard` command asks a process for a report: it creates an empty reply file the
//! process can write (`reply_path`), then sends the report signal with `sigqueue` and a value
//! (`Request::value`) that names the file and the format it wants. The library recognises the
//! value in its `SA_SIGINFO` handler, and its report process writes the report into that file.
//! A plain `kill` (no value) asks for a report where the process writes its reports.
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
const NONCE_BITS: u64 = FORMAT_BIT - 1;

/// A report request from the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub format: Format,
    /// Names the reply file; random, so that a request cannot be answered into another's file.
    pub nonce: u64,
}

impl Request {
    pub fn new(format: Format, nonce: u64) -> Request {
        Request {
            format,
            nonce: nonce & NONCE_BITS,
        }
    }

    /// The value sent with the signal (`sigval`, pointer-sized).
    pub fn value(&self) -> u64 {
        let json = if self.format == Format::Json {
            FORMAT_BIT
        } else {
            0
        };
        MAGIC << 48 | json | self.nonce
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
        Some(Request::new(format, v))
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
            let r = Request::new(format, 0x1234_5678_9abc_def0);
            assert_eq!(Request::from_value(r.value()), Some(r));
        }
        assert_eq!(Request::from_value(0), None);
        assert_eq!(Request::from_value(42), None);
        let r = Request::new(Format::Json, 0xabc);
        assert_eq!(r.reply_path(77), "/tmp/fdguard-reply.77.000000000abc.json");
    }
}
