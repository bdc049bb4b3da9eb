//! CPython frames as captured (a code object, an instruction offset) to function, file and
//! line.
//!
//! # When
//! In the hook, the first time a stack is interned (`settle`, from `stack`), if the thread's
//! frames are at rest (it does not hold the GIL: see `python`), so that its code objects are
//! certainly alive and whole: `qualname\0filename` goes to an interner (`NAMES`) and each frame
//! keeps that id and its line in place of the instruction offset. Reports then need no object
//! of the program's: a code object freed since (a function compiled by `exec` and dropped, or
//! every one of them once the interpreter finalized, before an exit report) cannot be misread.
//! Frames captured with the GIL held are not settled: the report child reads them from its copy
//! of the code objects (`resolve`), a frozen copy (one thread, nothing running Python) where
//! each object must still be of its type (`ob_type` is `PyCode_Type`, its strings `str`s, its
//! location table `bytes`) and every read goes through the kernel (`memory::copy`), so that a
//! pointer to memory unmapped since fails instead of faulting. fdguard decodes the location
//! table itself rather than call `PyCode_Addr2Line`, which reads with plain loads.
//!
//! # Cost
//! Settling reads a few fields and strings of each frame's code object and walks its location
//! table up to the instruction: once per distinct stack, never for a stack seen before.

use fdguard_core::report::Frame;

use super::RawFrame;
use super::memory::Vouched;
use super::python::{Python, python};
use crate::guard;
use crate::intern::Interner;

/// The language a frame is in, as reports say it (`Frame::module`).
const MODULE: &str = "python";

/// The most bytes kept of a name or a file name; longer ones are cut.
const MAX_NAME: usize = 1024;
/// The longest location table read (a module's top-level code of ~100k lines).
const MAX_LINETABLE: usize = 1 << 20;

/// `qualname\0filename` of the code objects of settled frames.
static NAMES: Interner<{ 1 << 10 }, { 73 << 10 }, { 16 << 20 }> = Interner::new();

/// A settled frame's `at`: 1 + its names' id in the high half, 1 + its line in the low half (0:
/// no line). A captured offset is below 2^32 (`raw_offset`), so the two never meet.
const SETTLED: u32 = 32;

/// An instruction offset as captured: a frame that had not started has its instruction before
/// the bytecode, which wraps; kept below 2^32 (an offset no bytecode has) so that it cannot look
/// settled.
pub fn raw_offset(at: usize) -> usize {
    at.min(u32::MAX as usize)
}

/// Names and lines for frames of a stack seen for the first time, in the hook (see the
/// module's documentation); false, leaving them as captured, unless the frames are at rest.
pub fn settle(frames: &mut [RawFrame]) -> bool {
    let Some(py) = python() else {
        return false;
    };
    if !py.at_rest() {
        return false;
    }
    let mut mem = Vouched::new(guard::tid());
    // SAFETY: at rest, every frame's code object is alive, held by its frame, with the strings
    // and bytes it points to; each is read only after its type was checked.
    unsafe { mem.vouch_for_all() };
    let mut names = [0u8; 2 * MAX_NAME + 1];
    for f in frames.iter_mut() {
        let Some((len, line)) = describe(py, &mem, *f, &mut names) else {
            continue;
        };
        let Some(id) = names.get(..len).and_then(|n| NAMES.intern(n)) else {
            continue;
        };
        let line = line.map_or(0, |l| l.min(u32::MAX - 1) as usize + 1);
        f.at = ((id as usize + 1) << SETTLED) | line;
    }
    true
}

/// Report frames for captured ones, innermost first; frames whose code object is gone are
/// left out.
pub fn resolve(frames: &[RawFrame]) -> Vec<Frame> {
    let Some(py) = python() else {
        return Vec::new();
    };
    // Once the interpreter finalized (an exit report), the copy's code objects are freed
    // memory: only settled frames are named.
    let live = py.running();
    // Nothing vouched for: every read of the copy's objects is a copy by the kernel.
    let mem = Vouched::new(std::process::id());
    let mut names = [0u8; 2 * MAX_NAME + 1];
    frames
        .iter()
        .filter_map(|f| match f.at >> SETTLED {
            0 => {
                let (len, line) = live.then(|| describe(py, &mem, *f, &mut names)).flatten()?;
                Some(frame(names.get(..len)?, line))
            }
            id => {
                let names = NAMES.get(u32::try_from(id - 1).ok()?)?;
                let line = (f.at & u32::MAX as usize).checked_sub(1);
                Some(frame(names, line.map(|l| l as u32)))
            }
        })
        .collect()
}

/// A report frame from `qualname\0filename` and a line.
fn frame(names: &[u8], line: Option<u32>) -> Frame {
    let (function, file) = match names.iter().position(|b| *b == 0) {
        Some(nul) => (&names[..nul], &names[nul + 1..]),
        None => (names, &[][..]),
    };
    let text = |b: &[u8]| (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned());
    Frame {
        module: Some(MODULE.into()),
        function: text(function),
        file: text(file),
        line,
        ..Frame::default()
    }
}

