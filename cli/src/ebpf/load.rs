//! The eBPF recorder in the kernel (`cli/bpf/fdtrack.bpf.c`, compiled by build.rs), loaded
//! with aya for one process, and what is read back from its maps: the recorded fds, their
//! stacks, its events and its count of open fds.
//!
//! The program, its link and the maps belong to this process: they are unloaded when it
//! ends, however it ends (nothing is pinned).

use aya::maps::{Array, HashMap, MapData, RingBuf, StackTraceMap};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};

use crate::fail::Failure;

/// The object build.rs compiled (none when clang was missing at build time).
#[cfg(fdguard_bpf_object)]
const OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/fdtrack.bpf.o"
)));
#[cfg(not(fdguard_bpf_object))]
const OBJECT: Option<&[u8]> = None;

/// `struct entry` of fdtrack.bpf.c: created_ns u64, stack s32, tid u32, nr u32, pad u32, file
/// u64 (the kernel's, compared there only).
type RawEntry = [u8; 32];
/// `struct event`: kind u32, nr u32, err s32, tid u32, arg0 u64.
const EVENT_SIZE: usize = 24;

/// `count_index` of fdtrack.bpf.c.
#[derive(Clone, Copy)]
pub enum Count {
    Open = 0,
    NotifyAt = 1,
}

/// The system call number a `before attach` entry is recorded with (no call has number 0 but
/// `read`, which makes no fds).
pub const BEFORE_ATTACH: u32 = 0;

/// One fd as the recorder keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub fd: i32,
    /// CLOCK_MONOTONIC, ns.
    pub created_ns: u64,
    /// Its stack in the stack map, if one was taken.
    pub stack: Option<u32>,
    pub tid: u32,
    /// The system call that made it (`BEFORE_ATTACH`: open before the attach).
    pub nr: u32,
}

fn word<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().expect("in the record")
}

impl Recorded {
    fn decode(fd: i32, b: &RawEntry) -> Recorded {
        let stack = i32::from_ne_bytes(word(b, 8));
        Recorded {
            fd,
            created_ns: u64::from_ne_bytes(word(b, 0)),
            stack: u32::try_from(stack).ok(),
            tid: u32::from_ne_bytes(word(b, 12)),
            nr: u32::from_ne_bytes(word(b, 16)),
        }
    }
}

/// What the recorder tells (`enum event_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A creation (system call `nr`) failed with `errno` (EMFILE or ENFILE).
    Failed { nr: u32, errno: i32 },
    /// The next creation succeeded.
    Recovered,
    /// close_range ran: the count of open fds is to be made again.
    Recount,
    /// The count of open fds reached the level armed (`Count::NotifyAt`).
    Threshold,
}

impl Event {
    fn decode(b: &[u8]) -> Option<Event> {
        if b.len() < EVENT_SIZE {
            return None;
        }
        let nr = u32::from_ne_bytes(word(b, 4));
        Some(match u32::from_ne_bytes(word(b, 0)) {
            1 => Event::Failed {
                nr,
                errno: i32::from_ne_bytes(word(b, 8)),
            },
            2 => Event::Recovered,
            3 => Event::Recount,
            4 => Event::Threshold,
            _ => return None,
        })
    }
}

/// The recorder loaded and attached for one process.
pub struct Recorder {
    /// Owns the program and its link.
    _ebpf: Ebpf,
    fds: HashMap<MapData, i32, RawEntry>,
    stacks: StackTraceMap<MapData>,
    counts: Array<MapData, u64>,
    events: RingBuf<MapData>,
}

/// CAP_SYS_ADMIN, CAP_PERFMON and CAP_BPF (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What this process lacks to load the recorder, if anything: CAP_BPF and CAP_PERFMON (the
/// stacks, the tracepoints), or CAP_SYS_ADMIN, which stands for both.
pub fn missing_capabilities(effective: u64) -> Option<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return None;
    }
    Some(match (has(CAP_BPF), has(CAP_PERFMON)) {
        (false, false) => "CAP_BPF and CAP_PERFMON",
        (false, true) => "CAP_BPF",
        _ => "CAP_PERFMON",
    })
}

