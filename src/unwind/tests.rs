//! In-process tests of the whole fast path against libgcc's unwinder.
//! (The C programs in tests/ cover code built by gcc with and without
//! frame pointers; these cover Rust code and the concurrency cases.)

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const DEPTH: usize = 30;

macro_rules! call_chain {
    ($name:ident, $next:ident $(, $rest:ident)*) => {
        #[inline(never)]
        fn $name(leaf: &mut dyn FnMut()) -> usize {
            // Not a tail call: the frame must stay on the stack.
            black_box($next(black_box(leaf))) + 1
        }
        call_chain!($next $(, $rest)*);
    };
    ($name:ident) => {
        #[inline(never)]
        fn $name(leaf: &mut dyn FnMut()) -> usize {
            leaf();
            black_box(1)
        }
    };
}

call_chain!(
    d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14, d15, d16, d17, d18, d19, d20,
    d21, d22, d23, d24, d25, d26, d27, d28, d29
);

#[inline(never)]
fn reference_capture(out: &mut [usize]) -> usize {
    capture_fallback(slots(out))
}

/// Both unwinders from the same leaf: the reference's first frame is the return into the leaf
/// closure (`reference_capture` is a call of its own), ours starts where the closure returns.
fn both_at_depth() -> (Vec<usize>, Vec<usize>) {
    assert!(init(), "glibc here has _dl_find_object");
    let (mut ours, mut reference) = ([0; 128], [0; 128]);
    let (mut n, mut m) = (0, 0);
    assert_eq!(
        d0(&mut || {
            n = capture_tagged(slots(&mut ours), |_| false).frames;
            m = reference_capture(&mut reference);
        }),
        DEPTH
    );
    (ours[..n].to_vec(), reference[..m].to_vec())
}

#[test]
fn fast_path_matches_unwind_backtrace() {
    invalidate_cache();
    for round in 0..3 {
        let (ours, reference) = both_at_depth();
        assert!(
            ours.len() > DEPTH + 1,
            "round {round}: only {} frames",
            ours.len()
        );
        assert_eq!(
            ours.len() + 1,
            reference.len(),
            "round {round}: {ours:x?} vs {reference:x?}"
        );
        assert_eq!(ours[..], reference[1..], "round {round}");
    }
}

#[test]
fn cached_rules_equal_freshly_computed_ones() {
    let (ours, _) = both_at_depth();
    let generation = fast::CACHE.generation();
    for &ra in &ours {
        let key = fast::CACHE.key(ra - 1, generation).unwrap();
        if let Some(cached) = fast::CACHE.get(key) {
            assert_eq!(cached, fast::uncached_rule(ra - 1), "ra {ra:#x}");
        }
    }
}

#[test]
fn short_buffers_get_the_newest_frames() {
    let (full, _) = both_at_depth();
    let mut out = [0usize; 5];
    let mut n = 0;
    d0(&mut || n = capture_tagged(slots(&mut out), |_| false).frames);
    assert_eq!(n, 5);
    // Same chain, same call site of d29 -> leaf closure: the frames agree.
    assert_eq!(out[..], full[..5]);
    assert_eq!(capture_tagged(&mut [], |_| false).frames, 0);
}

#[test]
fn concurrent_captures_stay_identical() {
    let (single, _) = both_at_depth();
    std::thread::scope(|s| {
        for t in 0..4 {
            let single = &single;
            s.spawn(move || {
                let mut first: Option<Vec<usize>> = None;
                for i in 0..3000 {
                    if t == 0 && i % 50 == 0 {
                        invalidate_cache(); // keep writers busy under contention
                    }
                    let (ours, reference) = both_at_depth();
                    assert_eq!(ours[..], reference[1..], "thread {t} iteration {i}");
                    // The chain part is the same as on the single thread.
                    assert_eq!(ours[..=DEPTH], single[..=DEPTH], "thread {t}");
                    match &first {
                        None => first = Some(ours),
                        Some(f) => assert_eq!(&ours, f, "thread {t} iteration {i}"),
                    }
                }
            });
        }
    });
}

static HANDLER_FRAMES: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
static HANDLER_LEN: AtomicUsize = AtomicUsize::new(usize::MAX);

extern "C" fn on_signal(_: libc::c_int) {
    let mut out = [0usize; 8];
    let n = capture_tagged(slots(&mut out), |_| false).frames;
    for (dst, &src) in HANDLER_FRAMES.iter().zip(&out[..n]) {
        dst.store(src, Ordering::Relaxed);
    }
    HANDLER_LEN.store(n, Ordering::Release);
}

#[test]
fn capture_in_signal_handler_stops_at_the_trampoline() {
    assert!(init());
    invalidate_cache();
    // SAFETY: installs a handler that only does async-signal-safe work.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
            0
        );
    }
    // SAFETY: raise is always safe to call; the handler is installed.
    d0(&mut || assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0));
    let n = HANDLER_LEN.load(Ordering::Acquire);
    // The handler returns to __restore_rt, whose CFI is a signal frame: the walk stops there.
    assert_eq!(n, 1, "expected the trampoline only");
    // glibc reports the trampoline it installed as sa_restorer.
    // SAFETY: queries the current action into a zeroed struct.
    let restorer = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut action),
            0
        );
        action.sa_restorer.map_or(0, |f| f as usize)
    };
    assert_eq!(HANDLER_FRAMES[0].load(Ordering::Relaxed), restorer);
}

