//! Native code (a static C or C++ program): how to step out of a function at a pc, from its
//! `.eh_frame` call frame information (a rule per pc, kept once found: system calls come
//! from the same few places), so that stacks are whole with or without frame pointers; and
//! names at report time: functions from `.symtab`, files, lines and inlined calls from DWARF
//! when the program was built with `-g`.

use std::cell::RefCell;
use std::collections::HashMap;

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EndianSlice, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection, X86_64,
};

use super::gosym::Position;
use super::image::Image;
use super::walk::Rule;

/// The functions and unwind information of one executable.
pub struct Native {
    /// (address, size, name), sorted by address.
    functions: Vec<(u64, u64, String)>,
    /// `.eh_frame`'s address and bytes.
    eh_frame: Option<(u64, Vec<u8>)>,
    /// The frame description entries: (first pc, end pc, offset in `.eh_frame`), sorted.
    fdes: Vec<(u64, u64, usize)>,
    rules: RefCell<HashMap<u64, Option<Rule>>>,
    context: RefCell<UnwindContext<usize>>,
    dwarf: Option<gimli::DwarfSections<Vec<u8>>>,
}

type Reader<'a> = EndianSlice<'a, LittleEndian>;

impl Native {
    pub fn read(image: &Image) -> Native {
        let eh_frame = image.section(".eh_frame").map(|(a, d)| (a, d.into_owned()));
        let fdes = eh_frame
            .as_ref()
            .map(|(a, d)| fdes(*a, d))
            .unwrap_or_default();
        let dwarf = image.section(".debug_info").and_then(|_| {
            gimli::DwarfSections::load(|id| -> Result<Vec<u8>, ()> {
                Ok(image
                    .section(id.name())
                    .map(|(_, d)| d.into_owned())
                    .unwrap_or_default())
            })
            .ok()
        });
        Native {
            functions: image.functions(),
            eh_frame,
            fdes,
            rules: RefCell::default(),
            context: RefCell::new(UnwindContext::new()),
            dwarf,
        }
    }

    /// How to step out of the function at `pc` (kept per pc once found).
    pub fn rule(&self, pc: u64) -> Option<Rule> {
        if let Some(rule) = self.rules.borrow().get(&pc) {
            return *rule;
        }
        let rule = self.find_rule(pc);
        self.rules.borrow_mut().insert(pc, rule);
        rule
    }

    fn find_rule(&self, pc: u64) -> Option<Rule> {
        let (addr, bytes) = self.eh_frame.as_ref()?;
        let i = self.fdes.partition_point(|(start, _, _)| *start <= pc);
        let (_, end, offset) = *self.fdes.get(i.checked_sub(1)?)?;
        if pc >= end {
            return None;
        }
        let eh = EhFrame::new(bytes, LittleEndian);
        let bases = BaseAddresses::default().set_eh_frame(*addr);
        let fde = eh
            .fde_from_offset(
                &bases,
                gimli::EhFrameOffset(offset),
                EhFrame::cie_from_offset,
            )
            .ok()?;
        let mut ctx = self.context.borrow_mut();
        let row = fde
            .unwind_info_for_address(&eh, &bases, &mut ctx, pc)
            .ok()?;
        let (cfa_from_fp, cfa_offset) = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RSP => {
                (false, *offset)
            }
            CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RBP => {
                (true, *offset)
            }
            _ => return None,
        };
        let ra_offset = match row.register(X86_64::RA) {
            Some(RegisterRule::Offset(o)) => Some(o),
            Some(RegisterRule::Undefined) => None, // the outermost frame
            _ => return None,
        };
        let fp_offset = match row.register(X86_64::RBP) {
            Some(RegisterRule::Offset(o)) => Some(o),
            _ => None,
        };
        Some(Rule {
            cfa_from_fp,
            cfa_offset,
            ra_offset,
            fp_offset,
        })
    }

    /// The name of the function symbol holding `pc`.
    fn symbol(&self, pc: u64) -> Option<&str> {
        let i = self.functions.partition_point(|(a, _, _)| *a <= pc);
        let (addr, size, name) = self.functions.get(i.checked_sub(1)?)?;
        (pc < addr + (*size).max(1)).then_some(name.as_str())
    }

    /// What `pc` is, innermost first (inlined calls expanded where DWARF says).
    pub fn positions(
        &self,
        pc: u64,
        context: Option<&addr2line::Context<Reader<'_>>>,
    ) -> Vec<Position> {
        let mut out = Vec::new();
        if let Some(ctx) = context
            && let Ok(mut frames) = ctx.find_frames(pc).skip_all_loads()
        {
            while let Ok(Some(frame)) = frames.next() {
                let function = frame
                    .function
                    .as_ref()
                    .and_then(|f| f.demangle().ok().map(|n| n.into_owned()));
                let Some(function) = function.or_else(|| self.name(pc)) else {
                    continue;
                };
                out.push(Position {
                    function,
                    file: frame
                        .location
                        .as_ref()
                        .and_then(|l| l.file.map(str::to_string)),
                    line: frame.location.as_ref().and_then(|l| l.line),
                });
            }
        }
        if out.is_empty()
            && let Some(function) = self.name(pc)
        {
            out.push(Position {
                function,
                file: None,
                line: None,
            });
        }
        out
    }

    /// The symbol table's name for `pc`, demangled (C++, Rust).
    fn name(&self, pc: u64) -> Option<String> {
        Some(addr2line::demangle_auto(self.symbol(pc)?.into(), None).into_owned())
    }

    /// The DWARF line and inline reader, made for one stack's names (it borrows the
    /// sections, so it is not kept).
    pub fn context(&self) -> Option<addr2line::Context<Reader<'_>>> {
        let dwarf = self
            .dwarf
            .as_ref()?
            .borrow(|s| EndianSlice::new(s, LittleEndian));
        addr2line::Context::from_dwarf(dwarf).ok()
    }
}

/// Every frame description entry of `.eh_frame` at `addr`, sorted by first pc.
fn fdes(addr: u64, bytes: &[u8]) -> Vec<(u64, u64, usize)> {
    let eh = EhFrame::new(bytes, LittleEndian);
    let bases = BaseAddresses::default().set_eh_frame(addr);
    let mut entries = eh.entries(&bases);
    let mut out = Vec::new();
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(EhFrame::cie_from_offset)
        {
            let start = fde.initial_address();
            out.push((start, start + fde.len(), fde.offset()));
        }
    }
    out.sort_unstable();
    out
}
