//! `.eh_frame` CIE/FDE parsing and the CFA program interpreter, reduced
//! to what an x86_64 return-address walk needs: the CFA rule, the RBP
//! rule and the return-address rule at one pc.
//!
//! Only RBP and the return address are tracked: they are the only
//! registers a representable CFA rule can depend on. Rules for other
//! registers are parsed (to stay in sync with the byte stream) and dropped.

use super::reader::Reader;
use super::rule::{CfaBase, UnwindRule};

const REG_RBP: u64 = 6;
const REG_RSP: u64 = 7;
/// gcc nests at most a couple of remember_state; deeper means odd CFI.
const STATE_STACK_DEPTH: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegRule {
    Unchanged,
    SavedAt(i64),
    Undefined,
    Unsupported,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cfa {
    RegOffset(u64, i64),
    Unsupported,
}

#[derive(Clone, Copy, Debug)]
struct Row {
    cfa: Cfa,
    rbp: RegRule,
    ra: RegRule,
}

struct Cie<'a> {
    code_align: u64,
    data_align: i64,
    ra_reg: u64,
    fde_enc: u8,
    has_aug_data: bool,
    signal_frame: bool,
    instructions: Reader<'a>,
}

/// The rule for `pc` according to the FDE at `fde_addr`: `None` if that FDE does not cover
/// `pc` (the FDE `.eh_frame_hdr` picks is the only candidate: then no CFI describes `pc`).
/// Every CFI byte is read through `mem`; anything malformed or unsupported yields `STOP`.
pub(crate) fn rule_at(mem: Reader<'_>, fde_addr: usize, pc: usize) -> Option<UnwindRule> {
    let Some((cie, fde, pc_begin, pc_range)) = parse_fde(mem, fde_addr) else {
        return Some(UnwindRule::STOP);
    };
    if pc < pc_begin || pc - pc_begin >= pc_range {
        return None;
    }
    Some(evaluate(&cie, fde, pc_begin, pc).unwrap_or(UnwindRule::STOP))
}

/// Whether the FDE at `fde_addr` covers `pc`; `None` if it cannot be read.
pub(crate) fn covers(mem: Reader<'_>, fde_addr: usize, pc: usize) -> Option<bool> {
    let (_, _, begin, range) = parse_fde(mem, fde_addr)?;
    Some(begin <= pc && pc - begin < range)
}

/// The FDE at `fde_addr`, its CIE, and the range of code it describes; the reader is left at
/// the FDE's augmentation data.
fn parse_fde<'a>(mem: Reader<'a>, fde_addr: usize) -> Option<(Cie<'a>, Reader<'a>, usize, usize)> {
    let mut fde = entry(mem, fde_addr)?;
    let cie_field = fde.pos();
    let cie_delta = fde.u32()?;
    if cie_delta == 0 {
        return None; // a CIE, not an FDE
    }
    let cie = parse_cie(mem, cie_field.checked_sub(cie_delta as usize)?)?;
    let pc_begin = fde.encoded(cie.fde_enc, None)?;
    let pc_range = fde.encoded_raw(cie.fde_enc)? as usize;
    Some((cie, fde, pc_begin, pc_range))
}

fn evaluate(cie: &Cie<'_>, mut fde: Reader<'_>, pc_begin: usize, pc: usize) -> Option<UnwindRule> {
    if cie.signal_frame {
        return None; // the interrupted frame's pc is not a return address
    }
    if cie.has_aug_data {
        let len = fde.uleb()?;
        fde.skip(len)?;
    }
    let mut machine = Machine {
        cie,
        row: Row {
            cfa: Cfa::Unsupported,
            rbp: RegRule::Unchanged,
            ra: RegRule::Unsupported,
        },
        initial: None,
        saved: [None; STATE_STACK_DEPTH],
    };
    machine.run(cie.instructions, pc_begin, usize::MAX)?;
    machine.initial = Some(machine.row);
    machine.run(fde, pc_begin, pc)?;
    Some(to_rule(&machine.row))
}

