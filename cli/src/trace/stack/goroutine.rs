//! Go: the goroutine a stopped thread runs, and where it was created. A goroutine that a
//! library started (net/http's dial goroutine) has a stack that ends in the library; its
//! creation site (`g.gopc`, the `go` statement's pc) and, with
//! `GODEBUG=tracebackancestors=N`, the stacks of the goroutines that created it
//! (`g.ancestors`) continue it to the program's own code.
//!
//! The current `g` is in register R14 on x86-64 since Go 1.17 (the register ABI), else in the
//! thread's TLS slot at FS base - 8 (a program built without cgo); either is taken only when
//! its stack bounds hold the thread's stack pointer. The fields' offsets come from the
//! binary's DWARF (`runtime.g`'s members) when it has any, else from a table per Go version
//! (the build info names it).

use std::borrow::Cow;

use gimli::{EndianSlice, LittleEndian};

use super::image::{Image, go_minor};

/// The most ancestors and pcs per ancestor read (Go keeps at most 100 pcs of each; the
/// program sets how many ancestors).
const MAX_ANCESTORS: usize = 16;
const MAX_ANCESTOR_PCS: usize = 64;

/// `runtime.ancestorInfo`: `pcs []uintptr` (pointer, length, capacity), `goid int64`,
/// `gopc uintptr`; unchanged since Go 1.11 introduced it.
const ANCESTOR_SIZE: usize = 40;
const ANCESTOR_GOPC: usize = 32;

/// Where `runtime.g`'s fields are (`stack.lo` is at 0 and `stack.hi` at 8 in every version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub gopc: usize,
    pub ancestors: usize,
}

impl Layout {
    /// The layout the binary's DWARF describes.
    pub fn from_dwarf(image: &Image) -> Option<Layout> {
        let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
            Ok(image
                .section(id.name())
                .map_or(Cow::Borrowed(&[][..]), |(_, d)| d))
        };
        let sections = gimli::DwarfSections::load(load).ok()?;
        let dwarf = sections.borrow(|s| EndianSlice::new(s, LittleEndian));
        let mut units = dwarf.units();
        while let Ok(Some(header)) = units.next() {
            let unit = dwarf.unit(header).ok()?;
            if let Some(layout) = g_in_unit(&dwarf, &unit) {
                return Some(layout);
            }
        }
        None
    }

    /// The layout of Go release `version` (`go1.19.8`), where it is known.
    pub fn for_version(version: &str) -> Option<Layout> {
        let minor = go_minor(version)?;
        // runtime.g in src/runtime/runtime2.go of each release, on x86-64. 1.19: measured
        // (trace/stack/tests.rs compares with a binary's DWARF); 1.20: read from its source,
        // whose fields up to `ancestors` are 1.19's. 1.21 added `parentGoid` before `gopc`
        // and later releases moved the tracer's fields: not established here, so a binary of
        // those built without DWARF (-w) gets no creation sites.
        let (gopc, ancestors) = match minor {
            19 | 20 => (296, 304),
            _ => return None,
        };
        Some(Layout { gopc, ancestors })
    }

    /// How many bytes of a `g` are read.
    fn size(&self) -> usize {
        self.gopc.max(self.ancestors) + 8
    }
}

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// `runtime.g`'s layout if `unit` defines it.
fn g_in_unit(dwarf: &gimli::Dwarf<Reader<'_>>, unit: &gimli::Unit<Reader<'_>>) -> Option<Layout> {
    let mut tree = unit.entries_tree(None).ok()?;
    let root = tree.root().ok()?;
    let mut children = root.children();
    while let Ok(Some(child)) = children.next() {
        let entry = child.entry();
        if entry.tag() != gimli::DW_TAG_structure_type
            || name(dwarf, unit, entry) != Some("runtime.g")
        {
            continue;
        }
        let (mut gopc, mut ancestors) = (None, None);
        let mut members = child.children();
        while let Ok(Some(member)) = members.next() {
            let m = member.entry();
            let offset = match m.attr_value(gimli::DW_AT_data_member_location) {
                Some(gimli::AttributeValue::Udata(o)) => usize::try_from(o).ok(),
                _ => None,
            };
            match name(dwarf, unit, m) {
                Some("gopc") => gopc = offset,
                Some("ancestors") => ancestors = offset,
                _ => {}
            }
        }
        return Some(Layout {
            gopc: gopc?,
            ancestors: ancestors?,
        });
    }
    None
}

