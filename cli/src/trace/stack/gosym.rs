//! Go's own line table, `.gopclntab`: a program counter to its function, file and line, with
//! the calls the compiler inlined there expanded into frames of their own (innermost first),
//! and the frame size at a pc (what the innermost frame of a system call stub needs).
//!
//! Read here rather than through a crate: none that is kept up names inlined calls from the
//! table's inline trees, and Go's own `debug/gosym` does not either. The layout follows the
//! runtime's reader (`runtime/symtab.go`, `runtime/runtime2.go` in golang/go) for the three
//! layouts since Go 1.16: 1.16-1.17 (magic 0xfffffffa), 1.18-1.19 (0xfffffff0) and 1.20 and
//! later (0xfffffff1). The table stays in a stripped binary (the runtime needs it for stack
//! traces and the garbage collector), so it is found by section name, by its symbol, or by its
//! header.

use super::image::go_minor;

/// The header's first word, per layout.
const MAGIC_116: u32 = 0xffff_fffa;
const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;

/// `_PCDATA_InlTreeIndex` and `_FUNCDATA_InlTree` (runtime/symtabinl.go, funcdata.h).
const PCDATA_INL_TREE_INDEX: usize = 2;
const FUNCDATA_INL_TREE: usize = 3;

/// The most inlined calls expanded at one pc (a table that loops is not followed forever).
const MAX_INLINE_DEPTH: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Go116,
    Go118,
    Go120,
}

/// One source position: a function, and where in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The table of one Go executable, with the bytes the inline trees are read from.
pub struct LineTable {
    format: Format,
    /// `.gopclntab` from its header on.
    data: Vec<u8>,
    quantum: u64,
    nfunc: usize,
    text_start: u64,
    funcnames: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    /// The function table (`functab` followed by the `_func` records), from `pclnOffset`.
    pcln: usize,
    /// Go 1.18 and later: funcdata are offsets from `go:func.*`; this is its address and the
    /// bytes of the section it is in (from that section's start). 1.16 stores addresses.
    funcdata: Option<(u64, Vec<u8>)>,
    /// Where `funcdata`'s section starts (for 1.16's absolute addresses too).
    funcdata_section: u64,
}

/// One function's record (`_func`) and where it is.
struct Func {
    /// Offset of the record in `data`.
    at: usize,
    entry: u64,
}

impl LineTable {
    /// The table from `.gopclntab`'s bytes; `text` is the address of `.text` (used when the
    /// header does not say where the text starts); `rodata` is the section holding the inline
    /// trees with its address, and `gofunc` the address of `go:func.*` (Go 1.18 and later).
    pub fn parse(
        data: Vec<u8>,
        text: u64,
        rodata: Option<(u64, Vec<u8>)>,
        gofunc: Option<u64>,
    ) -> Option<LineTable> {
        let format = match u32::from_le_bytes(data.get(..4)?.try_into().ok()?) {
            MAGIC_116 => Format::Go116,
            MAGIC_118 => Format::Go118,
            MAGIC_120 => Format::Go120,
            _ => return None,
        };
        if data.get(4..6)? != [0, 0] || data.get(7) != Some(&8) {
            return None; // only 64-bit tables (x86-64)
        }
        let quantum = u64::from(data[6]);
        let word = |i: usize| read_u64(&data, 8 + 8 * i);
        let (text_start, rest) = match format {
            Format::Go116 => (text, 2),
            _ => (word(2).filter(|t| *t != 0).unwrap_or(text), 3),
        };
        let offset = |i: usize| word(rest + i).and_then(|o| usize::try_from(o).ok());
        let mut table = LineTable {
            format,
            nfunc: usize::try_from(word(0)?).ok()?,
            quantum,
            text_start,
            funcnames: offset(0)?,
            cutab: offset(1)?,
            filetab: offset(2)?,
            pctab: offset(3)?,
            pcln: offset(4)?,
            funcdata: None,
            funcdata_section: 0,
            data,
        };
        if let Some((base, bytes)) = rodata {
            table.funcdata_section = base;
            table.funcdata = Some((gofunc.unwrap_or(base), bytes));
        }
        // The function table must fit: nfunc + 1 entries.
        table.functab_entry(table.nfunc)?;
        Some(table)
    }

    /// Entry `i` of the function table: the function's entry pc and its record's offset.
    fn functab_entry(&self, i: usize) -> Option<(u64, usize)> {
        match self.format {
            Format::Go116 => {
                let at = self.pcln + 16 * i;
                let entry = read_u64(&self.data, at)?;
                let off = read_u64(&self.data, at + 8)?;
                Some((entry, self.pcln + usize::try_from(off).ok()?))
            }
            _ => {
                let at = self.pcln + 8 * i;
                let entry = read_u32(&self.data, at)?;
                let off = read_u32(&self.data, at + 4)?;
                Some((self.text_start + u64::from(entry), self.pcln + off as usize))
            }
        }
    }

