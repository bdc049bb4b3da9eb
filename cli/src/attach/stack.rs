//! Whether a stopped thread may be made to call into libc: not if it is inside a signal
//! handler (the handler may have interrupted `malloc` or `dlopen` holding their lock, which
//! the call would then wait for forever: issue 24's deadlock), nor inside the dynamic loader.
//!
//! A signal handler's frame is found as gdb finds it: the kernel pushes the handler's return
//! address, which is the restorer libc registered (`mov $15, %rax; syscall`, rt_sigreturn),
//! then a `ucontext`. Every 8-byte word from the stack pointer up to the end of the stack's
//! mapping (at most `SCAN` bytes: an alternate signal stack may be a small heap buffer) that
//! points into executable code is a candidate; it is a frame when the `ucontext` after it has
//! the shape the kernel writes (small flags, no link, a saved instruction pointer in code) and
//! the code it points to is the restorer. A stale copy of a frame left in an uninitialised
//! buffer would be taken for one too: that only makes attach pick another thread, or refuse.

use procfs::process::{MMPermissions, MMapPath, Process};

/// The most of a stack read, from its pointer up.
const SCAN: u64 = 1 << 20;

/// x86-64 `rt_sigreturn` restorer, in glibc and musl alike.
const RESTORER: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

/// Word offsets from a signal frame's return address: `ucontext.uc_flags`, `uc_link`, and the
/// saved `rip` in `uc_mcontext` (after `uc_stack` and 16 general registers).
const UC_FLAGS: usize = 1;
const UC_LINK: usize = 2;
const SAVED_RIP: usize = 1 + 5 + 16;
/// `UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS`: no other flag is ever set.
const UC_FLAGS_KNOWN: u64 = 0x7;

/// One mapping of the process.
struct Mapping {
    start: u64,
    end: u64,
    exec: bool,
    name: String,
}

impl Mapping {
    /// The mapped file's name without its directory (or the kernel's name for the mapping).
    fn file_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

/// The process's memory map, read while its threads are stopped.
pub struct Memory {
    pid: i32,
    maps: Vec<Mapping>,
}

impl Memory {
    pub fn of(process: &Process) -> std::io::Result<Memory> {
        let maps = process.maps().map_err(std::io::Error::other)?;
        let maps = maps
            .into_iter()
            .map(|m| Mapping {
                start: m.address.0,
                end: m.address.1,
                exec: m.perms.contains(MMPermissions::EXECUTE),
                name: match m.pathname {
                    MMapPath::Path(p) => p.to_string_lossy().into_owned(),
                    other => format!("{other:?}"),
                },
            })
            .collect();
        Ok(Memory {
            pid: process.pid,
            maps,
        })
    }

    fn mapping(&self, addr: u64) -> Option<&Mapping> {
        self.maps.iter().find(|m| m.start <= addr && addr < m.end)
    }

    fn is_code(&self, addr: u64) -> bool {
        self.mapping(addr).is_some_and(|m| m.exec)
    }

    fn in_loader_code(&self, addr: u64) -> bool {
        self.mapping(addr)
            .is_some_and(|m| m.exec && is_loader(m.file_name()))
    }

    /// `addr` as `0x... (object)`, for messages.
    pub fn describe(&self, addr: u64) -> String {
        match self.mapping(addr) {
            Some(m) => {
                format!("{addr:#x} in {}", m.file_name())
            }
            None => format!("{addr:#x}"),
        }
    }

