//! What a hook means for the fd table: records and releases, the counters of what could not be
//! recorded, the threshold, and the claims of `emfile` reports. What the same hooks mean for
//! the accept guard is in `emfile` (`emfile::effects`).
//!
//! Hooks call here after (or, for releases, before) the real call. Nothing here allocates,
//! locks, or calls a hooked function.

use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use crate::badclose::{BadClose, BadCloses};
use crate::emfile::{self, GUARD};
use crate::guard::{self, Mode};
use crate::limits::Threshold;
use crate::origin::{Detail, PathTail};
use crate::os;
use crate::own::OWN;
use crate::stack;
use crate::table::{EPOCHS, FdRecord, FdTable, Insert, Remove, StackId};
use crate::trigger::{self, Reason};
use fdguard_core::call::Call;
use fdguard_core::kind::FdKind;

pub static TABLE: FdTable = FdTable::new();
pub static THRESHOLD: Threshold = Threshold::new();
pub static COUNTERS: Counters = Counters::new();
pub static BAD_CLOSES: BadCloses = BadCloses::new();

static DEPTH: AtomicUsize = AtomicUsize::new(0);
static CLOSE_STACKS: AtomicBool = AtomicBool::new(false);
/// Incremented in each fork child; lets the table take over writes frozen by `fork`.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);
/// `emfile` reports: at most one per interval; the call and errno of the one reported.
static EMFILE_INTERVAL_NS: AtomicU64 = AtomicU64::new(60_000_000_000);
static EMFILE_LAST_NS: AtomicU64 = AtomicU64::new(0);
static EMFILE_CALL: AtomicU8 = AtomicU8::new(0);
static EMFILE_ERRNO: AtomicI32 = AtomicI32::new(0);

/// Things fdguard noticed but could not record exactly; shown in every report.
pub struct Counters {
    /// A creation reused a number the table still had open: a close fdguard did not see.
    pub missed_closes: AtomicU64,
    /// Updates skipped because another writer held the slot (signal handler or racing close).
    pub skipped: AtomicU64,
}

impl Counters {
    const fn new() -> Self {
        Self {
            missed_closes: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }
}

/// How a new fd came to be.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub call: Call,
    pub kind: FdKind,
    pub detail: Detail,
    pub stream: bool,
    pub path: PathTail,
}

impl Origin {
    #[inline(always)]
    pub fn new(call: Call) -> Self {
        Self {
            call,
            kind: call.default_kind(),
            detail: Detail::None,
            stream: call.makes_stream(),
            path: PathTail::default(),
        }
    }

    #[inline(always)]
    pub fn detail(mut self, detail: Detail) -> Self {
        self.detail = detail;
        self
    }

    /// Records the path as given (its end); without one the report shows the kernel's name.
    #[inline(always)]
    pub fn path(mut self, path: Option<&[u8]>) -> Self {
        if let Some(p) = path {
            let (tail, len) = PathTail::of(p);
            self.path = tail;
            self.detail = Detail::Path(len);
        }
        self
    }

    #[inline(always)]
    pub fn socket(self, domain: i32, ty: i32, protocol: i32) -> Self {
        self.detail(Detail::Socket {
            domain: domain as u16,
            ty: ty as u32,
            protocol: protocol as u16,
        })
    }

    /// An fd duplicated from `source`: same kind and description as the source when fdguard
    /// knows it.
    pub fn duplicate_of(call: Call, source: i32) -> Self {
        match TABLE.get(source) {
            Some(rec) => Self {
                call,
                kind: rec.kind,
                detail: match Detail::unpack(rec.detail) {
                    Detail::None => Detail::FromFd(source),
                    d => d,
                },
                stream: false,
                path: rec.path,
            },
            None => Self::new(call).detail(Detail::FromFd(source)),
        }
    }
}

/// Configures the hot path from the parsed config (at load).
pub fn configure(depth: usize, close_stacks: bool, emfile_interval_s: u64) {
    DEPTH.store(depth, Ordering::Relaxed);
    CLOSE_STACKS.store(close_stacks, Ordering::Relaxed);
    EMFILE_INTERVAL_NS.store(
        emfile_interval_s.saturating_mul(1_000_000_000),
        Ordering::Relaxed,
    );
}

#[inline(always)]
pub fn fork_generation() -> u32 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// In a fork child, before anything else runs: the table takes over writes frozen by `fork`,
/// and the listener table's locks, held by threads that do not exist here, are freed.
pub fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    GUARD.after_fork();
}

