//! Creation stacks of a traced program: captured at the entry of the system call that makes
//! an fd (cheap: one read of the thread's goroutine and one of its stack, no names), named at
//! report time as the library names its stacks (`fdguard_core::report::Frame`).
//!
//! `walk` steps through a copy of the stack (frame pointers; call frame information for
//! native code); `gosym` reads Go's line table, `goroutine` the goroutine's creation site
//! and ancestors; `native` gives a static C program's unwind rules and names; `image` reads
//! the executable.
//!
//! A goroutine's creation follows its own frames, as Go's tracebacks show it: the `go`
//! statement's frame is named "created by F" (F the function with the statement, at its
//! file and line), then come the frames of the goroutine that ran it, and so on up the
//! ancestors `GODEBUG=tracebackancestors=N` keeps. The JSON keeps its keys (schema 1): the
//! boundary is in the function's name.

mod goroutine;
mod gosym;
mod image;
mod native;
mod walk;

use std::cell::OnceCell;
use std::ops::Range;
use std::path::{Path, PathBuf};

use fdguard_core::report::Frame;

use self::goroutine::Layout;
use self::gosym::{LineTable, Position};
use self::image::Image;
use self::native::Native;
use self::walk::{StackCopy, Start};

/// The most of a thread's stack read at a stop, from its stack pointer up (less is read when
/// the walk ends sooner): a 32-deep Go stack takes a few KiB, a C one with large buffers on
/// it more.
const STACK_BYTES: usize = 64 * 1024;

/// What names a creation site in `Frame::function`: "created by main.main".
pub const CREATED_BY: &str = "created by ";

/// The frame that ends a stack whose walk stopped at its innermost function: the program
/// keeps neither frame pointers nor unwind information there.
pub const NOT_WALKED: &str = "(outer frames unknown: no frame pointers or unwind information)";

/// A stack as captured at a stop: raw pcs, named later by `Stacks::frames`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Captured {
    /// The thread's pc, then return addresses, innermost first.
    pub pcs: Vec<u64>,
    /// Go: where the goroutine was created, nearest first. Each is the `go` statement's pc,
    /// then (with ancestors kept) the pcs of the creating goroutine above that statement.
    pub created_by: Vec<Vec<u64>>,
    /// The walk stopped at the innermost function (see `NOT_WALKED`).
    pub cut: bool,
}

/// What is known of an executable's code, read at its first stack.
enum Code {
    Go {
        table: LineTable,
        /// `None`: neither DWARF nor the version table gives `runtime.g`'s layout (no
        /// creation sites).
        layout: Option<Layout>,
    },
    Native(Box<Native>),
}

struct Loaded {
    code: Code,
    /// Position-independent: its addresses move by the load bias (see `Stacks::bias`).
    pie: bool,
    /// The entry point as linked (with `AT_ENTRY`, the load bias).
    entry: u64,
    /// The addresses its segments take as linked: a pc elsewhere is in another object
    /// (the vDSO, or a cgo program's libc), which is not named.
    span: Range<u64>,
}

/// The stacks of the processes running one executed image (a fork shares them; an exec
/// makes new ones).
pub struct Stacks {
    exe: PathBuf,
    depth: usize,
    loaded: OnceCell<Option<Loaded>>,
    /// A position-independent executable's load bias, from the first process's auxv.
    bias: OnceCell<u64>,
}

impl Stacks {
    /// Stacks of `exe`, at most `depth` frames (`FDGUARD_DEPTH`, `run --depth`), not counting
    /// creation sites. Nothing is read until the first capture.
    pub fn for_program(exe: &Path, depth: usize) -> Stacks {
        Stacks {
            exe: exe.to_path_buf(),
            depth,
            loaded: OnceCell::new(),
            bias: OnceCell::new(),
        }
    }

    fn loaded(&self) -> Option<&Loaded> {
        self.loaded.get_or_init(|| load(&self.exe)).as_ref()
    }

    fn bias(&self, pid: i32) -> u64 {
        let Some(l) = self.loaded().filter(|l| l.pie) else {
            return 0;
        };
        *self
            .bias
            .get_or_init(|| auxv_entry(pid).map_or(0, |at| at.wrapping_sub(l.entry)))
    }