fn name<'a>(
    dwarf: &gimli::Dwarf<Reader<'a>>,
    unit: &gimli::Unit<Reader<'a>>,
    entry: &gimli::DebuggingInformationEntry<Reader<'a>>,
) -> Option<&'a str> {
    let value = entry.attr_value(gimli::DW_AT_name)?;
    dwarf.attr_string(unit, value).ok()?.to_string().ok()
}

/// The goroutine a thread runs: its stack's top, and where its creation is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Goroutine {
    pub stack_hi: u64,
    gopc: u64,
    /// `*[]ancestorInfo`, 0 without `GODEBUG=tracebackancestors`.
    ancestors: u64,
}

/// The registers that find a thread's goroutine.
#[derive(Clone, Copy, Debug)]
pub struct Regs {
    pub rsp: u64,
    pub r14: u64,
    pub fs_base: u64,
}

/// The goroutine of the thread with registers `regs`, read through `read(addr, len)` (the
/// traced process's memory); `None` when no goroutine's stack holds `rsp` (a thread outside
/// Go's code).
pub fn current(
    layout: Layout,
    regs: Regs,
    read: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
) -> Option<Goroutine> {
    let holds_sp = |g: &[u8]| {
        let (lo, hi) = (word(g, 0).unwrap_or(0), word(g, 8).unwrap_or(0));
        lo <= regs.rsp && regs.rsp < hi
    };
    let g = read(regs.r14, layout.size())
        .filter(|g| holds_sp(g))
        .or_else(|| {
            let tls = word(&read(regs.fs_base.checked_sub(8)?, 8)?, 0)?;
            read(tls, layout.size()).filter(|g| holds_sp(g))
        })?;
    Some(Goroutine {
        stack_hi: word(&g, 8)?,
        gopc: word(&g, layout.gopc)?,
        ancestors: word(&g, layout.ancestors)?,
    })
}

/// Where `g` was created, nearest first: each site is a `go` statement's pc, then, when the
/// ancestors are kept, the pcs of the goroutine that ran it from that statement's caller up
/// (its pcs end at the runtime's `newproc`, then the statement: what precedes is left out).
pub fn ancestry(g: &Goroutine, read: &dyn Fn(u64, usize) -> Option<Vec<u8>>) -> Vec<Vec<u64>> {
    let ancestors = match g.ancestors {
        0 => Vec::new(),
        at => ancestors(at, read),
    };
    let mut ancestors = ancestors.into_iter();
    let (mut out, mut gopc) = (Vec::new(), g.gopc);
    while gopc != 0 && out.len() <= MAX_ANCESTORS {
        let (pcs, parent) = ancestors.next().unwrap_or_default();
        let above = pcs
            .iter()
            .position(|pc| *pc == gopc)
            .map_or(&pcs[..], |i| &pcs[i + 1..]);
        out.push([gopc].into_iter().chain(above.iter().copied()).collect());
        gopc = parent;
    }
    out
}

/// `*[]ancestorInfo` at `at`, bounded.
fn ancestors(at: u64, read: &dyn Fn(u64, usize) -> Option<Vec<u8>>) -> Vec<(Vec<u64>, u64)> {
    let Some(slice) = read(at, 16) else {
        return Vec::new();
    };
    let (array, len) = (word(&slice, 0).unwrap_or(0), word(&slice, 8).unwrap_or(0));
    let len = usize::try_from(len).unwrap_or(0).min(MAX_ANCESTORS);
    let Some(infos) = read(array, len * ANCESTOR_SIZE) else {
        return Vec::new();
    };
    infos
        .chunks_exact(ANCESTOR_SIZE)
        .map(|info| {
            let (pcs, n) = (word(info, 0).unwrap_or(0), word(info, 8).unwrap_or(0));
            let n = usize::try_from(n).unwrap_or(0).min(MAX_ANCESTOR_PCS);
            let pcs = read(pcs, 8 * n)
                .map(|b| b.chunks_exact(8).filter_map(|w| word(w, 0)).collect())
                .unwrap_or_default();
            (pcs, word(info, ANCESTOR_GOPC).unwrap_or(0))
        })
        .collect()
}