/// Which thread made an fd (0: none fdguard saw) and when; taken by the hook before the real
/// call (see `hooks::Entry`). Zero when not tracking.
#[derive(Clone, Copy, Debug, Default)]
pub struct Birth {
    tid: u32,
    born_ns: u64,
}

impl Birth {
    /// For a hook about to make its real call in `mode`.
    #[inline]
    pub fn take(mode: Mode) -> Self {
        if mode == Mode::Track {
            Self {
                tid: guard::tid(),
                born_ns: os::clock::coarse_ns(),
            }
        } else {
            Self::default()
        }
    }

    /// For an fd found already open (inherited, or open before attach): made by no thread
    /// fdguard saw; its age counts from now.
    pub fn found_open() -> Self {
        Self {
            tid: 0,
            born_ns: os::clock::coarse_ns(),
        }
    }
}

/// A new fd exists (`fd >= 0` checked here so hooks can pass results straight in).
#[inline(always)]
pub fn created(mode: Mode, born: Birth, fd: i32, origin: impl FnOnce() -> Origin) {
    created_sharing(mode, born, fd, &mut None, origin);
}

/// One of several fds a single call made (a pipe's two ends, fds received in one message): they
/// share one creation stack, captured for the first and kept in `stack`.
#[inline(always)]
pub fn created_sharing(
    mode: Mode,
    born: Birth,
    fd: i32,
    stack: &mut Option<Option<StackId>>,
    origin: impl FnOnce() -> Origin,
) {
    if fd < 0 {
        return;
    }
    match mode {
        Mode::Pass => {}
        Mode::Own => OWN.add(fd),
        Mode::Track => {
            // A creation on one of fdguard's numbers means the program replaced it (dup2).
            OWN.remove(fd);
            let stack = *stack.get_or_insert_with(|| stack::capture(DEPTH.load(Ordering::Relaxed)));
            record(fd, origin(), stack, born);
        }
    }
}