    /// The stack of thread `pid`, stopped (at a system call's entry) with registers `regs`;
    /// none at depth 0 (stacks off).
    pub fn capture(&self, pid: i32, regs: &libc::user_regs_struct) -> Captured {
        let mut c = Captured::default();
        if self.depth == 0 {
            return c;
        }
        let read = |addr: u64, len: usize| crate::os::read_memory(pid, addr, len).ok();
        let bias = self.bias(pid);
        let mut limit = STACK_BYTES;
        let mut creation = None;
        let go_regs = goroutine::Regs {
            rsp: regs.rsp,
            r14: regs.r14,
            fs_base: regs.fs_base,
        };
        let code = self.loaded().map(|l| &l.code);
        if let Some(Code::Go {
            layout: Some(layout),
            ..
        }) = code
            && let Some(g) = goroutine::current(*layout, go_regs, &read)
        {
            let to_top = usize::try_from(g.stack_hi - regs.rsp).unwrap_or(limit);
            limit = limit.min(to_top);
            creation = Some(g);
        }
        let mut copy = StackCopy::new(regs.rsp, limit, &read);
        let word = &mut |addr| copy.word(addr);
        let start = Start {
            pc: regs.rip,
            sp: regs.rsp,
            fp: regs.rbp,
            leaf_return_at: None,
        };
        let w = match code {
            Some(Code::Go { table, .. }) => {
                // A system call stub has no frame: its return address is at rsp, and rbp is
                // still its caller's.
                let frameless = table.frame_size(regs.rip.wrapping_sub(bias)) == Some(0);
                let leaf_return_at = frameless.then_some(regs.rsp);
                walk::walk(
                    word,
                    Start {
                        leaf_return_at,
                        ..start
                    },
                    self.depth,
                )
            }
            Some(Code::Native(native)) => walk::walk_cfi(word, start, self.depth, |pc| {
                native.rule(pc.wrapping_sub(bias))
            }),
            // The executable could not be read: its frame pointers may still be there.
            None => walk::walk(word, start, self.depth),
        };
        c.cut = !w.ended;
        c.pcs = w.pcs;
        if let Some(g) = creation {
            c.created_by = goroutine::ancestry(&g, &read);
        }
        c
    }

    /// A stack the kernel walked (by frame pointers) for process `pid`: its pcs, the first the
    /// thread's, then return addresses; at most `depth` frames, as a capture here keeps. The
    /// walk ends at the first pc outside the process's code (`is_code`): code built without
    /// frame pointers left its frame pointer register holding data, which the kernel walked
    /// as if it were a frame.
    pub fn walked_by_kernel(
        &self,
        pid: i32,
        pcs: &[u64],
        is_code: impl Fn(u64) -> bool,
    ) -> Captured {
        // Named against the load bias of the process the pcs come from.
        self.bias(pid);
        let code = pcs.iter().take_while(|pc| is_code(**pc)).count();
        Captured {
            pcs: pcs.iter().copied().take(code.min(self.depth)).collect(),
            cut: code < pcs.len(),
            ..Captured::default()
        }
    }

    /// Names a captured stack: Go frames from the line table, native ones from `.symtab`
    /// and DWARF, inlined calls as frames of their own; then the creation sites.
    pub fn frames(&self, c: &Captured) -> Vec<Frame> {
        let Some(loaded) = self.loaded() else {
            return c.pcs.iter().map(|pc| self.frame(*pc, None)).collect();
        };
        let bias = self.bias.get().copied().unwrap_or(0);
        let mut out = Vec::new();
        match &loaded.code {
            Code::Go { table, .. } => {
                for pc in &c.pcs {
                    let positions = table.positions(pc.wrapping_sub(bias + 1));
                    self.push(&mut out, *pc, bias, positions);
                }
                without_goexit(&mut out);
                without_syscall_stubs(&mut out);
                for site in &c.created_by {
                    self.creation(&mut out, table, site, bias);
                }
            }
            Code::Native(native) => {
                let context = native.context();
                for pc in &c.pcs {
                    let positions = native.positions(pc.wrapping_sub(bias + 1), context.as_ref());
                    self.push(&mut out, *pc, bias, positions);
                }
            }
        }
        if c.cut {
            out.push(Frame {
                function: Some(NOT_WALKED.to_string()),
                ..Frame::default()
            });
        }
        out
    }

    /// One creation site: the `go` statement named "created by F", then the creating
    /// goroutine's frames above it (each pc's innermost function only: Go recorded its
    /// inlined calls as pcs of their own).
    fn creation(&self, out: &mut Vec<Frame>, table: &LineTable, site: &[u64], bias: u64) {
        let Some((gopc, above)) = site.split_first() else {
            return;
        };
        let Some(mut at) = table.innermost(gopc.wrapping_sub(bias + 1)) else {
            return;
        };
        if at.function.starts_with("runtime.") {
            return; // the main goroutine and the runtime's own: made by the runtime
        }
        at.function.insert_str(0, CREATED_BY);
        self.push(out, *gopc, bias, vec![at]);
        for pc in above {
            let at = table.innermost(pc.wrapping_sub(bias + 1));
            self.push(out, *pc, bias, at.into_iter().collect());
        }
        without_goexit(out);
    }

    /// The frames of one pc: one per position, or one without a name.
    fn push(&self, out: &mut Vec<Frame>, pc: u64, bias: u64, positions: Vec<Position>) {
        let base = self.frame(pc, self.loaded().map(|l| (l, bias)));
        if positions.is_empty() {
            out.push(base);
            return;
        }
        out.extend(positions.into_iter().map(|p| Frame {
            function: Some(p.function),
            file: p.file,
            line: p.line,
            ..base.clone()
        }));
    }

