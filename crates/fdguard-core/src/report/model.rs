//! The report's types (schema 1), in the order the JSON has their keys.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::hex;
use crate::kind::FdKind;
use crate::place::Place;
use crate::program::Runtime;
use crate::schema::Schema;

/// Names the report's words are made of: borrowed when written, owned when read.
pub type Word = Cow<'static, str>;

/// `RLIMIT_NOFILE` as the process has it; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl Limit {
    /// From `getrlimit`'s values, where `RLIM_INFINITY` is `u64::MAX`.
    pub fn from_rlimit(soft: u64, hard: u64) -> Limit {
        let finite = |v: u64| (v != u64::MAX).then_some(v);
        Limit {
            soft: finite(soft),
            hard: finite(hard),
        }
    }
}

/// The accept guard's figures (see the library's `emfile`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmfileStats {
    pub accept_failures: u64,
    pub paused_ms: u64,
    pub shed: u64,
}

/// One open fd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FdRow {
    pub fd: i32,
    pub kind: FdKind,
    pub desc: String,
    /// The call that created it (`Call`'s names: `open`, `inherited`, `untracked`, ...).
    pub call: Word,
    pub age_ms: Option<u64>,
    pub tid: Option<u32>,
    /// Its creation stack: an `id` of `Report::stacks`.
    pub stack: Option<usize>,
    /// Where it points, for the text's account of fds without a stack. Not in the JSON
    /// (`desc` says it), so `None` in a report read back.
    #[serde(skip)]
    pub place: Option<Place>,
}

/// One frame of a creation stack, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Frame {
    #[serde(with = "hex::word")]
    pub addr: u64,
    pub module: Option<String>,
    /// Offset of the call instruction in `module`: `addr2line -e MODULE OFFSET` finds the line.
    #[serde(with = "hex::optional")]
    pub offset: Option<u64>,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

fn short_module(m: &str) -> &str {
    m.rsplit('/').next().unwrap_or(m)
}

impl Frame {
    /// The frame's name in a flame graph: the function, else module+offset.
    pub fn name(&self) -> String {
        match (&self.function, &self.module, self.offset) {
            (Some(f), _, _) => f.clone(),
            (None, Some(m), Some(o)) => format!("{}+{o:#x}", short_module(m)),
            (None, Some(m), None) => short_module(m).to_string(),
            _ => "??".to_string(),
        }
    }

    /// What identifies the frame across reports and processes (addresses move with ASLR;
    /// module and offset do not).
    pub fn key(&self) -> String {
        match (&self.module, self.offset) {
            (Some(m), Some(o)) => format!("{m}+{o:#x}"),
            _ => format!(
                "{}@{}:{}",
                self.function.as_deref().unwrap_or("??"),
                self.file.as_deref().unwrap_or("?"),
                self.line.unwrap_or(0)
            ),
        }
    }

    /// What a person calls the same place, for grouping stacks: the function, file and line
    /// when the line is known (a runtime's frame, a native one with debug info), else module
    /// and offset, else the address. Two walks through one Python line or one Java method
    /// that differ only in the runtime's own code resolve to the same sites.
    pub fn site(&self) -> String {
        let function = self.function.as_deref().unwrap_or("??");
        match (&self.file, self.line, &self.module, self.offset) {
            (Some(file), Some(line), module, _) => format!(
                "{function}@{file}:{line} in {}",
                module.as_deref().unwrap_or("?")
            ),
            (_, _, Some(m), Some(o)) => format!("{m}+{o:#x}"),
            _ => format!("{function}@{:#x}", self.addr),
        }
    }

    /// `load_setting fopen_leak.c:12 (fopen_leak+0x122f)`: the report's way, without the
    /// address.
    pub fn display(&self) -> String {
        let mut s = self.function.clone().unwrap_or_else(|| "??".to_string());
        if let (Some(file), Some(line)) = (&self.file, self.line) {
            s.push_str(&format!(" {file}:{line}"));
        }
        if let (Some(m), Some(o)) = (&self.module, self.offset) {
            s.push_str(&format!(" ({}+{o:#x})", short_module(m)));
        }
        s
    }
}

