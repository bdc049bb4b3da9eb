//! The `inspect` snapshot (schema 1): every open fd of a process seen from outside, with the
//! report's keys wherever they mean the same (`fds[].fd`, `kind`, `desc`, `limit`, `by_kind`,
//! `tcp_states`), so that one reader takes reports and snapshots alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fdinfo::EpollWatch;
use crate::kind::FdKind;
use crate::place::Pointing;
use crate::program::Runtime;
use crate::report::{Limit, Word};
use crate::schema::Schema;
use crate::sockdesc::SocketDesc;

/// The `reason` of a snapshot (a report says `signal`, `threshold`, ...).
pub const REASON: &str = "inspect";

/// What is known of one socket from outside.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketFacts {
    #[serde(flatten)]
    pub desc: SocketDesc,
    /// Listed in a `/proc/PID/net` table: false for sockets lsof calls "can't identify
    /// protocol" (created, perhaps failed to connect, never closed).
    pub in_tables: bool,
    /// A TCP listener's accept queue: connections the kernel completed that the program has
    /// not accepted yet. Keys added within schema 1 (a reader of schema 1 ignores them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_queue: Option<u32>,
    /// The listener's backlog, what the accept queue may hold (the kernel's socket
    /// diagnostics; not known for another network namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
}

impl SocketFacts {
    /// A listener whose accept queue has reached its backlog: the kernel drops new
    /// connections' handshakes until the program accepts (Linux queues one more than the
    /// backlog: `sk_acceptq_is_full`).
    pub fn accept_queue_full(&self) -> bool {
        matches!((self.accept_queue, self.backlog), (Some(q), Some(b)) if q >= b)
    }
}

/// One open fd. `fd`, `kind` and `desc` are the report's keys and mean the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FdEntry {
    pub fd: i32,
    pub kind: FdKind,
    pub desc: String,
    /// The kernel's path, for files and directories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The inode of a socket or pipe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<SocketFacts>,
    /// For pipes: other fds of this process on the same pipe.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_ends: Vec<i32>,
    /// For epoll sets: what they watch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<EpollWatch>,
}

impl FdEntry {
    pub fn tcp_state(&self) -> Option<&Word> {
        self.socket.as_ref().and_then(|s| s.desc.tcp_state.as_ref())
    }

    /// What placing it needs (`place`).
    pub fn pointing(&self) -> Pointing<'_> {
        Pointing {
            kind: self.kind,
            path: self.path.as_deref(),
            socket: self.socket.as_ref().map(|s| &s.desc),
            listed: self.socket.as_ref().is_some_and(|s| s.in_tables),
        }
    }
}

/// fds that point to the same place.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Group {
    pub kind: FdKind,
    /// What `key` is: `place::Place`'s `by`.
    pub by: Word,
    pub key: String,
    pub count: usize,
    pub tcp_states: BTreeMap<Word, usize>,
}

/// Counts by kind and TCP state, and the groups, largest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub by_kind: BTreeMap<FdKind, usize>,
    pub tcp_states: BTreeMap<Word, usize>,
    pub groups: Vec<Group>,
}

/// What kind of program runs (see `program`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgramFacts {
    #[serde(rename = "static")]
    pub is_static: bool,
    pub go: bool,
    pub runtime: Runtime,
}

/// The process's CPU use over a short sample, taken when it is at or near its limit: a
/// program that retries a failing `accept` spins at a whole core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUse {
    /// User and system time of all its threads over the sample, in percent of one core.
    pub percent: u32,
    /// Time its busiest thread was running or waiting for a CPU to run on, in percent of the
    /// sample: a loop that spins is runnable all the time, however busy the machine is.
    pub runnable_percent: u32,
    pub window_ms: u32,
}

/// Everything `inspect` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub fdguard: Schema,
    pub pid: i32,
    pub cmdline: Vec<String>,
    /// `REASON`.
    pub reason: Word,
    pub time: String,
    pub limit: Limit,
    pub open: usize,
    #[serde(flatten)]
    pub summary: Summary,
    pub program: ProgramFacts,
    /// The mapped `libfdguard.so`, when fdguard is loaded in the process.
    pub fdguard_library: Option<String>,
    pub fds: Vec<FdEntry>,
    /// The program's name for the first line (not in the JSON: `cmdline` has it).
    #[serde(skip)]
    pub name: String,
    /// How it is there: `preloaded`, `attached`, `detached` (loaded, inert), `dormant`
    /// (loaded by an attach that did not finish), `disabled` (`FDGUARD_DISABLE`).
    pub fdguard_state: Option<Word>,
    /// Sampled only at or near the limit (a key added within schema 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUse>,
}

impl Snapshot {
    /// `pid 42 (./server)`.
    pub fn who(&self) -> String {
        crate::report::who(self.pid, &self.cmdline)
    }
}