    /// The frame of `pc`, without names: with the executable and the call's offset in it
    /// when the pc is the executable's (`loaded` with the load bias).
    fn frame(&self, pc: u64, loaded: Option<(&Loaded, u64)>) -> Frame {
        let mut frame = Frame {
            addr: pc,
            ..Frame::default()
        };
        if let Some((l, bias)) = loaded
            && l.span.contains(&pc.wrapping_sub(bias + 1))
        {
            frame.module = Some(self.exe.display().to_string());
            frame.offset = Some(pc.wrapping_sub(bias + 1));
        }
        frame
    }
}

/// Leaves out the frame every goroutine returns to, as Go's tracebacks do.
fn without_goexit(frames: &mut Vec<Frame>) {
    while frames
        .last()
        .is_some_and(|f| f.function.as_deref() == Some("runtime.goexit"))
    {
        frames.pop();
    }
}

/// Go's system call stubs, which every traced call goes through (`syscall.Syscall6`,
/// `syscall.RawSyscall`, the runtime's assembly entry).
const SYSCALL_STUBS: [&str; 5] = [
    "runtime/internal/syscall.",
    "internal/runtime/syscall.",
    "syscall.Syscall",
    "syscall.RawSyscall",
    "syscall.rawSyscall",
];

/// Leaves out the leading frames of Go's system call stubs, as the library leaves out libc's
/// wrappers: a stack starts at the call the program made (`syscall.openat`, `syscall.socket`).
/// Never every frame.
fn without_syscall_stubs(frames: &mut Vec<Frame>) {
    let stub = |f: &Frame| {
        f.function
            .as_deref()
            .is_some_and(|name| SYSCALL_STUBS.iter().any(|s| name.starts_with(s)))
    };
    let leading = frames.iter().take_while(|f| stub(f)).count();
    if leading < frames.len() {
        frames.drain(..leading);
    }
}

/// Where process `pid`'s executable was entered (`AT_ENTRY` in its auxiliary vector).
fn auxv_entry(pid: i32) -> Option<u64> {
    const AT_ENTRY: u64 = 9;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    let words: Vec<u64> = auxv
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
        .collect();
    words
        .chunks_exact(2)
        .find(|kv| kv[0] == AT_ENTRY)
        .map(|kv| kv[1])
}

/// Reads what the stacks of `exe` need: Go's line table and `runtime.g`'s layout, or a
/// native program's symbols and unwind information.
fn load(exe: &Path) -> Option<Loaded> {
    let image = Image::read(exe)?;
    let code = match go_table(&image) {
        Some(table) => Code::Go {
            table,
            layout: Layout::from_dwarf(&image)
                .or_else(|| Layout::for_version(&image.go_version()?)),
        },
        None => Code::Native(Box::new(Native::read(&image))),
    };
    Some(Loaded {
        code,
        pie: image.is_pie(),
        entry: image.entry(),
        span: image.span(),
    })
}

/// Go's line table: the `.gopclntab` section (`.data.rel.ro.gopclntab` in a
/// position-independent binary), else where the `runtime.pclntab` symbol says, else the
/// first header found in the loaded sections (a stripped binary keeps the table but may
/// lose both names).
fn go_table(image: &Image) -> Option<LineTable> {
    let text = image.section(".text").map_or(0, |(a, _)| a);
    let section = image
        .section(".gopclntab")
        .or_else(|| image.section(".data.rel.ro.gopclntab"));
    let (addr, data) = match section {
        Some((addr, data)) => (addr, data.into_owned()),
        None => {
            let addr = image.symbol("runtime.pclntab").or_else(|| {
                image
                    .loaded_sections()
                    .into_iter()
                    .find_map(|(a, d)| Some(a + gosym::find_header(d)? as u64))
            })?;
            let (base, bytes) = image.section_at(addr)?;
            (addr, bytes[usize::try_from(addr - base).ok()?..].to_vec())
        }
    };
    // Go 1.18 and later: funcdata are offsets from `go:func.*` (1.20) or `go.func.*`.
    let gofunc = image
        .symbol("go:func.*")
        .or_else(|| image.symbol("go.func.*"))
        .or_else(|| moduledata_gofunc(image, addr));
    let rodata = gofunc.and_then(|g| image.section_at(g));
    LineTable::parse(data, text, rodata, gofunc)
}

/// `runtime.firstmoduledata.gofunc` in a stripped binary: the module data begins with a
/// pointer to the line table's header, which the scan finds, and `gofunc` is at a fixed
/// place after it for a Go release (runtime/symtab.go's `moduledata`).
fn moduledata_gofunc(image: &Image, pclntab: u64) -> Option<u64> {
    let offset = gosym::gofunc_offset(&image.go_version()?)?;
    let (_, data) = image.section(".noptrdata")?;
    let at = data
        .chunks_exact(8)
        .position(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()) == pclntab)?;
    let word = data.get(8 * at + offset..8 * at + offset + 8)?;
    Some(u64::from_le_bytes(word.try_into().ok()?))
}

#[cfg(test)]
mod tests;