/// A frame's `qualname\0filename` into `out` (its length) and its line, if its code object is
/// one (read through `mem`).
fn describe(
    py: &Python,
    mem: &Vouched,
    raw: RawFrame,
    out: &mut [u8; 2 * MAX_NAME + 1],
) -> Option<(usize, Option<u32>)> {
    let l = &py.layout;
    let fields = [
        l.ob_type,
        l.co_qualname,
        l.co_name,
        l.co_filename,
        l.co_linetable,
        l.ob_size,
        l.co_firstlineno,
    ];
    let read = fields.iter().max().map(|m| m + 8)?;
    let [ty, qualname, name, filename, linetable, size, first] =
        mem.words(raw.code, read, fields)?;
    if ty != py.code_type {
        return None;
    }
    let (function, file) = out.split_at_mut(MAX_NAME);
    let n = text(py, mem, qualname, function).or_else(|| text(py, mem, name, function))?;
    let (nul, file) = file.split_first_mut()?;
    *nul = 0;
    let m = text(py, mem, filename, file).unwrap_or(0);
    // Within the bytecode (`ob_size` counts 2-byte code units); a frame that had not started
    // has no line.
    let line = (raw.at < size.saturating_mul(2))
        .then(|| {
            let [ty, len] = mem.words(linetable, l.bytes_sval, [l.ob_type, l.ob_size])?;
            (ty == py.bytes_type).then_some(())?;
            let table = Chunks::new(mem, linetable + l.bytes_sval, len.min(MAX_LINETABLE));
            // `co_firstlineno` is an int: the low half of the word read there.
            line_at(table, first as u32 as i32, raw.at)
        })
        .flatten();
    // The names and the file name, contiguous: `function` is followed by `file`'s start.
    out.copy_within(MAX_NAME..MAX_NAME + 1 + m, n);
    Some((n + 1 + m, line))
}

/// A compact `str` object's text as UTF-8 into `out` (cut to its length), if `addr` is one (all
/// names and file names are compact). Its length.
fn text(py: &Python, mem: &Vouched, addr: usize, out: &mut [u8]) -> Option<usize> {
    let l = &py.layout;
    let ascii = l.str_ascii_size;
    let [ty, length, state, utf8_len, utf8] = mem.words(
        addr,
        l.str_compact_size,
        [l.ob_type, l.str_length, l.str_state, ascii, ascii + 8],
    )?;
    if ty != py.str_type {
        return None;
    }
    // `state`'s low bits: interned (2), kind (3), compact, ascii.
    let (kind, compact, is_ascii) = ((state >> 2) & 7, state & 0x20 != 0, state & 0x40 != 0);
    if !compact {
        return None;
    }
    let copied = |from: usize, len: usize, out: &mut [u8]| {
        let n = len.min(out.len());
        mem.read(from, out.get_mut(..n)?).then_some(n)
    };
    if is_ascii {
        return copied(addr + ascii, length, out);
    }
    if utf8 != 0 {
        return copied(utf8, utf8_len, out);
    }
    // UCS-1, -2 or -4 characters after the compact header, encoded here.
    let width = kind;
    if !matches!(width, 1 | 2 | 4) {
        return None;
    }
    let mut n = 0;
    let units = Chunks::new(mem, addr + l.str_compact_size, length.min(MAX_NAME) * width);
    let mut code = [0u8; 4];
    for (i, b) in units.enumerate() {
        code[i % width] = b;
        if i % width + 1 < width {
            continue;
        }
        let c = char::from_u32(u32::from_le_bytes(code)).unwrap_or(char::REPLACEMENT_CHARACTER);
        let Some(room) = out.get_mut(n..n + c.len_utf8()) else {
            break;
        };
        c.encode_utf8(room);
        n += c.len_utf8();
    }
    Some(n)
}

/// The bytes at `[addr, addr + len)`, read through `mem` a chunk at a time (no allocation: the
/// hook reads location tables this way). Ends early where memory cannot be read.
struct Chunks<'a> {
    mem: &'a Vouched,
    next: usize,
    end: usize,
    buf: [u8; 512],
    at: usize,
    filled: usize,
}

impl<'a> Chunks<'a> {
    fn new(mem: &'a Vouched, addr: usize, len: usize) -> Self {
        Self {
            mem,
            next: addr,
            end: addr.saturating_add(len),
            buf: [0; 512],
            at: 0,
            filled: 0,
        }
    }
}

impl Iterator for Chunks<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.at == self.filled {
            let n = (self.end - self.next).min(self.buf.len());
            if n == 0 || !self.mem.read(self.next, &mut self.buf[..n]) {
                return None;
            }
            self.next += n;
            (self.at, self.filled) = (0, n);
        }
        let b = self.buf.get(self.at).copied();
        self.at += 1;
        b
    }
}

