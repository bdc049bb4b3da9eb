//! The unwind step for one pc, packed into 32 bits so a cache entry fits
//! in 16 bytes and can be read with plain atomic loads.
//!
//! On x86_64 every frame we are willing to step through has the shape
//! `CFA = base + offset; RA = [CFA - 8]; RBP = [CFA - 8 * slot] or unchanged`.
//! Anything else (expressions, other base registers, signal frames, the
//! outermost frame) is the `STOP` verdict. Code no CFI describes (JIT code)
//! gets `FRAME_POINTER`: the frame-pointer step, marked as a guess.

/// Register the CFA is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CfaBase {
    Rsp,
    Rbp,
}

/// Bits 0-1: base (0 = stop, 1 = RSP, 2 = RBP, 3 = RBP by guess); bits 2-9: RBP save slot
/// (0 = unchanged, k = saved at CFA - 8k); bits 10-31: CFA offset in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UnwindRule(u32);

const BASE_BITS: u32 = 2;
const SLOT_BITS: u32 = 8;
const OFFSET_SHIFT: u32 = BASE_BITS + SLOT_BITS;
const MAX_OFFSET: i64 = (1 << (32 - OFFSET_SHIFT)) - 1;
/// The base bits of `FRAME_POINTER`.
const GUESS: u32 = 3;

impl UnwindRule {
    /// The walk must end at this pc. All-zero so an empty cache slot can
    /// never be mistaken for a usable rule.
    pub(crate) const STOP: UnwindRule = UnwindRule(0);

    /// The step through a frame no CFI describes, guessed: `CFA = RBP + 16`, the caller's RBP
    /// at `CFA - 16`, as every function that keeps a frame pointer has it (V8 keeps one in
    /// all its JIT code and builtins). Right only if the code does keep one: the walk takes it
    /// only under the bound of the stack it runs on (see `walk`), so a wrong guess ends in
    /// wrong frames, never in a read outside the stack.
    pub(crate) const FRAME_POINTER: UnwindRule =
        UnwindRule((16 << OFFSET_SHIFT) | (2 << BASE_BITS) | GUESS);

    /// `rbp_saved_at` is the offset from the CFA where the caller's RBP was
    /// saved, or `None` if RBP still holds the caller's value. Returns
    /// `STOP` for anything the 32-bit form cannot hold.
    pub(crate) fn new(base: CfaBase, cfa_offset: i64, rbp_saved_at: Option<i64>) -> UnwindRule {
        if !(8..=MAX_OFFSET).contains(&cfa_offset) {
            return UnwindRule::STOP;
        }
        let slot = match rbp_saved_at {
            None => 0,
            Some(off) if off < 0 && off % 8 == 0 && -off / 8 < (1 << SLOT_BITS) => -off / 8,
            Some(_) => return UnwindRule::STOP,
        };
        let base = match base {
            CfaBase::Rsp => 1,
            CfaBase::Rbp => 2,
        };
        UnwindRule(((cfa_offset as u32) << OFFSET_SHIFT) | ((slot as u32) << BASE_BITS) | base)
    }

    pub(crate) fn from_bits(bits: u32) -> UnwindRule {
        UnwindRule(bits)
    }

    pub(crate) fn bits(self) -> u32 {
        self.0
    }

    /// `None` means stop.
    #[inline(always)]
    pub(crate) fn base(self) -> Option<CfaBase> {
        match self.0 & 3 {
            1 => Some(CfaBase::Rsp),
            2 | GUESS => Some(CfaBase::Rbp),
            _ => None,
        }
    }

    /// Whether this is the `FRAME_POINTER` guess rather than what CFI says.
    #[inline(always)]
    pub(crate) fn is_guess(self) -> bool {
        self.0 & 3 == GUESS
    }

    #[inline(always)]
    pub(crate) fn cfa_offset(self) -> usize {
        (self.0 >> OFFSET_SHIFT) as usize
    }

    /// Distance below the CFA (in bytes) of the saved RBP, 0 if unchanged.
    #[inline(always)]
    pub(crate) fn rbp_slot_distance(self) -> usize {
        (((self.0 >> BASE_BITS) & ((1 << SLOT_BITS) - 1)) as usize) * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks() {
        let r = UnwindRule::new(CfaBase::Rsp, 0x38, Some(-48));
        assert_eq!(r.base(), Some(CfaBase::Rsp));
        assert_eq!(r.cfa_offset(), 0x38);
        assert_eq!(r.rbp_slot_distance(), 48);
        let r = UnwindRule::new(CfaBase::Rbp, 16, None);
        assert_eq!(r.base(), Some(CfaBase::Rbp));
        assert_eq!(r.cfa_offset(), 16);
        assert_eq!(r.rbp_slot_distance(), 0);
        assert_eq!(UnwindRule::from_bits(r.bits()), r);
        assert_eq!(
            UnwindRule::new(CfaBase::Rsp, MAX_OFFSET, None).cfa_offset(),
            MAX_OFFSET as usize
        );
    }

    #[test]
    fn the_frame_pointer_guess_is_the_frame_pointer_step_marked() {
        let g = UnwindRule::FRAME_POINTER;
        assert!(g.is_guess());
        assert_eq!(g.base(), Some(CfaBase::Rbp));
        assert_eq!(g.cfa_offset(), 16);
        assert_eq!(g.rbp_slot_distance(), 16);
        assert_ne!(g, UnwindRule::new(CfaBase::Rbp, 16, Some(-16)));
        assert!(!UnwindRule::new(CfaBase::Rbp, 16, Some(-16)).is_guess());
        assert!(!UnwindRule::STOP.is_guess());
    }

    #[test]
    fn unrepresentable_rules_stop() {
        assert_eq!(UnwindRule::STOP.base(), None);
        assert_eq!(UnwindRule::new(CfaBase::Rsp, 0, None), UnwindRule::STOP);
        assert_eq!(UnwindRule::new(CfaBase::Rsp, -16, None), UnwindRule::STOP);
        assert_eq!(
            UnwindRule::new(CfaBase::Rsp, MAX_OFFSET + 1, None),
            UnwindRule::STOP
        );
        assert_eq!(UnwindRule::new(CfaBase::Rsp, 16, Some(8)), UnwindRule::STOP);
        assert_eq!(
            UnwindRule::new(CfaBase::Rsp, 16, Some(-12)),
            UnwindRule::STOP
        );
        assert_eq!(
            UnwindRule::new(CfaBase::Rsp, 16, Some(-8 * 256)),
            UnwindRule::STOP
        );
    }
}