impl Recorder {
    /// The recorder of thread group `tgid`, with stacks or not, room for `max_fds` fds.
    pub fn load(tgid: i32, stacks: bool, max_fds: u32) -> Result<Recorder, Failure> {
        let object = OBJECT.ok_or_else(|| {
            Failure::failed(
                "this fdguard was built without its eBPF recorder (clang was missing when it \
                 was built): install clang and build it again (cargo build), or restart the \
                 program under `fdguard run -- CMD`",
            )
        })?;
        if let Some(missing) = missing_capabilities(crate::os::effective_capabilities()) {
            return Err(Failure::bad_input(format!(
                "loading eBPF programs needs {missing} (root has them): run fdguard as root, \
                 or restart the program under `fdguard run -- CMD`"
            )));
        }
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Failure::failed(format!(
                "cannot {what} the eBPF recorder: {e} (`fdguard run -- CMD` traces the \
                 program from its start instead)"
            ))
        };
        let tgid = tgid as u32;
        let with_stacks = u32::from(stacks);
        let mut ebpf = EbpfLoader::new()
            .override_global("target_tgid", &tgid, true)
            .override_global("with_stacks", &with_stacks, true)
            .map_max_entries("fds", max_fds)
            .load(object)
            .map_err(|e| failed("load", &e))?;
        let program: &mut RawTracePoint = ebpf
            .program_mut("fd_exit")
            .ok_or_else(|| failed("find", &"fd_exit"))?
            .try_into()
            .map_err(|e| failed("load", &e))?;
        program.load().map_err(|e| failed("load", &e))?;
        program
            .attach("sys_exit")
            .map_err(|e| failed("attach", &e))?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| failed("find the map of", &name))
        };
        let fds = HashMap::try_from(take("fds")?).map_err(|e| failed("read", &e))?;
        let stacks = StackTraceMap::try_from(take("stacks")?).map_err(|e| failed("read", &e))?;
        let counts = Array::try_from(take("counts")?).map_err(|e| failed("read", &e))?;
        let events = RingBuf::try_from(take("events")?).map_err(|e| failed("read", &e))?;
        Ok(Recorder {
            _ebpf: ebpf,
            fds,
            stacks,
            counts,
            events,
        })
    }

    /// Records `fds` as open before the attach, unless the recorder has one of their numbers
    /// already (made since).
    pub fn before_attach(&mut self, fds: &[i32], now_ns: u64) {
        let mut raw: RawEntry = [0; 32];
        raw[..8].copy_from_slice(&now_ns.to_ne_bytes());
        raw[8..12].copy_from_slice(&(-1i32).to_ne_bytes());
        raw[16..20].copy_from_slice(&BEFORE_ATTACH.to_ne_bytes());
        for fd in fds {
            // BPF_NOEXIST: an entry there is newer.
            let _ = self.fds.insert(fd, raw, 1);
        }
    }

    /// Every fd recorded.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.fds
            .iter()
            .filter_map(Result::ok)
            .map(|(fd, raw)| Recorded::decode(fd, &raw))
            .collect()
    }

    /// The pcs of stack `id`, innermost first.
    pub fn stack(&self, id: u32) -> Option<Vec<u64>> {
        let trace = self.stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }

    pub fn count(&self, which: Count) -> u64 {
        self.counts.get(&(which as u32), 0).unwrap_or(0)
    }

    pub fn set_count(&mut self, which: Count, value: u64) {
        let _ = self.counts.set(which as u32, value, 0);
    }

    /// The events sent since the last call.
    pub fn events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            out.extend(Event::decode(&item));
        }
        out
    }

    /// Waits until an event comes, `timeout` passes or a signal interrupts.
    pub fn wait(&self, timeout: std::time::Duration) {
        use std::os::fd::AsFd;
        crate::os::readable_within(self.events.as_fd(), timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_events_decoded() {
        let mut raw: RawEntry = [0; 32];
        raw[..8].copy_from_slice(&5u64.to_ne_bytes());
        raw[8..12].copy_from_slice(&(-14i32).to_ne_bytes());
        raw[12..16].copy_from_slice(&77u32.to_ne_bytes());
        raw[16..20].copy_from_slice(&257u32.to_ne_bytes());
        let r = Recorded::decode(9, &raw);
        assert_eq!(
            r,
            Recorded {
                fd: 9,
                created_ns: 5,
                stack: None,
                tid: 77,
                nr: 257
            }
        );
        let mut e = [0u8; EVENT_SIZE];
        e[..4].copy_from_slice(&1u32.to_ne_bytes());
        e[4..8].copy_from_slice(&43u32.to_ne_bytes());
        e[8..12].copy_from_slice(&24i32.to_ne_bytes());
        assert_eq!(Event::decode(&e), Some(Event::Failed { nr: 43, errno: 24 }));
        e[..4].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(Event::decode(&e), None);
        assert_eq!(Event::decode(&e[..8]), None);
    }

    #[test]
    fn capabilities_named() {
        let caps = |list: &[u32]| list.iter().fold(0u64, |m, c| m | 1 << c);
        assert_eq!(missing_capabilities(caps(&[CAP_SYS_ADMIN])), None);
        assert_eq!(missing_capabilities(caps(&[CAP_BPF, CAP_PERFMON])), None);
        assert_eq!(missing_capabilities(0), Some("CAP_BPF and CAP_PERFMON"));
        assert_eq!(missing_capabilities(caps(&[CAP_BPF])), Some("CAP_PERFMON"));
    }
}
