//! The frame-pointer walk of a stopped thread: its pc, then the return addresses along the
//! chain of saved frame pointers (`[rbp]` the caller's rbp, `[rbp + 8]` the return
//! address), all read from a copy of its stack taken from the stack pointer up (`StackCopy`:
//! a few KiB in one read, more only when the walk goes further up). Every read is checked
//! against that copy; the walk stops at a zero return address, a frame pointer that does not
//! grow (the chain must go up the stack), one outside the copy, or the depth.
//!
//! Go keeps frame pointers on x86-64, and so does C built with `-fno-omit-frame-pointer`.
//! Native code is walked by its call frame information instead where it has any (`walk_cfi`,
//! with rules from `.eh_frame`), so C built without frame pointers (gcc's default) has whole
//! stacks too; where neither is there, the chain breaks at once (rbp is an ordinary register
//! in such code), which `Walk::ended` tells.

/// A walk's result: pcs innermost first (the thread's pc, then return addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub pcs: Vec<u64>,
    /// Whether the walk reached the outermost frame (a zero frame pointer or return address,
    /// or a function whose unwind information has no caller) or the depth; false when it
    /// stopped at what it could not follow (no frame pointers, no unwind information).
    pub ended: bool,
}

/// The thread's state the walk starts from.
#[derive(Clone, Copy, Debug)]
pub struct Start {
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
    /// Where the innermost function's return address is when it has no frame of its own
    /// yet (a system call stub): `sp + frame size`. Its rbp is then still its caller's.
    pub leaf_return_at: Option<u64>,
}

/// How to step out of a function at one pc (a row of its call frame information): the
/// canonical frame address (CFA, the stack pointer before the call) is rbp or rsp plus an
/// offset, the return address and the caller's rbp are saved at offsets from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub cfa_from_fp: bool,
    pub cfa_offset: i64,
    /// `None`: the return address is undefined, the outermost frame (`_start`).
    pub ra_offset: Option<i64>,
    /// `None`: rbp is not saved (the function leaves it alone).
    pub fp_offset: Option<i64>,
}

/// The first read of a stack: a 30-deep Go stack takes about 3 KiB.
const FIRST_READ: usize = 8 * 1024;

/// A copy of a thread's stack from its stack pointer up to at most `limit` bytes, read as
/// the walk needs it: `FIRST_READ` bytes, then twice as much each time the walk goes past
/// what was read, each time one read of what is missing. A short read (the stack's end)
/// is the end of the copy.
pub struct StackCopy<R> {
    base: u64,
    limit: usize,
    bytes: Vec<u8>,
    read: R,
    ended: bool,
}

impl<R: FnMut(u64, usize) -> Option<Vec<u8>>> StackCopy<R> {
    pub fn new(base: u64, limit: usize, read: R) -> Self {
        StackCopy {
            base,
            limit,
            bytes: Vec::new(),
            read,
            ended: false,
        }
    }

    /// The word at `addr`, if it is in the copy.
    pub fn word(&mut self, addr: u64) -> Option<u64> {
        let at = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let end = at.checked_add(8)?;
        while self.bytes.len() < end && !self.ended {
            let want = (2 * self.bytes.len())
                .max(FIRST_READ)
                .max(end)
                .min(self.limit);
            let missing = want.saturating_sub(self.bytes.len());
            let got = match missing {
                0 => Vec::new(),
                n => (self.read)(self.base + self.bytes.len() as u64, n).unwrap_or_default(),
            };
            self.ended = got.len() < missing || want == self.limit;
            self.bytes.extend_from_slice(&got);
        }
        Some(u64::from_le_bytes(
            self.bytes.get(at..end)?.try_into().ok()?,
        ))
    }
}

/// Reads the stack's words (`StackCopy::word`, or a test's own).
pub type Words<'a> = &'a mut dyn FnMut(u64) -> Option<u64>;

/// Walks the stack by frame pointers, to at most `depth` pcs.
pub fn walk(word: Words<'_>, start: Start, depth: usize) -> Walk {
    let mut out = Walk::default();
    if depth == 0 {
        return out;
    }
    out.pcs.push(start.pc);
    if let Some(ret) = start
        .leaf_return_at
        .and_then(&mut *word)
        .filter(|r| *r != 0)
    {
        out.pcs.push(ret);
    }
    let mut fp = start.fp;
    // A zero frame pointer read from the stack is the outermost frame's; one in the register
    // is only code that never set it (no frame pointers).
    let mut chained = false;
    loop {
        if out.pcs.len() >= depth || (fp == 0 && chained) {
            out.ended = true;
            break;
        }
        if fp < start.sp || !fp.is_multiple_of(8) {
            break;
        }
        let (Some(next), Some(ret)) = (word(fp), word(fp + 8)) else {
            break;
        };
        if ret == 0 {
            out.ended = true;
            break;
        }
        out.pcs.push(ret);
        if next != 0 && next <= fp {
            break;
        }
        fp = next;
        chained = true;
    }
    out.pcs.truncate(depth);
    out
}