fn word(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout {
        gopc: 296,
        ancestors: 304,
    };

    /// A process's memory: blocks at addresses.
    fn memory(blocks: Vec<(u64, Vec<u8>)>) -> impl Fn(u64, usize) -> Option<Vec<u8>> {
        move |addr, len| {
            blocks.iter().find_map(|(at, b)| {
                let from = usize::try_from(addr.checked_sub(*at)?).ok()?;
                Some(b.get(from..from + len)?.to_vec())
            })
        }
    }

    fn words(ws: &[u64]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn g(lo: u64, hi: u64, gopc: u64, ancestors: u64) -> Vec<u8> {
        let mut g = vec![0u8; LAYOUT.size()];
        g[..16].copy_from_slice(&words(&[lo, hi]));
        g[LAYOUT.gopc..][..8].copy_from_slice(&gopc.to_le_bytes());
        g[LAYOUT.ancestors..][..8].copy_from_slice(&ancestors.to_le_bytes());
        g
    }

    fn regs(rsp: u64, r14: u64, fs_base: u64) -> Regs {
        Regs { rsp, r14, fs_base }
    }

    #[test]
    fn the_goroutine_in_r14_whose_stack_holds_sp() {
        let mem = memory(vec![(0x1000, g(0x8000, 0x9000, 0x4711, 0))]);
        let g = current(LAYOUT, regs(0x8800, 0x1000, 0), &mem).unwrap();
        assert_eq!(g.stack_hi, 0x9000);
        assert_eq!(ancestry(&g, &mem), [vec![0x4711]]);
        // Another stack: not this thread's goroutine, and no TLS slot to fall back on.
        assert_eq!(current(LAYOUT, regs(0x9800, 0x1000, 0), &mem), None);
    }

    #[test]
    fn else_the_tls_slot() {
        let mem = memory(vec![
            (0x1000, g(0x8000, 0x9000, 0x4711, 0)),
            (0x5000, words(&[0x1000, 0])),
        ]);
        let g = current(LAYOUT, regs(0x8800, 0x77, 0x5008), &mem).unwrap();
        assert_eq!(ancestry(&g, &mem), [vec![0x4711]]);
    }

    #[test]
    fn ancestors_are_read_bounded() {
        let mut infos = words(&[0x3000, 2, 2, 1, 0x4700]);
        infos.extend(words(&[0x3100, 1_000_000, 0, 7, 0x4600])); // a silly length
        let mem = memory(vec![
            (0x1000, g(0x8000, 0x9000, 0x4711, 0x2000)),
            (0x2000, words(&[0x2100, 2, 2])),
            (0x2100, infos),
            (0x3000, words(&[0x4711, 0x4801])),
            (0x3100, words(&[0x4900; MAX_ANCESTOR_PCS])),
        ]);
        let g = current(LAYOUT, regs(0x8800, 0x1000, 0), &mem).unwrap();
        let sites = ancestry(&g, &mem);
        // The parent's pcs after its `go` statement; the grandparent's, all bounded (none is
        // the parent's statement); the great-grandparent's site alone.
        assert_eq!(sites.len(), 3);
        assert_eq!(sites[0], [0x4711, 0x4801]);
        assert_eq!(sites[1].len(), 1 + MAX_ANCESTOR_PCS);
        assert_eq!(sites[1][0], 0x4700);
        assert_eq!(sites[2], [0x4600]);
    }

    #[test]
    fn versions_by_name() {
        assert_eq!(Layout::for_version("go1.19.8"), Some(LAYOUT));
        assert_eq!(Layout::for_version("go1.20.6"), Some(LAYOUT));
        assert_eq!(Layout::for_version("go1.21.0"), None);
        assert_eq!(Layout::for_version("go1.5"), None);
        assert_eq!(Layout::for_version("devel"), None);
    }
}
