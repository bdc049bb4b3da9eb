//! The x86_64 walk: apply one `UnwindRule` per frame, checking every
//! address against the current stack pointer and the stack's upper bound
//! before reading it.

use core::arch::asm;
use core::mem::MaybeUninit;

use super::rule::{CfaBase, UnwindRule};

/// No legitimate frame is this large; a bigger step means a bad rule or a
/// bad RBP, and stopping is the only safe answer.
pub(crate) const MAX_FRAME_SIZE: usize = 4 << 20;

/// The most a walk that guesses frame pointers may have above it before its stack's bound.
/// The bound (`stack::limit`: the thread's TCB, the main stack's end) is the walk's own stack's
/// only when the walk runs on that stack, which is rarely this large (8 MiB by default; a
/// larger one only loses the guesses); a fiber's or a signal stack elsewhere below the TCB
/// usually starts much farther away, and there a guessed frame pointer could lead into a hole
/// below the bound: no guesses there.
const MAX_GUESS_SPAN: usize = 64 << 20;

/// The registers the walk needs. Only RBP is tracked besides RSP and the
/// pc because a representable CFA rule depends on nothing else.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Regs {
    pub(crate) pc: usize,
    pub(crate) sp: usize,
    pub(crate) rbp: usize,
}

impl Regs {
    /// The registers at this point of the function it is inlined into.
    #[inline(always)]
    pub(crate) fn here() -> Regs {
        let (pc, sp, rbp);
        // SAFETY: copies rip, rsp and rbp into general registers; touches
        // neither memory nor the stack nor the flags.
        unsafe {
            asm!(
                "lea {pc}, [rip]",
                "mov {sp}, rsp",
                "mov {fp}, rbp",
                pc = out(reg) pc,
                sp = out(reg) sp,
                fp = out(reg) rbp,
                options(nomem, nostack, preserves_flags),
            );
        }
        Regs { pc, sp, rbp }
    }
}

/// Where the walk stands: the pc to look the next rule up at (the first
/// frame's pc as is, later `return address - 1`, inside the call), and
/// the registers the rule may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalkState {
    pub(crate) lookup_pc: usize,
    pub(crate) sp: usize,
    pub(crate) rbp: usize,
}

impl From<Regs> for WalkState {
    fn from(regs: Regs) -> Self {
        WalkState {
            lookup_pc: regs.pc,
            sp: regs.sp,
            rbp: regs.rbp,
        }
    }
}

/// What one step read, for `WalkMemo`: the return address at `cfa - 8`
/// and, if `rbp_at != 0`, the RBP restored from there. `rbp` is the RBP
/// after the step either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) cfa: usize,
    pub(crate) ra: usize,
    pub(crate) rbp_at: usize,
    pub(crate) rbp: usize,
    /// Which RBP value this step's CFA came from, if any. Code built without frame pointers
    /// keeps arbitrary data in RBP (and saves it on the stack), so a memo must compare an RBP
    /// value only when some CFA really depended on it.
    pub(crate) rbp_from: RbpFrom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RbpFrom {
    /// The CFA came from RSP.
    NotUsed,
    /// From the walk's starting RBP.
    Start,
    /// From the RBP that step `n` restored from the stack.
    Step(usize),
}

/// Walks from `state`, writing return addresses to `out`. `rule_for` maps
/// a lookup pc to its rule; `stack_limit` bounds every read from above;
/// `on_step` sees each step taken. Returns the number of addresses written.
#[inline(always)]
pub(crate) fn walk(
    state: WalkState,
    stack_limit: usize,
    out: &mut [MaybeUninit<usize>],
    mut rule_for: impl FnMut(usize) -> UnwindRule,
    mut on_step: impl FnMut(usize, &Step),
) -> usize {
    let WalkState {
        lookup_pc,
        mut sp,
        mut rbp,
    } = state;
    let mut lookup = lookup_pc;
    let guesses = stack_limit.wrapping_sub(sp) <= MAX_GUESS_SPAN;
    let mut len = 0;
    // The step that last restored RBP (None: it is still the starting value).
    let mut rbp_restored_by: Option<usize> = None;
    for slot in out.iter_mut() {
        let rule = rule_for(lookup);
        let (base, rbp_from) = match rule.base() {
            Some(CfaBase::Rsp) => (sp, RbpFrom::NotUsed),
            // A guessed frame pointer may be any value: only the bound of the stack the walk
            // is on keeps the reads it leads to inside that stack.
            Some(CfaBase::Rbp) if rule.is_guess() && !guesses => break,
            Some(CfaBase::Rbp) => (rbp, rbp_restored_by.map_or(RbpFrom::Start, RbpFrom::Step)),
            None => break,
        };
        let cfa = base.wrapping_add(rule.cfa_offset());
        // The caller's frame must be strictly above ours, word aligned,
        // of sane size and inside the stack: then [sp, cfa) is part of
        // the current frame and readable.
        if cfa <= sp || cfa - sp > MAX_FRAME_SIZE || cfa > stack_limit || cfa % 8 != 0 {
            break;
        }
        // SAFETY: sp < cfa - 8 + 8 <= stack_limit and the range [sp, cfa)
        // is the current frame (see above); aligned.
        let ra = unsafe { read_word(cfa - 8) };
        let mut rbp_at = 0;
        let saved_rbp = rule.rbp_slot_distance();
        if saved_rbp != 0 {
            match cfa.checked_sub(saved_rbp) {
                Some(at) if at >= sp => rbp_at = at,
                _ => break,
            }
            // SAFETY: inside [sp, cfa) as checked; aligned since both cfa
            // and the distance are multiples of 8.
            rbp = unsafe { read_word(rbp_at) };
            rbp_restored_by = Some(len);
        }
        if ra == 0 {
            break; // some runtimes end the chain with a null return address
        }
        slot.write(ra);
        on_step(
            len,
            &Step {
                cfa,
                ra,
                rbp_at,
                rbp,
                rbp_from,
            },
        );
        len += 1;
        sp = cfa;
        lookup = ra - 1;
    }
    len
}