    /// Why a thread stopped at `rip` with stack pointer `rsp` must not be called in, if it
    /// must not.
    pub fn why_not_call(&self, rip: u64, rsp: u64) -> Option<String> {
        if self.in_loader_code(rip) {
            return Some(format!(
                "is inside the dynamic loader ({})",
                self.describe(rip)
            ));
        }
        let end = self.mapping(rsp)?.end.min(rsp.saturating_add(SCAN));
        let stack = words(&crate::os::read_memory(self.pid, rsp, (end - rsp) as usize).ok()?);
        let read = |a: u64, n: usize| crate::os::read_memory(self.pid, a, n).ok();
        let restorer = |a: u64| read(a, RESTORER.len()).is_some_and(|b| b == RESTORER);
        if let Some(interrupted) = signal_frame(&stack, |a| self.is_code(a), restorer) {
            return Some(format!(
                "is inside a signal handler, which interrupted it at {}",
                self.describe(interrupted)
            ));
        }
        // Called from the loader: inside `dlopen` (a constructor runs with the loader's lock
        // held) or `dlclose`. A return address is a word pointing just after a call.
        let after_call = |a: u64| {
            read(a - CALL_MAX as u64, CALL_MAX)
                .and_then(|b| <[u8; CALL_MAX]>::try_from(b).ok())
                .is_some_and(|b| follows_a_call(&b))
        };
        let called_from = stack
            .iter()
            .copied()
            .find(|&a| self.in_loader_code(a) && after_call(a))?;
        Some(format!(
            "is inside the dynamic loader (called from {}: in dlopen or dlclose)",
            self.describe(called_from)
        ))
    }
}

/// The longest x86-64 call instruction looked for (`call *disp32(%reg,%reg,s)`).
const CALL_MAX: usize = 7;

/// True if the `CALL_MAX` bytes before an address end with a call instruction: `call rel32`
/// (`e8`, 5 bytes) or an indirect `call` (`ff /2`: through a register, 2 bytes; through memory
/// at a register, 2 or 3 with a SIB byte; with an 8-bit or 32-bit displacement, 3 to 7;
/// RIP-relative, 6).
fn follows_a_call(before: &[u8; CALL_MAX]) -> bool {
    let call_at = |len: usize| {
        let op = before[CALL_MAX - len];
        let modrm = before[CALL_MAX - len + 1];
        let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
        if op != 0xff || reg != 2 {
            return false;
        }
        let sib = usize::from(md != 3 && rm == 4);
        let disp = match (md, rm) {
            (0, 5) => 4,
            (0, _) | (3, _) => 0,
            (1, _) => 1,
            _ => 4,
        };
        2 + sib + disp == len
    };
    before[CALL_MAX - 5] == 0xe8 || (2..=CALL_MAX).any(call_at)
}

/// glibc's `ld-linux-x86-64.so.2` (musl's loader is its libc, which makes no such calls).
fn is_loader(name: &str) -> bool {
    name.starts_with("ld-linux") || name.starts_with("ld-2.")
}

fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

/// The instruction pointer the first signal frame in `stack` (words from the stack pointer
/// up) saved, if there is one.
fn signal_frame(
    stack: &[u64],
    is_code: impl Fn(u64) -> bool,
    is_restorer: impl Fn(u64) -> bool,
) -> Option<u64> {
    (0..stack.len().saturating_sub(SAVED_RIP)).find_map(|i| {
        let at = |k: usize| stack[i + k];
        let shaped = is_code(at(0))
            && at(UC_FLAGS) & !UC_FLAGS_KNOWN == 0
            && at(UC_LINK) == 0
            && is_code(at(SAVED_RIP));
        (shaped && is_restorer(at(0))).then(|| at(SAVED_RIP))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTORER_AT: u64 = 0x7000_0050;
    const CODE: std::ops::Range<u64> = 0x7000_0000..0x7010_0000;

    fn frame(interrupted: u64) -> Vec<u64> {
        let mut f = vec![0; SAVED_RIP + 8];
        f[0] = RESTORER_AT;
        f[UC_FLAGS] = 0x7;
        f[SAVED_RIP] = interrupted;
        f
    }

    fn find(stack: &[u64]) -> Option<u64> {
        signal_frame(stack, |a| CODE.contains(&a), |a| a == RESTORER_AT)
    }

    #[test]
    fn a_frame_above_the_handlers_own_frames_is_found() {
        let mut stack = vec![0x1234, 0x7000_0100, 42]; // the handler's frames: code, data
        stack.extend(frame(0x7000_0200));
        stack.extend([0x7000_0300, 9]); // what the signal interrupted
        assert_eq!(find(&stack), Some(0x7000_0200));
    }

    #[test]
    fn the_restorers_address_alone_is_no_frame() {
        let mut f = frame(0x7000_0200);
        f[UC_LINK] = 0x5555_0000; // not what the kernel writes
        assert_eq!(find(&f), None);
        let mut f = frame(0x7000_0200);
        f[SAVED_RIP] = 0x10; // interrupted nowhere
        assert_eq!(find(&f), None);
        let mut f = frame(0x7000_0200);
        f[0] = 0x7000_0060; // code, but not the restorer
        assert_eq!(find(&f), None);
        assert_eq!(find(&[RESTORER_AT, 7, 0]), None); // too short to hold a frame
    }

    #[test]
    fn return_addresses_follow_calls() {
        let ends = |tail: &[u8]| {
            let mut b = [0x90u8; CALL_MAX];
            b[CALL_MAX - tail.len()..].copy_from_slice(tail);
            follows_a_call(&b)
        };
        assert!(ends(&[0xe8, 1, 2, 3, 4])); // call rel32
        assert!(ends(&[0xff, 0xd0])); // call *%rax
        assert!(ends(&[0xff, 0x15, 1, 2, 3, 4])); // call *disp32(%rip)
        assert!(ends(&[0xff, 0x50, 0x08])); // call *8(%rax)
        assert!(ends(&[0xff, 0x14, 0x24])); // call *(%rsp)
        assert!(ends(&[0xff, 0x94, 0xc8, 1, 2, 3, 4])); // call *disp32(%rax,%rcx,8)
        assert!(!ends(&[0x48, 0x89, 0xc7])); // mov %rax,%rdi
        assert!(!ends(&[0xff, 0xe0])); // jmp *%rax
        assert!(!ends(&[0xff, 0x50, 0x08, 0x90])); // a call, then one more byte
    }

    #[test]
    fn loaders_by_name() {
        assert!(is_loader("ld-linux-x86-64.so.2"));
        assert!(!is_loader("libc.so.6"));
        assert!(!is_loader("ld-musl-x86_64.so.1"));
    }
}