    /// The function holding `pc` (binary search of the function table).
    fn func(&self, pc: u64) -> Option<Func> {
        let (first, _) = self.functab_entry(0)?;
        let (end, _) = self.functab_entry(self.nfunc)?;
        if pc < first || pc >= end {
            return None;
        }
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.functab_entry(mid)?.0 <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (entry, at) = self.functab_entry(lo)?;
        Some(Func { at, entry })
    }

    /// A 32-bit field of a function's record, at `word` (counted in 4-byte words after the
    /// entry, which is 8 bytes in 1.16 and 4 later).
    fn field(&self, f: &Func, word: usize) -> Option<u32> {
        let entry = if self.format == Format::Go116 { 8 } else { 4 };
        read_u32(&self.data, f.at + entry + 4 * (word - 1))
    }

    fn name_off(&self, f: &Func) -> Option<u32> {
        self.field(f, 1)
    }

    fn pcsp(&self, f: &Func) -> Option<u32> {
        self.field(f, 4)
    }

    fn pcfile(&self, f: &Func) -> Option<u32> {
        self.field(f, 5)
    }

    fn pcln(&self, f: &Func) -> Option<u32> {
        self.field(f, 6)
    }

    fn npcdata(&self, f: &Func) -> Option<u32> {
        self.field(f, 7)
    }

    fn cu_offset(&self, f: &Func) -> Option<u32> {
        self.field(f, 8)
    }

    /// The size of the fixed part of a record: pcdata offsets follow it.
    fn record_size(&self) -> usize {
        match self.format {
            Format::Go116 => 44,
            Format::Go118 => 40,
            Format::Go120 => 44,
        }
    }

    fn nfuncdata(&self, f: &Func) -> Option<u8> {
        self.data.get(f.at + self.record_size() - 1).copied()
    }

    /// The offset of the `i`th pcdata table of `f` in `pctab` (0: none).
    fn pcdata(&self, f: &Func, i: usize) -> Option<u32> {
        if i >= self.npcdata(f)? as usize {
            return None;
        }
        read_u32(&self.data, f.at + self.record_size() + 4 * i)
    }

    /// The bytes from the `i`th funcdata of `f` on, in the section they were found in.
    fn funcdata(&self, f: &Func, i: usize) -> Option<&[u8]> {
        if i >= usize::from(self.nfuncdata(f)?) {
            return None;
        }
        let (gofunc, bytes) = self.funcdata.as_ref()?;
        let pcdata_end = f.at + self.record_size() + 4 * self.npcdata(f)? as usize;
        let addr = match self.format {
            Format::Go116 => {
                // Addresses, after the pcdata aligned to 8 bytes.
                let at = pcdata_end.next_multiple_of(8) + 8 * i;
                read_u64(&self.data, at).filter(|a| *a != 0)?
            }
            _ => {
                let off = read_u32(&self.data, pcdata_end + 4 * i)?;
                if off == u32::MAX {
                    return None;
                }
                gofunc + u64::from(off)
            }
        };
        let at = usize::try_from(addr.checked_sub(self.funcdata_section)?).ok()?;
        bytes.get(at..)
    }

    /// The value of the pc-value table at `off` in `pctab` for `pc` in `f` (the runtime's
    /// `pcvalue`): pairs of a zig-zag varint value delta and a varint pc delta, from -1 at
    /// the entry.
    fn value(&self, f: &Func, off: u32, pc: u64) -> Option<i32> {
        if off == 0 {
            return None;
        }
        let mut p = self.data.get(self.pctab + off as usize..)?;
        let (mut at, mut val) = (f.entry, -1i32);
        let mut first = true;
        loop {
            let (delta, n) = uvarint(p)?;
            if delta == 0 && !first {
                return None; // the end: pc is past the table
            }
            first = false;
            p = &p[n..];
            let delta = delta as u32;
            val = val.wrapping_add((-((delta & 1) as i32)) ^ ((delta >> 1) as i32));
            let (pcdelta, n) = uvarint(p)?;
            p = &p[n..];
            at += pcdelta * self.quantum;
            if pc < at {
                return Some(val);
            }
        }
    }

    fn c_string(&self, at: usize) -> Option<String> {
        let bytes = self.data.get(at..)?;
        let end = bytes.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }

    fn name_at(&self, off: u32) -> Option<String> {
        self.c_string(self.funcnames + off as usize)
    }

    /// File and line of `pc` in `f`, from its pcfile and pcln tables.
    fn file_line(&self, f: &Func, pc: u64) -> (Option<String>, Option<u32>) {
        let file = self
            .pcfile(f)
            .and_then(|t| self.value(f, t, pc))
            .and_then(|n| {
                let index = self.cu_offset(f)? as usize + usize::try_from(n).ok()?;
                let off = read_u32(&self.data, self.cutab + 4 * index)?;
                self.c_string(self.filetab + off as usize)
            });
        let line = self
            .pcln(f)
            .and_then(|t| self.value(f, t, pc))
            .and_then(|l| u32::try_from(l).ok());
        (file, line)
    }

