//! Names of Java frames, kept in fdguard's own memory: for each (jmethodID, bytecode index)
//! seen in a capture, the method as `package.Class.method`, its source file and the line.
//!
//! # Why here, and when
//! A report is written by a copy of the process, which cannot call into the JVM (its threads
//! are not there), and a jmethodID or a bytecode index means nothing without the JVM. So names
//! are asked of the JVM (JVM TI) in the thread that captured the frame, the first time that
//! pair is seen, and only when that thread may call JVM TI (a Java thread in native code: see
//! `super::capture`); the report child only reads them here.
//!
//! # How
//! A fixed open-addressing table of `SLOTS` pairs, mapped on first use, lock-free: a slot's key
//! word (the method and the index packed into 64 bits, `key`) is claimed with a CAS, its value
//! word (the names' id in `NAMES` and the line) stored after; a value of 0 is "not named yet".
//! Two threads naming the same new pair both ask the JVM and store the same value. The
//! strings (`package.Class.method`, NUL, file) are interned (`intern`), so the methods of one
//! class share nothing but the table's slots, and a method seen at many lines its string.
//! When the table or the strings are full, new pairs stay unnamed: their frames are left out
//! of reports, never named wrongly.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

use fdguard_core::report::Frame;

use super::jvmti::{Jni, Jvmti, LineEntry};
use crate::intern::Interner;
use crate::os::mem::LazySlice;

/// Pairs named at most: 256 Ki slots of 16 bytes, mapped as used.
const SLOTS: usize = 1 << 18;
const MAX_PROBES: usize = 32;

static KEYS: LazySlice<AtomicU64, SLOTS> = LazySlice::new();
static VALUES: LazySlice<AtomicU64, SLOTS> = LazySlice::new();

/// `package.Class.method`, NUL, source file: up to ~64k of them in 16 MiB.
static NAMES: Interner<{ 1 << 10 }, { 73 << 10 }, { 16 << 20 }> = Interner::new();

/// The longest name kept (class and method); longer ones are cut.
const NAME_MAX: usize = 1024;

/// A captured frame's key: the jmethodID (a user-space pointer, below 2^47) with the bytecode
/// index plus one in the top 16 bits (0 for "none": a native method). `None` for a pointer
/// that does not fit, never stored.
pub fn key(method: usize, bci: i32) -> Option<u64> {
    let method = method as u64;
    if method == 0 || method >> 47 != 0 {
        return None;
    }
    let at = u64::try_from(bci).map_or(0, |b| (b + 1) & 0xffff);
    Some(method | (at << 48))
}

fn bci_of(key: u64) -> Option<i64> {
    match key >> 48 {
        0 => None,
        at => Some(at as i64 - 1),
    }
}

fn probes(key: u64) -> impl Iterator<Item = usize> {
    let h = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize;
    (0..MAX_PROBES).map(move |i| (h + i) & (SLOTS - 1))
}

/// The value stored for `key`: 0 when it is not named (yet).
fn value(key: u64) -> u64 {
    let (Some(keys), Some(values)) = (KEYS.get(), VALUES.get()) else {
        return 0;
    };
    for i in probes(key) {
        match keys[i].load(Ordering::Acquire) {
            0 => return 0,
            k if k == key => return values[i].load(Ordering::Acquire),
            _ => {}
        }
    }
    0
}

/// Stores `v` for `key` (a no-op when the table is full).
fn store(key: u64, v: u64) {
    let (Some(keys), Some(values)) = (KEYS.get_or_map(), VALUES.get_or_map()) else {
        return;
    };
    for i in probes(key) {
        let claimed = match keys[i].compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(k) => k == key,
        };
        if claimed {
            values[i].store(v, Ordering::Release);
            return;
        }
    }
}

/// True if the frame's names are known (the hook's check for each frame: a few loads).
#[inline]
pub fn is_named(key: u64) -> bool {
    value(key) != 0
}