/// The fds created by one call stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stack {
    /// Position in `Report::stacks` (largest first): what `FdRow::stack` holds.
    pub id: usize,
    pub count: usize,
    pub by_kind: BTreeMap<FdKind, usize>,
    pub tcp_states: BTreeMap<Word, usize>,
    pub oldest_ms: u64,
    pub newest_ms: u64,
    pub frames: Vec<Frame>,
    /// How many are stdio `FILE` streams: the text says "FILE streams" for them. Not in the
    /// JSON (schema 1 has no key for it), so 0 in a report read back.
    #[serde(skip)]
    pub streams: usize,
    /// Where most of them point, for the text. Not in the JSON either (its rows' `desc` say
    /// it), so `None` in a report read back.
    #[serde(skip)]
    pub place: Option<SharedPlace>,
}

/// The place that most of a stack's fds point to (see `build`): `count` fds of `kind` there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedPlace {
    pub kind: FdKind,
    pub place: Place,
    pub count: usize,
}

impl Stack {
    /// The stack's identity across reports: its frames' keys.
    pub fn key(&self) -> Vec<String> {
        self.frames.iter().map(Frame::key).collect()
    }
}

/// The language runtime the process runs on, when the library recognised one: whether the
/// creation stacks carry its frames (frames with `module` `"python"`, ...), and if not, why
/// (a version fdguard cannot read: the stacks then have native frames only). Not in reports
/// of other programs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeInfo {
    pub name: Runtime,
    /// As the runtime names itself: `3.11.7`.
    pub version: String,
    pub frames: bool,
    pub why: Option<String>,
}

/// A report (schema 1). Keys in the order the JSON has them; a report read from a file that
/// lacks a key has its default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    pub fdguard: Schema,
    pub pid: u32,
    pub cmdline: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeInfo>,
    /// How its fds were recorded, when not by fdguard in the process or its tracer:
    /// `ebpf` (`fdguard attach` of a Go or static program, `run --ebpf`), where the processes
    /// it forks are not followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorder: Option<Word>,
    /// Why it was made: `signal`, `threshold`, `emfile`, `exit`, ...
    pub reason: Word,
    /// For `emfile` reports: the call that failed, and with which error (`EMFILE`, `ENFILE`).
    pub trigger_call: Option<Word>,
    pub trigger_errno: Option<Word>,
    /// UTC, `2026-11-22T03:04:05.123Z`.
    pub time: String,
    pub limit: Limit,
    pub open: usize,
    /// fds created by nothing fdguard saw.
    pub untracked: usize,
    /// fds left out by `FDGUARD_IGNORE` (exit reports).
    pub suppressed: usize,
    /// Closes fdguard did not see (a creation reused a number it still had open).
    pub missed_closes: u64,
    /// Updates fdguard could not record (slot busy: signal handler or racing close).
    pub skipped: u64,
    /// Failed closes of fds that were not open, since the start.
    pub bad_closes: u64,
    /// Report requests this report answers besides its own: made while the report processes
    /// (at most two at a time) were all at work.
    pub coalesced: u64,
    pub by_kind: BTreeMap<FdKind, usize>,
    /// TCP states of every socket listed, tracked or not.
    pub tcp_states: BTreeMap<Word, usize>,
    pub emfile: EmfileStats,
    pub fds: Vec<FdRow>,
    pub stacks: Vec<Stack>,
}

impl Report {
    /// The report as one line of JSON, newline-terminated.
    pub fn to_json(&self) -> String {
        json_line(self)
    }

    /// `pid 42 (./server)`.
    pub fn who(&self) -> String {
        who(self.pid, &self.cmdline)
    }
}

pub fn who(pid: impl std::fmt::Display, cmdline: &[String]) -> String {
    match cmdline.first() {
        Some(p) => format!("pid {pid} ({p})"),
        None => format!("pid {pid}"),
    }
}

fn json_line(value: &impl Serialize) -> String {
    let mut s = serde_json::to_string(value).expect("report types always serialize");
    s.push('\n');
    s
}

/// A close of an fd that was not open (`EBADF`), printed on its own, not as a report; in JSON
/// an object with `"event": "bad_close"` (reports have no `event` key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BadCloseNotice {
    pub fdguard: Schema,
    pub pid: u32,
    pub event: Word,
    pub time: String,
    pub call: Word,
    pub fd: i32,
    pub tid: u32,
    /// Where the failed close was called.
    pub stack: Vec<Frame>,
    /// Where the number was last released; `None` when close stacks are not captured.
    pub released_by: Option<Vec<Frame>>,
    /// Bad closes since the last notice that were not shown (rate limit).
    pub not_shown: u64,
}

impl BadCloseNotice {
    pub const EVENT: &'static str = "bad_close";

    pub fn to_json(&self) -> String {
        json_line(self)
    }
}