/// # Safety
/// `addr` must be an aligned, readable word of the current thread's stack.
#[inline(always)]
unsafe fn read_word(addr: usize) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::read(addr as *const usize) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::slots;

    /// A fake stack and the address of one of its words.
    struct FakeStack([usize; 64]);
    impl FakeStack {
        fn addr(&self, i: usize) -> usize {
            &self.0[i] as *const usize as usize
        }
    }

    fn rsp(off: i64, rbp: Option<i64>) -> UnwindRule {
        UnwindRule::new(CfaBase::Rsp, off, rbp)
    }

    #[test]
    fn follows_rsp_and_rbp_rules() {
        let mut s = FakeStack([0; 64]);
        // Frame 0: CFA = sp + 16 (ra at word 1). Frame 1 (pc 0x2000):
        // CFA = sp + 32 with RBP saved at CFA-16 (word 4), ra at word 5.
        // Frame 2 (pc 0x3000): CFA = RBP + 16, RBP points at word 8.
        s.0[1] = 0x2001;
        s.0[4] = s.addr(8);
        s.0[5] = 0x3001;
        s.0[9] = 0x4001;
        std::hint::black_box(&mut s);
        let rules = |pc: usize| match pc {
            0x1000 => rsp(16, None),
            0x2000 => rsp(32, Some(-16)),
            0x3000 => UnwindRule::new(CfaBase::Rbp, 16, None),
            _ => UnwindRule::STOP,
        };
        let start = Regs {
            pc: 0x1000,
            sp: s.addr(0),
            rbp: 0,
        };
        let mut out = [0; 8];
        let n = walk(start.into(), usize::MAX, slots(&mut out), rules, |_, _| {});
        assert_eq!(&out[..n], &[0x2001, 0x3001, 0x4001]);
        // A short buffer is filled and no more.
        let mut out = [0; 2];
        assert_eq!(
            walk(start.into(), usize::MAX, slots(&mut out), rules, |_, _| {}),
            2
        );
        assert_eq!(walk(start.into(), usize::MAX, &mut [], rules, |_, _| {}), 0);
    }

    #[test]
    fn reports_each_step_for_the_memo() {
        let mut s = FakeStack([0; 64]);
        s.0[1] = 0x2001;
        s.0[2] = 0x7777; // RBP saved by the second frame
        s.0[3] = 0x3001;
        std::hint::black_box(&mut s);
        let rules = |pc: usize| match pc {
            0x1000 => rsp(16, None),
            0x2000 => rsp(16, Some(-16)),
            _ => UnwindRule::STOP,
        };
        let start = Regs {
            pc: 0x1000,
            sp: s.addr(0),
            rbp: 5,
        };
        let mut steps = Vec::new();
        let n = walk(
            start.into(),
            usize::MAX,
            slots(&mut [0; 8]),
            rules,
            |i, step| steps.push((i, *step)),
        );
        assert_eq!(n, 2);
        assert_eq!(
            steps,
            [
                (
                    0,
                    Step {
                        cfa: s.addr(2),
                        ra: 0x2001,
                        rbp_at: 0,
                        rbp: 5,
                        rbp_from: RbpFrom::NotUsed,
                    }
                ),
                (
                    1,
                    Step {
                        cfa: s.addr(4),
                        ra: 0x3001,
                        rbp_at: s.addr(2),
                        rbp: 0x7777,
                        rbp_from: RbpFrom::NotUsed,
                    }
                ),
            ]
        );
    }

    #[test]
    fn says_which_rbp_each_cfa_came_from() {
        let mut s = FakeStack([0; 64]);
        // Frame 0 (pc 0x1000): CFA = RBP + 16 with the starting RBP pointing at word 2, and
        // RBP saved at CFA-16 (word 2). Frame 1 (pc 0x2000): CFA = RBP + 16 again, but now RBP
        // was restored from the stack, so the start value no longer matters.
        s.0[2] = s.addr(6);
        s.0[3] = 0x2001;
        s.0[7] = 0x3001;
        std::hint::black_box(&mut s);
        let rules = |pc: usize| match pc {
            0x1000 | 0x2000 => UnwindRule::new(CfaBase::Rbp, 16, Some(-16)),
            _ => UnwindRule::STOP,
        };
        let start = Regs {
            pc: 0x1000,
            sp: s.addr(0),
            rbp: s.addr(2),
        };
        let mut used = Vec::new();
        let n = walk(
            start.into(),
            usize::MAX,
            slots(&mut [0; 8]),
            rules,
            |_, step| used.push(step.rbp_from),
        );
        assert_eq!(n, 2);
        assert_eq!(used, [RbpFrom::Start, RbpFrom::Step(0)]);
    }

    #[test]
    fn a_guessed_frame_pointer_is_followed_only_under_the_stacks_own_bound() {
        let mut s = FakeStack([0; 64]);
        // Frame 0: CFA = sp + 16. Frame 1 (pc 0x2000, no CFI): RBP points at word 2, which
        // holds the caller's RBP (word 6), the return address above it; frame 2 likewise.
        s.0[1] = 0x2001;
        s.0[2] = s.addr(6);
        s.0[3] = 0x3001;
        s.0[7] = 0x4001;
        std::hint::black_box(&mut s);
        let start = Regs {
            pc: 0x1000,
            sp: s.addr(0),
            rbp: s.addr(2),
        };
        let rules = |pc: usize| match pc {
            0x1000 => rsp(16, None),
            0x2000 | 0x3000 => UnwindRule::FRAME_POINTER,
            _ => UnwindRule::STOP,
        };
        let run = |limit: usize| {
            let mut out = [0; 8];
            let n = walk(start.into(), limit, slots(&mut out), rules, |_, _| {});
            out[..n].to_vec()
        };
        assert_eq!(run(s.addr(63)), [0x2001, 0x3001, 0x4001]);
        assert_eq!(run(usize::MAX), [0x2001]);
        // A bound too far above to be this stack's own.
        assert_eq!(run(s.addr(0) + MAX_GUESS_SPAN + 1), [0x2001]);
        // A frame pointer leading past the bound ends the walk there.
        assert_eq!(run(s.addr(7)), [0x2001, 0x3001]);
    }

    #[test]
    fn insane_steps_stop_the_walk() {
        let mut s = FakeStack([0; 64]);
        s.0[1] = 0x2001;
        s.0[3] = 0x3001;
        std::hint::black_box(&mut s);
        let start = Regs {
            pc: 0x1000,
            sp: s.addr(0),
            rbp: s.addr(0),
        };
        let two_frames = |second: UnwindRule| {
            move |pc: usize| {
                if pc == 0x1000 {
                    rsp(16, None)
                } else if pc == 0x2000 {
                    second
                } else {
                    UnwindRule::STOP
                }
            }
        };
        let run = |rules: &dyn Fn(usize) -> UnwindRule, limit: usize| {
            let mut out = [0; 8];
            let n = walk(start.into(), limit, slots(&mut out), rules, |_, _| {});
            out[..n].to_vec()
        };
        assert_eq!(
            run(&two_frames(rsp(16, None)), usize::MAX),
            [0x2001, 0x3001]
        );
        // CFA at or below sp: RBP-based with RBP pointing below the frame.
        let rbp_below = UnwindRule::new(CfaBase::Rbp, 8, None);
        assert_eq!(run(&two_frames(rbp_below), usize::MAX), [0x2001]);
        // Misaligned CFA.
        assert_eq!(run(&two_frames(rsp(12, None)), usize::MAX), [0x2001]);
        // Past the stack limit.
        assert_eq!(run(&two_frames(rsp(16, None)), s.addr(3)), [0x2001]);
        assert_eq!(run(&two_frames(rsp(16, None)), s.addr(4)), [0x2001, 0x3001]);
        // Frame larger than MAX_FRAME_SIZE.
        let huge = UnwindRule::new(CfaBase::Rsp, MAX_FRAME_SIZE as i64 + 8, None);
        assert_eq!(run(&two_frames(huge), usize::MAX), [0x2001]);
        // RBP slot below the current sp.
        assert_eq!(run(&two_frames(rsp(16, Some(-24))), usize::MAX), [0x2001]);
        // Null return address.
        s.0[3] = 0;
        std::hint::black_box(&mut s); // the walk reads it through addresses
        assert_eq!(run(&two_frames(rsp(16, None)), usize::MAX), [0x2001]);
    }
}