/// The body (starting at the CIE id / CIE pointer field) of the entry at `addr`.
fn entry<'a>(mem: Reader<'a>, addr: usize) -> Option<Reader<'a>> {
    let mut r = mem.at(addr)?;
    let len = r.u32()?;
    // 0 terminates .eh_frame; 0xffffffff (64-bit DWARF) is never emitted
    // for x86_64 .eh_frame and not worth supporting.
    if len == 0 || len == u32::MAX {
        return None;
    }
    r.split(u64::from(len))
}

fn parse_cie(mem: Reader<'_>, addr: usize) -> Option<Cie<'_>> {
    let mut r = entry(mem, addr)?;
    let (id, version) = (r.u32()?, r.u8()?);
    if id != 0 || !matches!(version, 1 | 3) {
        return None;
    }
    let mut aug = [0u8; 8];
    let mut aug_len = 0;
    loop {
        let c = r.u8()?;
        if c == 0 {
            break;
        }
        *aug.get_mut(aug_len)? = c;
        aug_len += 1;
    }
    let aug = aug.get(..aug_len)?;
    let code_align = r.uleb()?;
    let data_align = r.sleb()?;
    let ra_reg = if version == 1 {
        u64::from(r.u8()?)
    } else {
        r.uleb()?
    };
    let mut cie = Cie {
        code_align,
        data_align,
        ra_reg,
        fde_enc: 0, // absptr
        has_aug_data: false,
        signal_frame: false,
        instructions: r,
    };
    match aug.split_first() {
        None => {}
        Some((b'z', letters)) => {
            cie.has_aug_data = true;
            let len = r.uleb()?;
            let mut data = r.split(len)?;
            for &letter in letters {
                match letter {
                    b'R' => cie.fde_enc = data.u8()?,
                    b'L' => _ = data.u8()?,
                    b'P' => {
                        let enc = data.u8()?;
                        if enc & 0x70 == 0x50 {
                            return None; // DW_EH_PE_aligned: never seen on x86_64
                        }
                        data.encoded_raw(enc)?;
                    }
                    b'S' => cie.signal_frame = true,
                    // Unknown letters: their data is covered by `len`.
                    _ => break,
                }
            }
            cie.instructions = r;
        }
        // Without 'z' an unknown augmentation cannot be skipped.
        Some(_) => return None,
    }
    if cie.code_align == 0 {
        return None;
    }
    Some(cie)
}

fn to_rule(row: &Row) -> UnwindRule {
    if row.ra != RegRule::SavedAt(-8) {
        return UnwindRule::STOP; // includes Undefined: outermost frame
    }
    let (base, offset) = match row.cfa {
        Cfa::RegOffset(REG_RSP, off) => (CfaBase::Rsp, off),
        Cfa::RegOffset(REG_RBP, off) => (CfaBase::Rbp, off),
        _ => return UnwindRule::STOP,
    };
    match row.rbp {
        RegRule::Unchanged => UnwindRule::new(base, offset, None),
        RegRule::SavedAt(at) => UnwindRule::new(base, offset, Some(at)),
        RegRule::Undefined | RegRule::Unsupported => UnwindRule::STOP,
    }
}

struct Machine<'c, 'a> {
    cie: &'c Cie<'a>,
    row: Row,
    /// The row after the CIE's initial instructions, for DW_CFA_restore.
    initial: Option<Row>,
    saved: [Option<Row>; STATE_STACK_DEPTH],
}

impl Machine<'_, '_> {
    /// Executes `ins` from location `loc` until the row for `pc` is
    /// complete. `None` on malformed or unsupported instructions.
    fn run(&mut self, mut ins: Reader<'_>, mut loc: usize, pc: usize) -> Option<()> {
        while !ins.is_empty() {
            let op = ins.u8()?;
            let low = u64::from(op & 0x3f);
            let delta = match op >> 6 {
                1 => Some(low),
                2 => {
                    let off = self.factored(ins.uleb()? as i64)?;
                    self.set(low, RegRule::SavedAt(off));
                    None
                }
                3 => {
                    self.restore(low)?;
                    None
                }
                _ => self.extended(op, &mut ins, &mut loc)?,
            };
            if let Some(delta) = delta {
                let step = usize::try_from(delta.checked_mul(self.cie.code_align)?).ok()?;
                loc = loc.checked_add(step)?;
            }
            if loc > pc {
                break;
            }
        }
        Some(())
    }

    /// The opcodes with no operand packed in the low bits. Returns the
    /// location advance, if the opcode is one.
    fn extended(&mut self, op: u8, ins: &mut Reader<'_>, loc: &mut usize) -> Option<Option<u64>> {
        match op {
            0x00 => {}                                           // nop
            0x01 => *loc = ins.encoded(self.cie.fde_enc, None)?, // set_loc
            0x02 => return Some(Some(u64::from(ins.u8()?))),
            0x03 => return Some(Some(u64::from(ins.u16()?))),
            0x04 => return Some(Some(u64::from(ins.u32()?))),
            0x05 => {
                let reg = ins.uleb()?;
                let off = self.factored(ins.uleb()? as i64)?;
                self.set(reg, RegRule::SavedAt(off));
            }
            0x06 => self.restore(ins.uleb()?)?,
            0x07 => self.set(ins.uleb()?, RegRule::Undefined),
            0x08 => self.set(ins.uleb()?, RegRule::Unchanged),
            0x09 => {
                let (reg, from) = (ins.uleb()?, ins.uleb()?);
                let rule = if reg == from && reg == REG_RBP {
                    RegRule::Unchanged
                } else {
                    RegRule::Unsupported
                };
                self.set(reg, rule);
            }
            0x0a => {
                let free = self.saved.iter_mut().find(|s| s.is_none())?;
                *free = Some(self.row);
            }
            0x0b => {
                let top = self.saved.iter_mut().rev().find(|s| s.is_some())?;
                let state = top.take()?;
                // The CFA rule comes back too, as libgcc and LLVM's
                // libunwind do and as compilers expect for epilogues.
                self.row = state;
            }
            0x0c => {
                let reg = ins.uleb()?;
                self.row.cfa = Cfa::RegOffset(reg, ins.uleb()? as i64);
            }
            0x0d => {
                let reg = ins.uleb()?;
                self.row.cfa = match self.row.cfa {
                    Cfa::RegOffset(_, off) => Cfa::RegOffset(reg, off),
                    Cfa::Unsupported => Cfa::Unsupported,
                };
            }
            0x0e => self.set_cfa_offset(ins.uleb()? as i64),
            0x0f => {
                let len = ins.uleb()?;
                ins.skip(len)?;
                self.row.cfa = Cfa::Unsupported;
            }
            0x10 | 0x16 => {
                let reg = ins.uleb()?;
                let len = ins.uleb()?;
                ins.skip(len)?;
                self.set(reg, RegRule::Unsupported);
            }
            0x11 => {
                let reg = ins.uleb()?;
                let off = self.factored(ins.sleb()?)?;
                self.set(reg, RegRule::SavedAt(off));
            }
            0x12 => {
                let reg = ins.uleb()?;
                self.row.cfa = Cfa::RegOffset(reg, self.factored(ins.sleb()?)?);
            }
            0x13 => {
                let off = self.factored(ins.sleb()?)?;
                self.set_cfa_offset(off);
            }
            0x14 => {
                let reg = ins.uleb()?;
                ins.uleb()?;
                self.set(reg, RegRule::Unsupported);
            }
            0x15 => {
                let reg = ins.uleb()?;
                ins.sleb()?;
                self.set(reg, RegRule::Unsupported);
            }
            0x2e => _ = ins.uleb()?, // GNU_args_size: only matters for landing pads
            0x2f => {
                let reg = ins.uleb()?;
                let off = self.factored(ins.uleb()? as i64)?;
                self.set(reg, RegRule::SavedAt(off.checked_neg()?));
            }
            _ => return None,
        }
        Some(None)
    }

    fn factored(&self, value: i64) -> Option<i64> {
        value.checked_mul(self.cie.data_align)
    }

    fn set_cfa_offset(&mut self, off: i64) {
        if let Cfa::RegOffset(reg, _) = self.row.cfa {
            self.row.cfa = Cfa::RegOffset(reg, off);
        }
    }

    fn set(&mut self, reg: u64, rule: RegRule) {
        if reg == REG_RBP {
            self.row.rbp = rule;
        } else if reg == self.cie.ra_reg {
            self.row.ra = rule;
        }
    }

    fn restore(&mut self, reg: u64) -> Option<()> {
        // Inside the CIE there is no initial row to go back to.
        let initial = self.initial?;
        if reg == REG_RBP {
            self.row.rbp = initial.rbp;
        } else if reg == self.cie.ra_reg {
            self.row.ra = initial.ra;
        }
        Some(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// x86_64 CIE initial instructions: CFA = RSP + 8, RA at CFA - 8.
    pub(crate) const X86_64_CIE_INIT: &[u8] = &[0x0c, 0x07, 0x08, 0x90, 0x01];

    /// Builds `CIE + FDE` with absptr (udata8) FDE addresses. Returns the
    /// bytes and the offset of the FDE.
    pub(crate) fn eh_frame(
        aug: &str,
        aug_data: &[u8],
        cie_ins: &[u8],
        pc_begin: u64,
        pc_range: u64,
        fde_ins: &[u8],
    ) -> (Vec<u8>, usize) {
        let mut cie = vec![0, 0, 0, 0, 1];
        cie.extend_from_slice(aug.as_bytes());
        cie.extend_from_slice(&[0, 1, 0x78, 16]); // NUL, code 1, data -8, RA 16
        if aug.starts_with('z') {
            cie.push(aug_data.len() as u8);
            cie.extend_from_slice(aug_data);
        }
        cie.extend_from_slice(cie_ins);
        let mut out = (cie.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&cie);
        let fde_at = out.len();
        let mut fde = ((fde_at + 4) as u32).to_le_bytes().to_vec();
        fde.extend_from_slice(&pc_begin.to_le_bytes());
        fde.extend_from_slice(&pc_range.to_le_bytes());
        if aug.starts_with('z') {
            fde.push(0);
        }
        fde.extend_from_slice(fde_ins);
        out.extend_from_slice(&(fde.len() as u32).to_le_bytes());
        out.extend_from_slice(&fde);
        (out, fde_at)
    }

    /// The rule at `pc`, which the FDE must cover.
    fn rule(blob: &(Vec<u8>, usize), pc: usize) -> UnwindRule {
        covered(blob, pc).unwrap_or_else(|| panic!("{pc:#x} not covered"))
    }

    fn covered(blob: &(Vec<u8>, usize), pc: usize) -> Option<UnwindRule> {
        let (bytes, fde_at) = blob;
        rule_at(
            Reader::from_slice(bytes),
            bytes.as_ptr() as usize + fde_at,
            pc,
        )
    }

    fn rsp(off: i64, rbp: Option<i64>) -> UnwindRule {
        UnwindRule::new(CfaBase::Rsp, off, rbp)
    }

    fn rbp(off: i64, rbp: Option<i64>) -> UnwindRule {
        UnwindRule::new(CfaBase::Rbp, off, rbp)
    }

    #[test]
    fn covers_is_the_fde_range() {
        let (bytes, fde_at) = eh_frame("", &[], X86_64_CIE_INIT, 0x1000, 0x40, &[]);
        let mem = Reader::from_slice(&bytes);
        let base = bytes.as_ptr() as usize;
        assert_eq!(covers(mem, base + fde_at, 0xfff), Some(false));
        assert_eq!(covers(mem, base + fde_at, 0x1000), Some(true));
        assert_eq!(covers(mem, base + fde_at, 0x103f), Some(true));
        assert_eq!(covers(mem, base + fde_at, 0x1040), Some(false));
        assert_eq!(covers(mem, base, 0x1000), None, "a CIE is not an FDE");
    }

    #[test]
    fn frame_pointer_prologue_and_epilogue() {
        let fde = [
            0x41, 0x0e, 0x10, 0x86, 0x02, // push rbp: CFA=RSP+16, RBP at CFA-16
            0x43, 0x0d, 0x06, // mov rbp, rsp: CFA=RBP+16
            0x54, 0x0c, 0x07, 0x08, // after leave: CFA=RSP+8
        ];
        let blob = eh_frame("", &[], X86_64_CIE_INIT, 0x1000, 0x40, &fde);
        assert_eq!(rule(&blob, 0x1000), rsp(8, None));
        assert_eq!(rule(&blob, 0x1001), rsp(16, Some(-16)));
        assert_eq!(rule(&blob, 0x1003), rsp(16, Some(-16)));
        assert_eq!(rule(&blob, 0x1004), rbp(16, Some(-16)));
        assert_eq!(rule(&blob, 0x1017), rbp(16, Some(-16)));
        assert_eq!(rule(&blob, 0x1018), rsp(8, Some(-16)));
        assert_eq!(rule(&blob, 0x103f), rsp(8, Some(-16)));
        assert_eq!(covered(&blob, 0x1040), None, "past pc_range");
        assert_eq!(covered(&blob, 0x0fff), None, "before pc_begin");
    }

    #[test]
    fn remember_restore_state_and_long_advances() {
        let fde = [
            0x02, 0x10, 0x0e, 0x30, // advance_loc1 16: CFA=RSP+48
            0x83, 0x03, // rbx saved: ignored
            0x03, 0x00, 0x01, 0x0a, 0x0e, 0x08, // advance_loc2 256, remember, CFA=RSP+8 (ret)
            0x04, 0x01, 0x00, 0x00, 0x00, 0x0b, // advance_loc4 1, restore_state
        ];
        let blob = eh_frame("zR", &[0x00], X86_64_CIE_INIT, 0x5000, 0x1000, &fde);
        assert_eq!(rule(&blob, 0x500f), rsp(8, None));
        assert_eq!(rule(&blob, 0x5010), rsp(48, None));
        assert_eq!(rule(&blob, 0x5110), rsp(8, None));
        assert_eq!(rule(&blob, 0x5111), rsp(48, None));
    }

    #[test]
    fn signed_and_extended_forms() {
        let fde = [
            0x2e, 0x10, // GNU_args_size: ignored
            0x12, 0x07, 0x7e, // def_cfa_sf RSP, -2 * -8 = 16
            0x11, 0x06, 0x7d, // offset_extended_sf RBP, -3 * -8 ... = 24: not below CFA
            0x41, 0x05, 0x06, 0x04, // offset_extended RBP at -32
            0x41, 0x13, 0x7a, // def_cfa_offset_sf -6 * -8 = 48
            0x41, 0x10, 0x03, 0x02, 0x77, 0x10, // expression for rbx: ignored
            0x41, 0x06, 0x06, // restore_extended RBP
            0x41, 0x86, 0x02, 0x08, 0x06, // RBP at -16, then same_value
            0x41, 0x09, 0x06, 0x06, // register RBP <- RBP: trivial
            0x41, 0x09, 0x06, 0x03, // register RBP <- RBX: unsupported
        ];
        let blob = eh_frame("", &[], X86_64_CIE_INIT, 0, 0x100, &fde);
        assert_eq!(rule(&blob, 0), UnwindRule::STOP, "RBP saved above the CFA");
        assert_eq!(rule(&blob, 1), rsp(16, Some(-32)));
        assert_eq!(rule(&blob, 2), rsp(48, Some(-32)));
        assert_eq!(rule(&blob, 3), rsp(48, Some(-32)));
        assert_eq!(rule(&blob, 4), rsp(48, None));
        assert_eq!(rule(&blob, 5), rsp(48, None));
        assert_eq!(rule(&blob, 6), rsp(48, None));
        assert_eq!(rule(&blob, 7), UnwindRule::STOP);
    }

    #[test]
    fn unrepresentable_rules_stop() {
        let stop_at_1 = |fde: &[u8]| {
            let blob = eh_frame("zR", &[0], X86_64_CIE_INIT, 0, 0x100, fde);
            assert_eq!(rule(&blob, 0), rsp(8, None), "{fde:x?}");
            assert_eq!(rule(&blob, 1), UnwindRule::STOP, "{fde:x?}");
        };
        stop_at_1(&[0x41, 0x0f, 0x02, 0x77, 0x08]); // def_cfa_expression
        stop_at_1(&[0x41, 0x07, 0x10]); // RA undefined: outermost frame
        stop_at_1(&[0x41, 0x90, 0x02]); // RA not at CFA-8
        stop_at_1(&[0x41, 0x0d, 0x0a]); // CFA based on r10
        stop_at_1(&[0x41, 0x16, 0x06, 0x01, 0x9c]); // val_expression RBP
        stop_at_1(&[0x41, 0x14, 0x06, 0x01]); // val_offset RBP
        stop_at_1(&[0x41, 0x07, 0x06]); // RBP undefined
        stop_at_1(&[0x41, 0x3f]); // unknown opcode
        stop_at_1(&[0x41, 0x0e]); // truncated operand
        stop_at_1(&[0x41, 0x0b]); // restore_state with nothing remembered
        stop_at_1(&[0x41, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a]); // stack overflow

        // After an expression, a full def_cfa makes the rule usable again.
        let fde = [
            0x41, 0x0f, 0x02, 0x77, 0x08, 0x0e, 0x10, 0x41, 0x0c, 0x07, 0x10,
        ];
        let blob = eh_frame("", &[], X86_64_CIE_INIT, 0, 0x100, &fde);
        assert_eq!(rule(&blob, 1), UnwindRule::STOP);
        assert_eq!(rule(&blob, 2), rsp(16, None));
    }

    #[test]
    fn augmentations() {
        let fde = [0x41, 0x0e, 0x10];
        // Personality (pcrel|sdata4 indirect), LSDA, FDE encoding.
        let aug = [0x9b, 1, 2, 3, 4, 0x1b, 0x00];
        let blob = eh_frame("zPLR", &aug, X86_64_CIE_INIT, 0x10, 0x10, &fde);
        assert_eq!(rule(&blob, 0x11), rsp(16, None));
        // Signal frames end the walk.
        let blob = eh_frame("zRS", &[0], X86_64_CIE_INIT, 0x10, 0x10, &fde);
        assert_eq!(rule(&blob, 0x11), UnwindRule::STOP);
        // Unknown letter after z: skipped thanks to the length.
        let blob = eh_frame("zRX", &[0, 9, 9], X86_64_CIE_INIT, 0x10, 0x10, &fde);
        assert_eq!(rule(&blob, 0x11), rsp(16, None));
        // Unknown augmentation without z, or "eh": cannot be parsed.
        let blob = eh_frame("eh", &[], X86_64_CIE_INIT, 0x10, 0x10, &fde);
        assert_eq!(rule(&blob, 0x11), UnwindRule::STOP);
    }

    #[test]
    fn pcrel_fde_addresses() {
        let (mut bytes, fde_at) =
            eh_frame("zR", &[0x1b], X86_64_CIE_INIT, 0, 0, &[0x41, 0x0e, 0x10]);
        // Rewrite pc_begin/pc_range as sdata4 in place: pc_begin = field + 0x40.
        let field = fde_at + 8;
        bytes[field..field + 4].copy_from_slice(&0x40i32.to_le_bytes());
        bytes[field + 4..field + 8].copy_from_slice(&0x20u32.to_le_bytes());
        let base = bytes.as_ptr() as usize + field + 0x40;
        // The 8 bytes freed by the shorter encoding become the aug length
        // (0) and nops followed by the real instructions.
        bytes[field + 8..field + 16].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        let blob = (bytes, fde_at);
        assert_eq!(rule(&blob, base), rsp(8, None));
        assert_eq!(rule(&blob, base + 1), rsp(16, None));
        assert_eq!(covered(&blob, base + 0x20), None);
    }

    #[test]
    fn malformed_entries_stop() {
        let blob = eh_frame("", &[], X86_64_CIE_INIT, 0, 0x100, &[]);
        let (bytes, fde_at) = &blob;
        let base = bytes.as_ptr() as usize;
        let mem = Reader::from_slice(bytes);
        // Pointing at the CIE instead of an FDE.
        assert_eq!(rule_at(mem, base, 0), Some(UnwindRule::STOP));
        // Outside the window.
        assert_eq!(
            rule_at(mem, base + bytes.len() + 8, 0),
            Some(UnwindRule::STOP)
        );
        // Truncated window: FDE length runs past the end.
        let cut = Reader::from_slice(&bytes[..bytes.len() - 1]);
        assert_eq!(rule_at(cut, base + fde_at, 0), Some(UnwindRule::STOP));
        // CIE pointer leading before the window.
        let mut bad = bytes.clone();
        bad[fde_at + 4..fde_at + 8].copy_from_slice(&0x1000u32.to_le_bytes());
        let bad_blob = (bad, *fde_at);
        assert_eq!(rule(&bad_blob, 0), UnwindRule::STOP);
        assert_eq!(rule(&blob, 0), rsp(8, None));
    }
}