/// Sets the flag when dropped, so helper threads stop even if the test
/// body panics (otherwise `thread::scope` would wait for them forever).
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn capture_works_in_child_after_fork_of_busy_parent() {
    let (single, _) = both_at_depth();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|s| {
        let _stop = StopOnDrop(stop);
        for _ in 0..3 {
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if i.is_multiple_of(64) {
                        invalidate_cache();
                    }
                    let mut out = [0usize; 64];
                    black_box(d0(&mut || {
                        _ = capture_tagged(slots(&mut out), |_| false).frames
                    }));
                }
            });
        }
        for _ in 0..20 {
            // SAFETY: the child only runs async-signal-safe code (capture,
            // comparisons, _exit) and never returns into the harness.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let mut out = [0usize; 64];
                let mut n = 0;
                d0(&mut || n = capture_tagged(slots(&mut out), |_| false).frames);
                // Index DEPTH is the call site of d0, which differs here.
                let ok = n > DEPTH && out.get(..DEPTH) == single.get(..DEPTH);
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            assert!(pid > 0);
            let mut status = 0;
            // SAFETY: waits for the child just forked.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child status {status:#x}"
            );
        }
    });
}

/// The dynamic symbol lookup names exported functions in libc and in the vDSO (an object the
/// kernel maps, not the loader), as dladdr does, and knows the objects' load biases.
#[test]
fn exported_functions_are_named_without_the_loader() {
    assert!(init());
    let getpid = libc::getpid as *const () as usize;
    let name = exported_function(getpid + 1).expect("libc's getpid");
    assert!(
        name.ends_with(b"getpid"),
        "{}",
        String::from_utf8_lossy(name)
    );
    let (bias, path) = loaded_object(getpid).expect("libc is loaded");
    assert!(path.to_string_lossy().contains("libc"), "{path:?}");
    assert!(bias > 0 && bias < getpid);
    // SAFETY: dlopen with RTLD_NOLOAD only finds the already loaded vDSO; dlsym is given its
    // handle and a NUL-terminated name.
    let vdso_fn = unsafe {
        let vdso = libc::dlopen(
            c"linux-vdso.so.1".as_ptr(),
            libc::RTLD_NOLOAD | libc::RTLD_LAZY,
        );
        assert!(!vdso.is_null(), "the vDSO is in the link map");
        libc::dlsym(vdso, c"__vdso_clock_gettime".as_ptr()) as usize
    };
    assert_ne!(vdso_fn, 0);
    let name = exported_function(vdso_fn + 1).expect("a vDSO function");
    assert!(
        name.ends_with(b"clock_gettime"),
        "{}",
        String::from_utf8_lossy(name)
    );
}

#[test]
fn frame_buf_shows_only_what_the_last_capture_wrote() {
    let (full, _) = both_at_depth();
    let mut buf = FrameBuf::<64>::default();
    assert!(buf.frames().is_empty());
    let mut n = 0;
    d0(&mut || n = buf.capture_tagged(40, |_| false).frames);
    assert_eq!(buf.frames().len(), n);
    assert!(n > DEPTH);
    assert_eq!(buf.frames()[..DEPTH], full[..DEPTH]);
    d0(&mut || n = buf.capture_tagged(3, |_| false).frames);
    assert_eq!((n, buf.frames().len()), (3, 3));
    // More than it holds: capped, never past the end.
    d0(&mut || n = buf.capture_tagged(1000, |_| false).frames);
    assert!(n <= 64 && buf.frames().len() == n);
    assert_eq!(buf.capture_tagged(0, |_| false).frames, 0);
    assert!(buf.frames().is_empty());
}

/// Where `jit_leaf` wrote its capture.
static JIT_FRAMES: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];
static JIT_LEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn jit_leaf() {
    let mut out = [0usize; 64];
    let n = capture_tagged(slots(&mut out), |_| false).frames;
    for (dst, &src) in JIT_FRAMES.iter().zip(&out[..n]) {
        dst.store(src, Ordering::Relaxed);
    }
    JIT_LEN.store(n, Ordering::Release);
}

type Trampoline = extern "C" fn(extern "C" fn());

/// Code no object holds and no CFI describes, as a JIT makes it: `push rbp; mov rbp, rsp;
/// call rdi; pop rbp; ret`, a frame-pointer frame calling its argument.
fn jit_trampoline() -> (Trampoline, usize) {
    const CODE: [u8; 8] = [0x55, 0x48, 0x89, 0xe5, 0xff, 0xd7, 0x5d, 0xc3];
    // SAFETY: a fresh anonymous mapping, written while writable, then made executable and
    // never unmapped (the test process ends with it).
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), page.cast::<u8>(), CODE.len());
        assert_eq!(
            libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC),
            0
        );
        (
            std::mem::transmute::<*mut libc::c_void, Trampoline>(page),
            page as usize,
        )
    }
}

/// The frames `jit_leaf` saw through the trampoline, and the frames of its caller, captured
/// right before by the same unwinder.
#[inline(never)]
fn through_jit(trampoline: Trampoline) -> (Vec<usize>, Vec<usize>) {
    let mut direct = [0usize; 64];
    let n = capture_tagged(slots(&mut direct), |_| false).frames;
    trampoline(black_box(jit_leaf));
    let got = JIT_LEN.load(Ordering::Acquire);
    let frames = JIT_FRAMES[..got]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    (frames, direct[..n].to_vec())
}

/// Through code without CFI the walk follows the frame pointer and goes on with the CFI of the
/// code below, as it would have without the JIT frame; memoized walks replay it the same.
#[test]
fn walks_through_jit_code_by_its_frame_pointer() {
    assert!(init());
    invalidate_cache();
    let (trampoline, page) = jit_trampoline();
    for round in 0..3 {
        let (frames, direct) = black_box(through_jit(trampoline));
        assert!(frames.len() > 2, "round {round}: {frames:x?}");
        // The return into the trampoline, then into `through_jit`, then its callers.
        assert!((page..page + 8).contains(&frames[0]), "{frames:x?}");
        assert_eq!(frames[2..], direct[..], "round {round}");
    }
}
