//! `SymbolLog`: resolved stacks, kept across reports in memory shared with the report children.
//!
//! # Why
//! Reports are symbolized in a report child (`child`, `dumper`), which starts from the program's
//! memory: whatever a previous child parsed is gone, and re-reading debug info for every report
//! costs up to a second. A `MAP_SHARED` anonymous mapping made at load is the one piece of
//! memory a child can write and the program's process can read, with no fd: each child appends
//! the stacks it resolved, and the next one starts from them.
//!
//! The log is append-only, written by one report child at a time (children take turns, see
//! `child::take_turn`), with its length published last. A fork child of the program gets a
//! private copy (`unshare_after_fork`), since its stack ids may diverge from the parent's from
//! then on.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::table::StackId;
use fdguard_core::report::Frame;

/// Bytes for entries (virtual; untouched pages cost nothing).
const CAPACITY: usize = 32 << 20;
/// The first 8 bytes hold the length of the log (an `AtomicUsize`).
const HEADER: usize = 8;

static BASE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

fn map_shared() -> *mut u8 {
    // SAFETY: anonymous shared mapping with no address hint; checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            HEADER + CAPACITY,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Creates the log (at load). Without it, reports still work, only slower.
pub fn init() {
    BASE.store(map_shared(), Ordering::Release);
}

fn len_word() -> Option<&'static AtomicUsize> {
    let base = BASE.load(Ordering::Acquire);
    // SAFETY: a non-null BASE is a live, page-aligned mapping whose first 8 bytes are only ever
    // accessed as this AtomicUsize; it is never unmapped while in use.
    (!base.is_null()).then(|| unsafe { &*base.cast::<AtomicUsize>() })
}

fn bytes(len: usize) -> &'static [u8] {
    let base = BASE.load(Ordering::Acquire);
    if base.is_null() {
        return &[];
    }
    // SAFETY: [HEADER, HEADER+len) was written before `len` was published (Release) and read
    // after it was loaded (Acquire); appended bytes are never rewritten, only the log cleared.
    unsafe { std::slice::from_raw_parts(base.add(HEADER), len.min(CAPACITY)) }
}

/// In a fork child of the program: a private copy of the log so far.
pub fn unshare_after_fork() {
    let (Some(len), Some(fresh)) = (len_word(), Some(map_shared())) else {
        return;
    };
    if fresh.is_null() {
        BASE.store(std::ptr::null_mut(), Ordering::Release);
        return;
    }
    let n = len.load(Ordering::Acquire).min(CAPACITY);
    // SAFETY: both mappings are live and at least HEADER + n bytes long; they do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes(n).as_ptr(), fresh.add(HEADER), n);
        (*fresh.cast::<AtomicUsize>()).store(n, Ordering::Release);
    }
    BASE.store(fresh, Ordering::Release);
}

/// Forgets everything (after `dlclose`: an address may now belong to another object).
pub fn clear() {
    if let Some(len) = len_word() {
        len.store(0, Ordering::Release);
    }
}

/// Every stack resolved so far. Entries are `id \t frames-as-JSON \n` (JSON escapes any
/// newline inside a name, so an entry is one line).
pub fn load() -> HashMap<StackId, Vec<Frame>> {
    let Some(len) = len_word() else {
        return HashMap::new();
    };
    String::from_utf8_lossy(bytes(len.load(Ordering::Acquire)))
        .lines()
        .filter_map(|line| {
            let (id, frames) = line.split_once('\t')?;
            Some((
                StackId(id.parse().ok()?),
                serde_json::from_str(frames).ok()?,
            ))
        })
        .collect()
}

/// Adds resolved stacks (from a report child; one writer at a time). Stops when full.
pub fn append(entries: &[(StackId, Vec<Frame>)]) {
    let Some(len) = len_word() else { return };
    let base = BASE.load(Ordering::Acquire);
    let mut n = len.load(Ordering::Acquire);
    for (id, frames) in entries {
        let Ok(json) = serde_json::to_string(frames) else {
            continue;
        };
        let line = format!("{}\t{json}\n", id.0);
        if n + line.len() > CAPACITY {
            break;
        }
        // SAFETY: [HEADER+n, HEADER+n+line.len()) is inside the mapping and beyond the
        // published length, so no reader looks at it until `len` is stored below.
        unsafe {
            std::ptr::copy_nonoverlapping(line.as_ptr(), base.add(HEADER + n), line.len());
        }
        n += line.len();
    }
    len.store(n, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log is one per process: the tests that use it take turns.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn frames_round_trip_through_the_log() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let frames = vec![
            Frame {
                addr: 0x55d4c1234567,
                module: Some("/srv/app".into()),
                offset: Some(0x1234),
                function: Some("app::Loader::open(char const*)\n\t".into()),
                file: Some("src/loader.cpp".into()),
                line: Some(42),
            },
            Frame {
                addr: 0x7f00,
                ..Frame::default()
            },
        ];
        init();
        append(&[(StackId(3), frames.clone())]);
        assert_eq!(load()[&StackId(3)], frames);
    }

    #[test]
    fn log_appends_loads_and_clears() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        init();
        append(&[(
            StackId(7),
            vec![Frame {
                addr: 1,
                ..Frame::default()
            }],
        )]);
        append(&[(StackId(9), vec![])]);
        let m = load();
        assert_eq!(m[&StackId(7)][0].addr, 1);
        assert!(m[&StackId(9)].is_empty());
        clear();
        assert!(load().is_empty());
    }
}
