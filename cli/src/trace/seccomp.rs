//! The seccomp filter a traced program runs under: `SECCOMP_RET_TRACE` (a stop for the
//! tracer) for the system calls of `calls::TRACED` (`fcntl` only for `calls::FCNTL_TRACED`),
//! `SECCOMP_RET_ALLOW` for every other call, so that the program stops only where its fd table
//! changes.
//!
//! Hand-built classic BPF rather than the `seccompiler` crate (which builds here): its filters
//! kill the process on a system call of another architecture (a 32-bit program the traced one
//! executes, an `int 0x80`), where fdguard must let the program run: such calls are allowed
//! (their fds are `untracked`), as are x32 calls (numbers with bit 30 set), whose numbers mean
//! other calls.

use super::calls::{FCNTL_TRACED, TRACED};

/// `AUDIT_ARCH_X86_64` (linux/audit.h: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE).
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// x32 system calls are numbered from here (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offsets in `struct seccomp_data`: nr (int), arch (u32), instruction pointer, args (u64 each,
/// the low half first on little-endian x86-64).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
fn data_arg_low(i: u32) -> u32 {
    16 + 8 * i
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// An instruction before its jumps are resolved.
enum Op {
    Load(u32),
    /// If the accumulator equals the value, go to the target; else the next instruction.
    IfEq(u32, Target),
    /// If the accumulator is at least the value, go to the target.
    IfGe(u32, Target),
    Return(u32),
}

/// Where a jump goes: the `RET ALLOW` or `RET TRACE` at the end, or past the next instruction.
#[derive(Clone, Copy)]
enum Target {
    Allow,
    Trace,
    SkipOne,
}

/// The filter's instructions.
pub fn filter() -> Vec<libc::sock_filter> {
    let mut ops = vec![Op::Load(DATA_ARCH)];
    // Another architecture: allowed.
    ops.push(Op::IfEq(AUDIT_ARCH_X86_64, Target::SkipOne));
    ops.push(Op::Return(libc::SECCOMP_RET_ALLOW));
    ops.push(Op::Load(DATA_NR));
    ops.push(Op::IfGe(X32_SYSCALL_BIT, Target::Allow));
    // fcntl's commands decide, after the list.
    let others = TRACED.iter().filter(|nr| **nr != libc::SYS_fcntl);
    ops.extend(others.map(|nr| Op::IfEq(*nr as u32, Target::Trace)));
    ops.push(Op::IfEq(libc::SYS_fcntl as u32, Target::SkipOne));
    ops.push(Op::Return(libc::SECCOMP_RET_ALLOW));
    ops.push(Op::Load(data_arg_low(1)));
    ops.extend(
        FCNTL_TRACED
            .iter()
            .map(|c| Op::IfEq(*c as u32, Target::Trace)),
    );
    ops.push(Op::Return(libc::SECCOMP_RET_ALLOW));
    resolve(ops)
}

/// Lays the instructions out with `RET ALLOW` and `RET TRACE` at the end, and turns targets
/// into jump offsets.
fn resolve(ops: Vec<Op>) -> Vec<libc::sock_filter> {
    let allow = ops.len() as u32;
    let trace = allow + 1;
    let stmt = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let mut out: Vec<libc::sock_filter> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let next = i as u32 + 1;
            let jump = |code, k, to: Target| {
                let to = match to {
                    Target::Allow => allow,
                    Target::Trace => trace,
                    Target::SkipOne => next + 1,
                };
                libc::sock_filter {
                    code,
                    jt: u8::try_from(to - next).expect("filter short enough for 8-bit jumps"),
                    jf: 0,
                    k,
                }
            };
            match *op {
                Op::Load(at) => stmt(BPF_LD_W_ABS, at),
                Op::IfEq(k, to) => jump(BPF_JEQ_K, k, to),
                Op::IfGe(k, to) => jump(BPF_JGE_K, k, to),
                Op::Return(r) => stmt(BPF_RET_K, r),
            }
        })
        .collect();
    out.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    out.push(stmt(BPF_RET_K, libc::SECCOMP_RET_TRACE));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter as the kernel would on one system call.
    fn verdict(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend((nr as i32).to_ne_bytes());
        data.extend(arch.to_ne_bytes());
        data.extend(0u64.to_ne_bytes());
        for a in args {
            data.extend(a.to_ne_bytes());
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    let at = i.k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                }
                BPF_JEQ_K if acc == i.k => pc += i.jt as usize,
                BPF_JGE_K if acc >= i.k => pc += i.jt as usize,
                BPF_JEQ_K | BPF_JGE_K => pc += i.jf as usize,
                BPF_RET_K => return i.k,
                other => panic!("unexpected code {other:#x}"),
            }
        }
    }

    #[test]
    fn traces_fd_calls_only() {
        let prog = filter();
        let x86 = AUDIT_ARCH_X86_64;
        let v = |nr, args| verdict(&prog, x86, nr, args);
        let trace = libc::SECCOMP_RET_TRACE;
        let allow = libc::SECCOMP_RET_ALLOW;
        for nr in TRACED.iter().filter(|nr| **nr != libc::SYS_fcntl) {
            assert_eq!(v(*nr, [0; 6]), trace, "syscall {nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_mmap,
            libc::SYS_futex,
        ] {
            assert_eq!(v(nr, [0; 6]), allow, "syscall {nr}");
        }
        let fcntl = |cmd: i32| v(libc::SYS_fcntl, [3, cmd as u64, 0, 0, 0, 0]);
        assert_eq!(fcntl(libc::F_DUPFD_CLOEXEC), trace);
        assert_eq!(fcntl(libc::F_DUPFD), trace);
        assert_eq!(fcntl(libc::F_SETFD), trace);
        assert_eq!(fcntl(libc::F_GETFL), allow);
        assert_eq!(fcntl(libc::F_SETFL), allow);
        // Other architectures and x32 calls run untraced.
        assert_eq!(verdict(&prog, 0x4000_0003, libc::SYS_close, [0; 6]), allow);
        let x32_close = (X32_SYSCALL_BIT as i64) | libc::SYS_close;
        assert_eq!(v(x32_close, [0; 6]), allow);
    }
}
