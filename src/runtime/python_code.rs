//! Report time: CPython frames as captured (a code object, an instruction offset) to function,
//! file and line, read from the report child's copy of the code objects.
//!
//! The copy is frozen (one thread, nothing running Python), so reading its objects needs no
//! GIL; but a code object captured with an fd's creation may have been freed since (a function
//! compiled by `exec` and dropped), so each one must still be a code object (`ob_type` is
//! `PyCode_Type`) and its strings `str`s, and every read goes through the kernel (`memory::copy`)
//! so that a pointer to memory unmapped since fails instead of faulting. fdguard decodes the
//! location table itself rather than call `PyCode_Addr2Line`, which would read the same object
//! with plain loads.

use fdguard_core::report::Frame;

use super::RawFrame;
use super::memory;
use super::python::{Python, python};
use super::python_layout::{Layout, MAX_CODE_READ};

/// The language a frame is in, as reports say it (`Frame::module`).
const MODULE: &str = "python";

/// The longest name or file name read; longer ones are cut.
const MAX_STR: usize = 4096;
/// The longest location table read (a module's top-level code of ~100k lines).
const MAX_LINETABLE: usize = 1 << 20;

/// Report frames for captured ones, innermost first; frames whose code object is gone are
/// left out.
pub fn resolve(frames: &[RawFrame]) -> Vec<Frame> {
    let Some(py) = python() else {
        return Vec::new();
    };
    let me = std::process::id();
    frames.iter().filter_map(|f| frame(py, me, *f)).collect()
}

fn copied(me: u32, addr: usize, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    memory::copy(me, addr, &mut buf).then_some(buf)
}

/// The object at `addr`'s first `len` bytes, if its type is `ty`.
fn object(me: u32, l: &Layout, addr: usize, ty: usize, len: usize) -> Option<Vec<u8>> {
    let head = copied(me, addr, len)?;
    (memory::word_at(&head, l.ob_type) == ty).then_some(head)
}

fn frame(py: &Python, me: u32, raw: RawFrame) -> Option<Frame> {
    let l = &py.layout;
    let code = object(
        me,
        l,
        raw.code,
        py.code_type,
        l.co_code_adaptive.min(MAX_CODE_READ),
    )?;
    let field = |off: usize| memory::word_at(&code, off);
    let string = |off: usize| text(py, me, field(off));
    let function = string(l.co_qualname).or_else(|| string(l.co_name));
    let file = string(l.co_filename);
    // The bytecode's length in bytes: `ob_size` counts 2-byte code units.
    let in_code = raw.at < field(l.ob_size).saturating_mul(2);
    let line = in_code
        .then(|| {
            let table = field(l.co_linetable);
            let head = object(me, l, table, py.bytes_type, l.bytes_sval)?;
            let len = memory::word_at(&head, l.ob_size).min(MAX_LINETABLE);
            let table = copied(me, table + l.bytes_sval, len)?;
            let first = code
                .get(l.co_firstlineno..l.co_firstlineno + 4)
                .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))?;
            line_at(&table, first, raw.at)
        })
        .flatten();
    Some(Frame {
        module: Some(MODULE.into()),
        function,
        file,
        line,
        ..Frame::default()
    })
}

/// A compact `str` object's text (all names and file names are compact), if `addr` is one.
fn text(py: &Python, me: u32, addr: usize) -> Option<String> {
    let l = &py.layout;
    let head = object(me, l, addr, py.str_type, l.str_compact_size)?;
    let len = memory::word_at(&head, l.str_length).min(MAX_STR);
    let state = head.get(l.str_state).copied().unwrap_or(0);
    // `state`'s bits: interned (2), kind (3), compact, ascii.
    let (kind, compact, ascii) = ((state >> 2) & 7, state & 0x20 != 0, state & 0x40 != 0);
    if !compact {
        return None;
    }
    if ascii {
        let bytes = copied(me, addr + l.str_ascii_size, len)?;
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    let (utf8_len, utf8) = (
        memory::word_at(&head, l.str_ascii_size),
        memory::word_at(&head, l.str_ascii_size + 8),
    );
    if utf8 != 0 {
        let bytes = copied(me, utf8, utf8_len.min(MAX_STR * 4))?;
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    let width = usize::from(kind);
    if !matches!(width, 1 | 2 | 4) {
        return None;
    }
    let bytes = copied(me, addr + l.str_compact_size, len * width)?;
    Some(
        bytes
            .chunks_exact(width)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..width].copy_from_slice(c);
                char::from_u32(u32::from_le_bytes(w)).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
    )
}

/// The line of the instruction at byte offset `at`, from a location table in the format of
/// CPython 3.11 and later (`Objects/locations.md`): entries of a first byte
/// `1 code:4 length-1:3` (length in 2-byte code units) and the bytes after it up to the next
/// first byte (bit 7 set); each entry moves the line by a delta its code says. `None` for an
/// instruction without a location, or past the table.
pub fn line_at(table: &[u8], first_line: i32, at: usize) -> Option<u32> {
    let target = at / 2;
    let mut line = i64::from(first_line);
    let mut unit = 0usize;
    let mut i = 0;
    while let Some(&b) = table.get(i) {
        if b & 0x80 == 0 {
            return None;
        }
        let code = (b >> 3) & 15;
        let length = usize::from(b & 7) + 1;
        let mut rest = table.get(i + 1..).unwrap_or_default().iter();
        line += match code {
            // Long form and no-column form: a signed varint.
            13 | 14 => signed_varint(&mut rest)?,
            // One-line forms.
            10..=12 => i64::from(code - 10),
            // Short forms and "no location".
            _ => 0,
        };
        if target < unit + length {
            return (code != 15).then(|| u32::try_from(line).ok()).flatten();
        }
        unit += length;
        i += 1 + table
            .get(i + 1..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| *b & 0x80 == 0)
            .count();
    }
    None
}

/// CPython's location varint: 6 bits a byte, least significant first, bit 6 "more"; signed as
/// (magnitude << 1 | sign).
fn signed_varint<'a>(bytes: &mut impl Iterator<Item = &'a u8>) -> Option<i64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = *bytes.next()?;
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
                assert_eq!(line_at(&TABLE, 1, at), Some(line), "offset {at}");
            }
        }
        assert_eq!(line_at(&TABLE, 1, 126), None);
        // Another first line moves every line.
        assert_eq!(line_at(&TABLE, 41, 10), Some(44));
    }

    #[test]
    fn no_location_and_bad_tables_give_no_line() {
        // One entry "no location" of one unit, then a short form.
        assert_eq!(line_at(&[0xf8, 0x80, 0], 7, 0), None);
        assert_eq!(line_at(&[0xf8, 0x80, 0], 7, 2), Some(7));
        // A continuation byte where a first byte belongs.
        assert_eq!(line_at(&[0x01], 7, 0), None);
        // A varint cut short.
        assert_eq!(line_at(&[0xe8, 0x40], 7, 0), None);
        // Long form: line +3 (varint 6), then end line, columns.
        assert_eq!(line_at(&[0xf0, 6, 0, 1, 1], 7, 0), Some(10));
    }
}