/// Walks the stack by the rules `rule` gives for a pc, to at most `depth` pcs; from the
/// first pc without one, by frame pointers.
pub fn walk_cfi(
    word: Words<'_>,
    start: Start,
    depth: usize,
    rule: impl Fn(u64) -> Option<Rule>,
) -> Walk {
    let mut out = Walk::default();
    if depth == 0 {
        return out;
    }
    out.pcs.push(start.pc);
    let (mut sp, mut fp) = (start.sp, start.fp);
    // The thread's pc is where it stopped; a return address is after its call instruction.
    let mut lookup = start.pc;
    loop {
        if out.pcs.len() >= depth {
            out.ended = true;
            break;
        }
        let Some(r) = rule(lookup) else {
            let by_fp = walk(word, Start { fp, ..start }, depth + 1 - out.pcs.len());
            out.ended = by_fp.ended;
            out.pcs.extend(by_fp.pcs.into_iter().skip(1));
            break;
        };
        let cfa = if r.cfa_from_fp { fp } else { sp }.wrapping_add_signed(r.cfa_offset);
        let Some(ra_offset) = r.ra_offset else {
            out.ended = true;
            break;
        };
        let Some(ret) = word(cfa.wrapping_add_signed(ra_offset)) else {
            break;
        };
        if let Some(o) = r.fp_offset {
            match word(cfa.wrapping_add_signed(o)) {
                Some(saved) => fp = saved,
                None => break,
            }
        }
        if ret == 0 {
            out.ended = true;
            break;
        }
        if cfa <= sp {
            break;
        }
        out.pcs.push(ret);
        sp = cfa;
        lookup = ret - 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: u64 = 0x7000;

    /// Memory holding `bytes` at `SP`, and nothing after them.
    fn memory(bytes: Vec<u8>) -> impl FnMut(u64, usize) -> Option<Vec<u8>> {
        move |at, len| {
            let from = usize::try_from(at - SP).ok()?;
            Some(bytes.get(from..)?.iter().take(len).copied().collect())
        }
    }

    /// A stack of words from `SP`.
    fn stack(words: &[u64]) -> StackCopy<impl FnMut(u64, usize) -> Option<Vec<u8>>> {
        StackCopy::new(
            SP,
            1 << 16,
            memory(words.iter().flat_map(|w| w.to_le_bytes()).collect()),
        )
    }

    #[test]
    fn the_copy_grows_as_the_walk_goes_up_and_ends_at_the_stacks_end() {
        let mut reads = Vec::new();
        let mut memory = memory(vec![7u8; 20 * 1024]);
        let mut copy = StackCopy::new(SP, 1 << 16, |at, len| {
            reads.push((at - SP, len));
            memory(at, len)
        });
        assert_eq!(copy.word(SP), Some(0x0707_0707_0707_0707));
        assert_eq!(copy.word(SP + 10 * 1024), Some(0x0707_0707_0707_0707));
        assert!(copy.word(SP + 18 * 1024).is_some());
        assert_eq!(copy.word(SP + 30 * 1024), None);
        assert_eq!(copy.word(SP - 8), None);
        drop(copy);
        assert_eq!(reads, [(0, 8192), (8192, 8192), (16384, 16384)]);
    }

    fn walk(
        s: &mut StackCopy<impl FnMut(u64, usize) -> Option<Vec<u8>>>,
        start: Start,
        depth: usize,
    ) -> Walk {
        super::walk(&mut |a| s.word(a), start, depth)
    }

    fn walk_cfi(
        s: &mut StackCopy<impl FnMut(u64, usize) -> Option<Vec<u8>>>,
        start: Start,
        depth: usize,
        rule: impl Fn(u64) -> Option<Rule>,
    ) -> Walk {
        super::walk_cfi(&mut |a| s.word(a), start, depth, rule)
    }

    fn start(fp: u64, leaf_return_at: Option<u64>) -> Start {
        Start {
            pc: 0x40_0001,
            sp: SP,
            fp,
            leaf_return_at,
        }
    }

    #[test]
    fn follows_the_chain_to_its_end() {
        // frame at SP+16: [SP+40, ret 0x40_0100]; at SP+40: [0, ret 0x40_0200]: the last.
        let mut s = stack(&[9, 9, SP + 40, 0x40_0100, 9, 0, 0x40_0200]);
        let w = walk(&mut s, start(SP + 16, None), 32);
        assert_eq!(w.pcs, [0x40_0001, 0x40_0100, 0x40_0200]);
        assert!(w.ended);
    }

    #[test]
    fn a_leaf_without_a_frame_gives_its_return_address_first() {
        let mut s = stack(&[0x40_0050, 9, 0, 0x40_0100]);
        let w = walk(&mut s, start(SP + 16, Some(SP)), 32);
        assert_eq!(w.pcs, [0x40_0001, 0x40_0050, 0x40_0100]);
        assert!(w.ended);
    }

    #[test]
    fn stops_at_a_chain_going_down_out_of_the_copy_or_at_the_depth() {
        let mut down = stack(&[SP, 0x40_0100, 0, 0]);
        let w = walk(&mut down, start(SP, None), 32);
        assert_eq!(w.pcs, [0x40_0001, 0x40_0100]);
        assert!(!w.ended);
        let mut out = stack(&[SP + 4096, 0x40_0100]);
        assert_eq!(
            walk(&mut out, start(SP, None), 32).pcs,
            [0x40_0001, 0x40_0100]
        );
        let below = walk(&mut out, start(SP - 16, None), 32);
        assert_eq!(below.pcs, [0x40_0001]);
        assert!(
            !below.ended,
            "rbp below the stack pointer: no frame pointers"
        );
        let unaligned = walk(&mut out, start(SP + 3, None), 32);
        assert_eq!(unaligned.pcs, [0x40_0001]);
        let mut s = stack(&[SP + 16, 0x40_0100, SP + 32, 0x40_0200, 0, 0x40_0300]);
        let w = walk(&mut s, start(SP, None), 2);
        assert_eq!(w.pcs, [0x40_0001, 0x40_0100]);
        assert!(w.ended, "the depth is an end");
        assert!(walk(&mut s, start(SP, None), 0).pcs.is_empty());
        assert!(
            !walk(&mut s, start(0, None), 32).ended,
            "code that never set rbp"
        );
    }

    #[test]
    fn call_frame_information_walks_without_frame_pointers() {
        // The innermost function keeps 16 bytes below its return address; its caller's CFA
        // is rbp + 16 with rbp saved at CFA - 16; the third function has no rule (walked by
        // its frame pointer), the fourth is the outermost.
        let mut s = stack(&[
            9,
            9,
            0x40_0100,
            9,
            SP + 48,
            0x40_0200,
            SP + 64,
            0x40_0300,
            0,
            0,
        ]);
        let rule = |pc: u64| match pc {
            0x40_0001 => Some(Rule {
                cfa_from_fp: false,
                cfa_offset: 24,
                ra_offset: Some(-8),
                fp_offset: None,
            }),
            0x40_00ff => Some(Rule {
                cfa_from_fp: true,
                cfa_offset: 16,
                ra_offset: Some(-8),
                fp_offset: Some(-16),
            }),
            _ => None,
        };
        let w = walk_cfi(&mut s, start(SP + 32, None), 32, rule);
        assert_eq!(w.pcs, [0x40_0001, 0x40_0100, 0x40_0200, 0x40_0300]);
        assert!(w.ended);
        let outermost = |pc: u64| match pc {
            0x40_01ff => Some(Rule {
                cfa_from_fp: false,
                cfa_offset: 8,
                ra_offset: None,
                fp_offset: None,
            }),
            _ => rule(pc),
        };
        let w = walk_cfi(&mut s, start(SP + 32, None), 32, outermost);
        assert_eq!(w.pcs, [0x40_0001, 0x40_0100, 0x40_0200]);
        assert!(w.ended, "the outermost function's rule ends the walk");
        assert_eq!(walk_cfi(&mut s, start(SP + 32, None), 2, rule).pcs.len(), 2);
        // No rules and no chain: the pc alone.
        let none = walk_cfi(&mut s, start(SP - 8, None), 32, |_| None);
        assert_eq!(none.pcs, [0x40_0001]);
        assert!(!none.ended);
    }
}