/// The line of the instruction at byte offset `at`, from a location table in the format of
/// CPython 3.11 and later (`Objects/locations.md`): entries of a first byte
/// `1 code:4 length-1:3` (length in 2-byte code units) and the bytes after it up to the next
/// first byte (bit 7 set); each entry moves the line by a delta its code says. `None` for an
/// instruction without a location, or past the table.
pub fn line_at(table: impl Iterator<Item = u8>, first_line: i32, at: usize) -> Option<u32> {
    let target = at / 2;
    let mut line = i64::from(first_line);
    let mut unit = 0usize;
    let mut table = table.peekable();
    while let Some(b) = table.next() {
        if b & 0x80 == 0 {
            return None;
        }
        let code = (b >> 3) & 15;
        let length = usize::from(b & 7) + 1;
        line += match code {
            // Long form and no-column form: a signed varint.
            13 | 14 => signed_varint(&mut table)?,
            // One-line forms.
            10..=12 => i64::from(code - 10),
            // Short forms and "no location".
            _ => 0,
        };
        if target < unit + length {
            return (code != 15).then(|| u32::try_from(line).ok()).flatten();
        }
        unit += length;
        while table.next_if(|b| b & 0x80 == 0).is_some() {}
    }
    None
}

/// CPython's location varint: 6 bits a byte, least significant first, bit 6 "more"; signed as
/// (magnitude << 1 | sign).
fn signed_varint(bytes: &mut impl Iterator<Item = u8>) -> Option<i64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes.next()?;
        value |= u64::from(b & 63).checked_shl(shift)?;
        shift += 6;
        if b & 64 == 0 {
            break;
        }
    }
    let magnitude = i64::try_from(value >> 1).ok()?;
    Some(if value & 1 != 0 {
        -magnitude
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `co_linetable` and `co_lines()` of a function compiled by CPython 3.11.7:
    /// ```python
    /// def f(x):
    ///     a = 1
    ///     if x:
    ///         b = open(
    ///             "/dev/null")
    ///     for i in range(3):
    ///         pass
    ///     return [y for y in range(2)]
    /// ```
    const TABLE: [u8; 83] = [
        128, 0, 216, 8, 9, 128, 65, 216, 7, 8, 240, 0, 2, 5, 25, 221, 12, 16, 216, 12, 23, 241, 3,
        1, 13, 25, 244, 0, 1, 13, 25, 136, 1, 229, 13, 18, 144, 49, 137, 88, 140, 88, 240, 0, 1, 5,
        13, 240, 0, 1, 5, 13, 136, 1, 216, 8, 12, 216, 11, 32, 208, 11, 32, 149, 117, 152, 81, 145,
        120, 148, 120, 208, 11, 32, 209, 11, 32, 212, 11, 32, 208, 4, 32,
    ];
    const LINES: [(usize, usize, u32); 28] = [
        (0, 2, 1),
        (2, 4, 2),
        (4, 6, 2),
        (6, 8, 3),
        (8, 10, 3),
        (10, 22, 4),
        (22, 24, 5),
        (24, 28, 4),
        (28, 38, 4),
        (38, 40, 4),
        (40, 52, 6),
        (52, 54, 6),
        (54, 58, 6),
        (58, 68, 6),
        (68, 70, 6),
        (70, 72, 6),
        (72, 74, 6),
        (74, 76, 7),
        (76, 78, 8),
        (78, 80, 8),
        (80, 92, 8),
        (92, 94, 8),
        (94, 98, 8),
        (98, 108, 8),
        (108, 110, 8),
        (110, 114, 8),
        (114, 124, 8),
        (124, 126, 8),
    ];

    #[test]
    fn lines_agree_with_cpythons_own_co_lines() {
        for (start, end, line) in LINES {
            for at in (start..end).step_by(2) {
                assert_eq!(
                    line_at(TABLE.iter().copied(), 1, at),
                    Some(line),
                    "offset {at}"
                );
            }
        }
        assert_eq!(line_at(TABLE.iter().copied(), 1, 126), None);
        // Another first line moves every line.
        assert_eq!(line_at(TABLE.iter().copied(), 41, 10), Some(44));
    }

    #[test]
    fn no_location_and_bad_tables_give_no_line() {
        // One entry "no location" of one unit, then a short form.
        assert_eq!(line_at([0xf8, 0x80, 0].into_iter(), 7, 0), None);
        assert_eq!(line_at([0xf8, 0x80, 0].into_iter(), 7, 2), Some(7));
        // A continuation byte where a first byte belongs.
        assert_eq!(line_at([0x01].into_iter(), 7, 0), None);
        // A varint cut short.
        assert_eq!(line_at([0xe8, 0x40].into_iter(), 7, 0), None);
        // Long form: line +3 (varint 6), then end line, columns.
        assert_eq!(line_at([0xf0, 6, 0, 1, 1].into_iter(), 7, 0), Some(10));
    }
}