    /// The inlined call at `index` of `f`'s inline tree: the called function's name and the
    /// offset from `f`'s entry of an instruction at the call site.
    fn inlined(&self, f: &Func, index: usize) -> Option<(String, u64)> {
        let tree = self.funcdata(f, FUNCDATA_INL_TREE)?;
        // 1.16-1.19: {parent int16, funcID uint8, _ byte, file int32, line int32,
        // func_ int32, parentPc int32}; 1.20: {funcID uint8, _ [3]byte, nameOff int32,
        // parentPc int32, startLine int32}.
        let (size, name, parent_pc) = match self.format {
            Format::Go120 => (16, 4, 8),
            _ => (20, 12, 16),
        };
        let at = size * index;
        let name_off = read_u32(tree, at + name)?;
        let parent_pc = read_u32(tree, at + parent_pc)?;
        Some((self.name_at(name_off)?, u64::from(parent_pc)))
    }

    /// What `pc` is, innermost first: the functions inlined there, then the one that holds
    /// it. Empty when no Go function holds `pc`.
    pub fn positions(&self, pc: u64) -> Vec<Position> {
        self.positions_upto(pc, MAX_INLINE_DEPTH)
    }

    /// The innermost position at `pc` alone (a pc of a goroutine's ancestors, whose inlined
    /// calls have pcs of their own).
    pub fn innermost(&self, pc: u64) -> Option<Position> {
        self.positions_upto(pc, 0).into_iter().next()
    }

    fn positions_upto(&self, pc: u64, inlined: usize) -> Vec<Position> {
        let Some(f) = self.func(pc) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut at = pc;
        let index_table = self.pcdata(&f, PCDATA_INL_TREE_INDEX).unwrap_or(0);
        while out.len() <= inlined {
            let Some(index) = self
                .value(&f, index_table, at)
                .and_then(|i| usize::try_from(i).ok())
            else {
                break;
            };
            let Some((function, parent_pc)) = self.inlined(&f, index) else {
                break;
            };
            let (file, line) = self.file_line(&f, at);
            out.push(Position {
                function,
                file,
                line,
            });
            at = f.entry + parent_pc;
        }
        if out.len() <= inlined {
            let (file, line) = self.file_line(&f, at);
            out.push(Position {
                function: self
                    .name_off(&f)
                    .and_then(|o| self.name_at(o))
                    .unwrap_or_else(|| "?".to_string()),
                file,
                line,
            });
        }
        out
    }

    /// The size of the frame at `pc` (the stack pointer's distance from the return address
    /// minus 8: 0 in a function that has not pushed anything, such as an assembly system
    /// call stub); `None` outside Go's functions.
    pub fn frame_size(&self, pc: u64) -> Option<u64> {
        let f = self.func(pc)?;
        let sp = self.value(&f, self.pcsp(&f)?, pc)?;
        u64::try_from(sp).ok()
    }
}

/// Go's unsigned varint (`encoding/binary.Uvarint`) and its length.
pub fn uvarint(p: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in p.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// Where `gofunc` is in `runtime.moduledata` for Go release `version` (`go1.19.8`): a
/// stripped binary's only way to its inline trees (Go 1.18 and later).
pub fn gofunc_offset(version: &str) -> Option<usize> {
    let minor = go_minor(version)?;
    // pcHeader, five slices, findfunctab, minpc/maxpc, text/etext, four pairs of section
    // bounds, end, gcdata, gcbss, types/etypes, rodata: then gofunc. 1.20 added the
    // coverage counters' bounds before `end`.
    match minor {
        18 | 19 => Some(304),
        20.. => Some(320),
        _ => None,
    }
}

/// Where a line table starts in `data` when no section or symbol says: the first header of a
/// known layout for 64-bit x86 (magic, two zero bytes, quantum 1, pointer size 8).
pub fn find_header(data: &[u8]) -> Option<usize> {
    let mut from = 0;
    while from + 8 <= data.len() {
        let at = from
            + data[from..].windows(8).position(|w| {
                matches!(
                    u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                    MAGIC_116 | MAGIC_118 | MAGIC_120
                ) && w[4..] == [0, 0, 1, 8]
            })?;
        if at % 8 == 0 {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_as_go_writes_them() {
        assert_eq!(uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(uvarint(&[0x80]), None); // cut short
    }

    #[test]
    fn headers_are_found_aligned_only() {
        let mut data = vec![0u8; 40];
        data[3..11].copy_from_slice(&[0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8]); // unaligned
        data[24..32].copy_from_slice(&[0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8]);
        assert_eq!(find_header(&data), Some(24));
        assert_eq!(find_header(&data[..20]), None);
    }

    #[test]
    fn other_tables_are_refused() {
        let mut data = vec![0u8; 128];
        data[..8].copy_from_slice(&[0xfb, 0xff, 0xff, 0xff, 0, 0, 1, 8]); // Go 1.2's magic
        assert!(LineTable::parse(data.clone(), 0, None, None).is_none());
        data[..8].copy_from_slice(&[0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 4]); // 32-bit
        assert!(LineTable::parse(data, 0, None, None).is_none());
    }
}