/// Records `fd` in the table (also used for fds found open at load, with no stack).
#[inline(always)]
pub fn record(fd: i32, origin: Origin, stack: Option<StackId>, born: Birth) {
    let rec = FdRecord {
        call: origin.call,
        kind: origin.kind,
        stream: origin.stream,
        tid: born.tid,
        stack,
        born_ns: born.born_ns,
        detail: origin.detail.pack(),
        path: origin.path,
        // Loaded after the call that made the fd returned: see `REPORT_EPOCH`.
        epoch: (REPORT_EPOCH.load(Ordering::Relaxed) >> EPOCH_SHIFT) as u16,
    };
    if rec.born_ns >= LIMIT_LOOK_AT_NS.load(Ordering::Relaxed) {
        look_at_limit(rec.born_ns);
    }
    match TABLE.insert(fd, &rec, fork_generation()) {
        Insert::Inserted => {
            if THRESHOLD.after_create(TABLE.highest_fd(), || TABLE.count_open()) {
                trigger::request(Reason::Threshold);
            }
        }
        Insert::Replaced => {
            COUNTERS.missed_closes.fetch_add(1, Ordering::Relaxed);
        }
        Insert::Busy | Insert::OutOfRange => {
            COUNTERS.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Bumped by each report request just before the process is copied (`begin_copy`); every
/// table entry keeps the value it saw when written. The copy's fd table and its memory are
/// copied a moment apart while other threads go on: an entry written after the bump may
/// describe an fd the copy does not have (its number closed and reused in between), and the
/// report checks those against the kernel (`dumper::gather`). One written before it is safe:
/// an fd created on a number after the copy's fds were taken is created after a close that the
/// kernel ordered after the copy, itself after the bump, so its entry sees the new epoch.
///
/// Kept in the top bits of the word (`EPOCH_SHIFT`), where it wraps at `EPOCHS` by itself: the
/// creation path only shifts it.
static REPORT_EPOCH: AtomicU32 = AtomicU32::new(0);
const EPOCH_SHIFT: u32 = u32::BITS - EPOCHS.trailing_zeros();

/// A report request is about to copy the process: the epoch the copy's entries are judged by.
pub fn begin_copy() -> u16 {
    let before = REPORT_EPOCH.fetch_add(1 << EPOCH_SHIFT, Ordering::SeqCst);
    (before.wrapping_add(1 << EPOCH_SHIFT) >> EPOCH_SHIFT) as u16
}

/// When the creation path next re-reads the soft limit: another process may have changed it
/// (`prlimit --pid`), and the threshold is a share of it.
static LIMIT_LOOK_AT_NS: AtomicU64 = AtomicU64::new(0);

#[cold]
fn look_at_limit(now: u64) {
    LIMIT_LOOK_AT_NS.store(now.saturating_add(1_000_000_000), Ordering::Relaxed);
    THRESHOLD.set_limit(os::process::nofile_limit().0);
}

/// `dup2`/`dup3` put a new fd on `fd`, silently closing what was there: a replacement, not a
/// missed close.
pub fn replaced(mode: Mode, born: Birth, fd: i32, origin: Origin) {
    if mode == Mode::Track && fd >= 0 {
        emfile::closing(fd);
        let _ = TABLE.remove(fd, fork_generation(), None);
    }
    created(mode, born, fd, || origin);
}

/// Marks an open fd as wrapped in a stdio stream (`fdopen`).
pub fn became_stream(mode: Mode, fd: i32) {
    if mode == Mode::Track {
        TABLE.update(fd, fork_generation(), |r| r.stream = true);
    }
}

/// Marks an open fd as owned by a directory stream (`fdopendir`).
pub fn became_dir(mode: Mode, fd: i32) {
    if mode == Mode::Track {
        TABLE.update(fd, fork_generation(), |r| r.kind = FdKind::Dir);
    }
}

/// Whether the program is about to close one of fdguard's own fds. The hook then answers
/// `EBADF` without closing it: without fdguard that number would not be open.
#[inline(always)]
pub fn is_own(mode: Mode, fd: i32) -> bool {
    mode == Mode::Track && OWN.contains(fd)
}

/// What the table knew about an fd being released, needed after the real call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    WasOpen,
    /// Not open in the table; the stack that released the number before, if recorded.
    NotOpen(Option<StackId>),
    /// Nothing to say (passed through, fdguard's own fd, or the entry was busy).
    Unknown,
}

/// An fd is about to be released: forget it *before* the real call, since another thread can
/// get the same number the moment the kernel frees it.
#[inline(always)]
pub fn releasing(mode: Mode, fd: i32) -> Released {
    match mode {
        Mode::Pass => Released::Unknown,
        Mode::Own => {
            OWN.remove(fd);
            Released::Unknown
        }
        Mode::Track => {
            emfile::closing(fd);
            forget(fd)
        }
    }
}

/// The usual release: one of the program's fds, not a listener, no release stacks kept. Such a
/// release touches neither libc nor `errno`; `None` (nothing changed) when it is not one.
#[inline(always)]
pub fn releasing_plainly(mode: Mode, fd: i32) -> Option<Released> {
    let plain = mode == Mode::Track
        && !OWN.may_list(fd)
        && !GUARD.maybe_listener(fd)
        && !CLOSE_STACKS.load(Ordering::Relaxed);
    if !plain {
        return None;
    }
    Some(forget_with(fd, None))
}

#[inline(always)]
fn forget(fd: i32) -> Released {
    let release_stack = if CLOSE_STACKS.load(Ordering::Relaxed) {
        stack::capture(DEPTH.load(Ordering::Relaxed))
    } else {
        None
    };
    forget_with(fd, release_stack)
}

#[inline(always)]
fn forget_with(fd: i32, release_stack: Option<StackId>) -> Released {
    match TABLE.remove(fd, fork_generation(), release_stack) {
        Remove::WasOpen => {
            THRESHOLD.after_release();
            Released::WasOpen
        }
        Remove::Busy => {
            COUNTERS.skipped.fetch_add(1, Ordering::Relaxed);
            Released::Unknown
        }
        Remove::NotOpen { last_release } => Released::NotOpen(last_release),
        Remove::OutOfRange => Released::NotOpen(None),
    }
}

/// A release failed with `EBADF` on an fd fdguard did not have open: a bad (often double) close.
pub fn bad_close(mode: Mode, call: Call, fd: i32, before: Released, errno: i32) {
    let Released::NotOpen(released_by) = before else {
        return;
    };
    if mode != Mode::Track || errno != libc::EBADF || fd < 0 {
        return;
    }
    BAD_CLOSES.push(BadClose {
        fd,
        call,
        tid: guard::tid(),
        stack: stack::capture(DEPTH.load(Ordering::Relaxed).max(1)),
        released_by,
    });
    trigger::request(Reason::BadClose);
}

/// Every fd in `lo..=hi` is about to be released (`close_range`, `closefrom`).
pub fn releasing_range(mode: Mode, lo: u32, hi: u32) {
    let lo = i32::try_from(lo).unwrap_or(i32::MAX);
    let hi = i32::try_from(hi).unwrap_or(i32::MAX);
    match mode {
        Mode::Pass => {}
        Mode::Own => OWN.remove_range(lo, hi),
        Mode::Track => {
            // Only numbers the table ever held are visited, so close_range(3, ~0U) costs what the
            // program has open, not four billion steps.
            let mut open = [0i32; 256];
            loop {
                let mut n = 0;
                TABLE.for_each_open(lo, hi, |fd, _| {
                    if let Some(slot) = open.get_mut(n) {
                        *slot = fd;
                        n += 1;
                    }
                });
                for fd in &open[..n] {
                    let _ = forget(*fd);
                }
                if n < open.len() {
                    break;
                }
            }
            OWN.remove_range(lo, hi);
            emfile::closing_range(lo, hi);
        }
    }
}

/// After `fcloseall`: stream fds that are gone now are forgotten. glibc's `fcloseall` flushes
/// streams without closing their fds, other libcs close them; asking the kernel covers both.
pub fn streams_flushed(mode: Mode) {
    if mode != Mode::Track {
        return;
    }
    let mut gone = [0i32; 256];
    let mut n = 0;
    TABLE.for_each_open(0, i32::MAX, |fd, rec| {
        if rec.stream
            && !os::fd::fd_is_open(fd)
            && let Some(slot) = gone.get_mut(n)
        {
            *slot = fd;
            n += 1;
        }
    });
    for fd in &gone[..n] {
        let _ = forget(*fd);
    }
}

/// A shared object was unloaded: unwind rules and resolved names for its addresses are stale.
pub fn code_unmapped() {
    stack::code_unmapped();
    crate::symcache::clear();
}

/// The program changed its own `RLIMIT_NOFILE`.
pub fn limit_changed(mode: Mode) {
    if mode == Mode::Track {
        THRESHOLD.set_limit(os::process::nofile_limit().0);
    }
}

/// A call failed; running out of fds triggers an `emfile` report, at most one per interval.
#[inline]
pub fn failed(mode: Mode, call: Call, errno: i32) {
    if mode == Mode::Track && (errno == libc::EMFILE || errno == libc::ENFILE) {
        out_of_fds(call, errno);
    }
}

/// `accept` failed: true (and claimed) if an `emfile` report is due. The accept guard asks for
/// it (`emfile::accept_failed`) once it has counted the failure, which the report then shows.
#[cold]
pub fn accept_failed(mode: Mode, call: Call, errno: i32) -> bool {
    mode == Mode::Track
        && (errno == libc::EMFILE || errno == libc::ENFILE)
        && claim_emfile_report(call, errno)
}

#[cold]
fn out_of_fds(call: Call, errno: i32) {
    if claim_emfile_report(call, errno) {
        trigger::request(Reason::Emfile);
    }
}

/// True (and the call and errno recorded) if an `emfile` report is due: one per interval.
fn claim_emfile_report(call: Call, errno: i32) -> bool {
    let now = os::clock::coarse_ns().max(1);
    let last = EMFILE_LAST_NS.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < EMFILE_INTERVAL_NS.load(Ordering::Relaxed) {
        return false;
    }
    let claimed = EMFILE_LAST_NS
        .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok();
    if claimed {
        EMFILE_CALL.store(call as u8, Ordering::Relaxed);
        EMFILE_ERRNO.store(errno, Ordering::Relaxed);
    }
    claimed
}

/// The call (and errno) behind the latest `emfile` report.
pub fn emfile_trigger() -> (Call, i32) {
    (
        Call::from_u8(EMFILE_CALL.load(Ordering::Relaxed)).unwrap_or(Call::Untracked),
        EMFILE_ERRNO.load(Ordering::Relaxed),
    )
}

/// Which fd numbers a report probes, and in batches of how many: up to the soft limit (fds the
/// program can have) and the highest number fdguard ever saw (fds from before a lowered
/// limit), in batches no larger than `poll` accepts under that limit.
pub fn probe_bounds() -> (i32, usize) {
    let soft = os::process::nofile_limit().0;
    let upto = (soft.min(1 << 24) as i64)
        .max(TABLE.highest_fd() as i64 + 1)
        .max(3);
    (upto as i32, soft.clamp(1, 4096) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_of_an_unknown_fd_names_its_source() {
        let o = Origin::duplicate_of(Call::Dup, 1_000_000);
        assert_eq!(o.detail, Detail::FromFd(1_000_000));
        assert_eq!(o.call, Call::Dup);
    }
}