/// Asks the JVM for the names of the frame `key` stands for and keeps them. Only in a Java
/// thread in native code, `jvmti` and `jni` its environments. Allocates nothing of fdguard's
/// (the JVM allocates its answers and takes them back).
pub fn name(jvmti: Jvmti, jni: Jni, key: u64) {
    let method = (key & ((1 << 48) - 1)) as usize as *mut c_void;
    let Ok(class) = jvmti.declaring_class(method) else {
        return;
    };
    let mut text = [0u8; 2 * NAME_MAX];
    let mut n = 0;
    let mut put = |bytes: &mut dyn Iterator<Item = u8>| {
        for b in bytes.take(NAME_MAX) {
            if let Some(slot) = text.get_mut(n) {
                *slot = b;
                n += 1;
            }
        }
    };
    let named = jvmti.class_signature(class).and_then(|sig| {
        let name = jvmti.method_name(method)?;
        put(&mut class_name(sig.bytes()));
        put(&mut b".".iter().copied());
        put(&mut name.bytes().iter().copied());
        Ok(())
    });
    let file = jvmti.source_file(class);
    jni.delete_local_ref(class);
    if named.is_err() {
        return;
    }
    put(&mut b"\0".iter().copied());
    if let Ok(file) = &file {
        put(&mut file.bytes().iter().copied());
    }
    let line = bci_of(key)
        .and_then(|bci| Some(line_at(jvmti.line_table(method).ok()?.as_slice(), bci)))
        .unwrap_or(0);
    if let Some(id) = NAMES.intern(&text[..n]) {
        store(key, ((u64::from(id) + 1) << 32) | u64::from(line));
    }
}

/// `Ljava/util/Map$Entry;` as Java prints it: `java.util.Map$Entry`.
fn class_name(signature: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let inner = signature
        .strip_prefix(b"L")
        .and_then(|s| s.strip_suffix(b";"))
        .unwrap_or(signature);
    inner.iter().map(|b| if *b == b'/' { b'.' } else { *b })
}

/// The line of bytecode index `bci`: the entry starting last at or before it (0: unknown).
fn line_at(table: &[LineEntry], bci: i64) -> u32 {
    table
        .iter()
        .filter(|e| e.start <= bci)
        .max_by_key(|e| e.start)
        .map_or(0, |e| u32::try_from(e.line).unwrap_or(0))
}

/// The report's frame for `key` (report child): `None` when it was never named.
pub fn frame(key: u64) -> Option<Frame> {
    let v = value(key);
    let id = u32::try_from((v >> 32).checked_sub(1)?).ok()?;
    let text = NAMES.get(id)?;
    let (function, file) = match text.iter().position(|b| *b == 0) {
        Some(nul) => (&text[..nul], &text[nul + 1..]),
        None => (text, &b""[..]),
    };
    let line = (v & 0xffff_ffff) as u32;
    Some(Frame {
        function: Some(String::from_utf8_lossy(function).into_owned()),
        file: (!file.is_empty()).then(|| String::from_utf8_lossy(file).into_owned()),
        line: (line != 0).then_some(line),
        module: Some("java".to_string()),
        ..Frame::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pack_method_and_index() {
        let m = 0x7f12_3456_7890;
        let k = key(m, 10).unwrap();
        assert_eq!(k & ((1 << 48) - 1), m as u64);
        assert_eq!(bci_of(k), Some(10));
        assert_eq!(bci_of(key(m, -3).unwrap()), None);
        assert_eq!(bci_of(key(m, 65534).unwrap()), Some(65534));
        assert_ne!(key(m, 0), key(m, -1));
        assert_eq!(key(0, 1), None);
        assert_eq!(key(1 << 47, 1), None);
    }

    #[test]
    fn class_names_and_lines() {
        let name: Vec<u8> = class_name(b"Ljava/util/Map$Entry;").collect();
        assert_eq!(name, b"java.util.Map$Entry");
        let table = [
            LineEntry { start: 0, line: 7 },
            LineEntry { start: 9, line: 9 },
            LineEntry { start: 4, line: 8 },
        ];
        assert_eq!(line_at(&table, 0), 7);
        assert_eq!(line_at(&table, 5), 8);
        assert_eq!(line_at(&table, 30), 9);
        assert_eq!(line_at(&[], 3), 0);
    }

    #[test]
    fn stored_names_come_back_as_frames() {
        let k = key(0x1000, 4).unwrap();
        assert!(!is_named(k) && frame(k).is_none());
        let id = NAMES.intern(b"Leak.readBatch\0Leak.java").unwrap();
        store(k, ((u64::from(id) + 1) << 32) | 10);
        assert!(is_named(k));
        let f = frame(k).unwrap();
        assert_eq!(f.function.as_deref(), Some("Leak.readBatch"));
        assert_eq!(f.file.as_deref(), Some("Leak.java"));
        assert_eq!(
            (f.line, f.module.as_deref(), f.addr),
            (Some(10), Some("java"), 0)
        );
        assert!(frame(key(0x1000, 5).unwrap()).is_none());
    }
}
